"""Shared by the tests: where things are, and how to run the CLI as a user does."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI_ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "cifar-10-mini.tar.gz")
TINY_RUN = ["--depth", "8", "--epochs", "2", "--batch-size", "32", "--val-size", "40"]


def dnsd(*args, cwd=ROOT, entry=("-m", "DNSD")):
    return subprocess.run([sys.executable, *entry, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def assert_one_line_error(result, *fragments, code=2):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
