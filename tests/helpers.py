"""Shared by the tests: where things are, and how to run the CLI as a user does."""
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The real CIFAR-10 images tests read: DNSD_TEST_ARCHIVE, else the 6,000-image subset in ../shared/data. The official
# cifar-10-python.tar.gz serves too (slower: its training split is ten times larger).
MINI_ARCHIVE = os.path.abspath(os.environ.get("DNSD_TEST_ARCHIVE") or
                               os.path.join(ROOT, "..", "shared", "data", "cifar-10-mini.tar.gz"))
TINY_RUN = ["--depth", "8", "--epochs", "2", "--batch-size", "32", "--val-size", "40"]


def real_archive():
    """The real archive's path; where there is none, the test is skipped saying where it looked."""
    if not os.path.isfile(MINI_ARCHIVE):
        import pytest

        pytest.skip(f"no real CIFAR-10 archive at {os.path.normpath(MINI_ARCHIVE)}; set DNSD_TEST_ARCHIVE to the "
                    "official cifar-10-python.tar.gz (docs/development.md)")
    return MINI_ARCHIVE


def dnsd(*args, cwd=ROOT, entry=None, env=None):
    """The CLI's (exit code, standard output, standard error), as a CompletedProcess. It runs in this process, which
    saves Paddle's start-up per call, unless the test needs what only a process of its own has: an environment of
    its own (env) or another way to start it (entry, e.g. ("DNSD/main.py",)). DNSD_TESTS_IN_SUBPROCESSES=1 runs every
    call in a process of its own, as the suite did before (to compare times)."""
    if env is not None or entry is not None or os.environ.get("DNSD_TESTS_IN_SUBPROCESSES"):
        return subprocess.run([sys.executable, *(entry or ("-m", "DNSD")), *args], cwd=cwd, capture_output=True,
                              text=True, timeout=600, env=env)
    from DNSD.main import main

    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as stop:  # --help, and argparse's refusals
                code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["dnsd", *args], code, out.getvalue(), err.getvalue())


def assert_one_line_error(result, *fragments, code=2):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def fake_nvidia_smi(folder, cuda="12.6", gpus=("NVIDIA A100-SXM4-40GB",), fails=False, driver="560.35.03",
                    behaviour=None):
    """Write an nvidia-smi into folder that reports these GPUs (names, or (name, compute capability) pairs) and a
    driver for this CUDA version, or that fails as a broken driver does: fails (exit 9, no GPU), or behaviour
    'partial' (lists the GPUs, then exits 15), 'hangs', 'ignores-sigterm' (hangs), 'cuda-n/a', 'no-compute-cap'
    (a driver before 510). Returns folder, to put first on PATH."""
    os.makedirs(folder, exist_ok=True)
    gpus = [(gpu, "8.0") if isinstance(gpu, str) else gpu for gpu in gpus]
    listing = "".join(f'echo "GPU {i}: {name} (UUID: GPU-{i:08d})"\n' for i, (name, _) in enumerate(gpus))
    query = "".join(f'echo "{name}, {capability}, {driver}"\n' for name, capability in gpus)
    header = f'echo "| NVIDIA-SMI {driver}    Driver Version: {driver}    CUDA Version: {cuda or "N/A"}     |"\n'
    if behaviour == "no-compute-cap":
        query = ('case "$1" in *compute_cap*) echo \'Field "compute_cap" is not a valid field to query.\'; '
                 'exit 2;; esac\n' + "".join(f'echo "{name}, {driver}"\n' for name, _ in gpus))
    if behaviour == "cuda-n/a":
        header = f'echo "| NVIDIA-SMI {driver}    Driver Version: {driver}    CUDA Version: N/A     |"\n'
    body = (f'if [ "$1" = "-L" ]; then\n{listing}exit 0\nfi\n'
            f'case "$1" in --query-gpu=*)\n{query}exit 0;;\nesac\n{header}')
    if fails:
        body = 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9\n'
    elif behaviour == "partial":
        body = (f'case "$1" in --query-gpu=*)\n{query}echo "Unable to determine the device handle for GPU '
                f'0000:3B:00.0: Unknown Error"; exit 15;;\nesac\n{header}exit 15\n')
    elif behaviour == "hangs":
        body = "exec sleep 300\n"
    elif behaviour == "ignores-sigterm":
        body = "trap '' TERM\nsleep 300\n"
    write_executable(os.path.join(folder, "nvidia-smi"), "#!/bin/sh\n" + body)
    return str(folder)


def write_executable(path, text):
    with open(path, "w") as stream:
        stream.write(text)
    os.chmod(path, 0o755)


def environment(path_first=None, **variables):
    """os.environ with a folder put first on PATH and variables set (None: removed)."""
    env = dict(os.environ)
    if path_first:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    for name, value in variables.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def read_json(path):
    return json.loads(Path(path).read_text())


def read_jsonl(path):
    """One object per line, as metrics.jsonl and points.jsonl hold them."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def read_yaml(path):
    return yaml.safe_load(Path(path).read_text())


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))
