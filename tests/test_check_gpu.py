"""scripts/check_gpu.sh, the acceptance run a GPU user sends back: run here with --device cpu, every check that
needs no GPU, through the same script; and its bookkeeping of failed and skipped checks."""
import os
import subprocess
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import check_gpu  # noqa: E402
from helpers import read_json


@pytest.mark.slow
def test_the_cpu_acceptance_run_passes_and_writes_what_it_printed(tmp_path):
    output = tmp_path / "check.json"
    result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "check_gpu.sh"), "--device", "cpu", "--output",
                             str(output), "--steps", "1"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "check_gpu: 6 of 6 checks passed" in lines
    assert [line.split(":")[0] for line in lines[:8]] == ["ok", "ok", "skip", "skip", "ok", "ok", "ok", "ok"]
    assert lines[4].startswith("ok: batches on the device: the device's ") and "equal the host's" in lines[4]
    saved = read_json(output)
    assert (saved["passed"], saved["total"], saved["device"]) == (6, 6, "cpu")
    assert [f"{row['outcome']}: {row['check']}: {row['detail']}" for row in saved["checks"]] == lines[:8]
    assert saved["steps_per_second"]["float32"] > 0
    assert any(line.startswith("device (cpu):") for line in saved["info"])


def test_a_failing_check_is_counted_reported_and_exits_1(tmp_path, monkeypatch, capsys):
    def fails(context):
        raise check_gpu.Failed("two runs from seed 7 ended with different weights")

    monkeypatch.setattr(check_gpu, "checks", lambda device, gpus: [("first", lambda context: "fine"),
                                                                    ("second", fails), ("third", "skipped: why")])
    assert check_gpu.main(["--device", "cpu", "--output", str(tmp_path / "out.json")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["ok: first: fine", "FAILED: second: two runs from seed 7 ended with different weights",
                         "skip: third: skipped: why", "check_gpu: 1 of 2 checks passed"]
    assert read_json(tmp_path / "out.json")["passed"] == 1
