"""On real CIFAR-10 images (helpers.real_archive), when there are some."""
import os
import re
from pathlib import Path

import pytest

from helpers import ROOT, dnsd, read_json, read_jsonl

pytestmark = pytest.mark.slow  # each test here trains or runs DNSD in processes of its own


def test_a_short_run_of_a_shallow_network_learns_well_above_chance(mini_archive, tmp_path):
    run_dir = str(tmp_path / "mini")
    result = dnsd("--data-file", mini_archive, "--val-size", "500", "--train-images", "4500", "--depth", "8",
                  "--epochs", "4", "--output-dir", run_dir)
    assert result.returncode == 0, result.stderr
    summary = read_json(os.path.join(run_dir, "summary.json"))
    records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    # Chance is 90 % error on ten balanced classes; 80 % is twice the accuracy of chance. Seen here: about 69 %.
    assert summary["test_error"] < 80
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def test_the_readmes_quick_check_prints_its_first_epoch_here_to_the_digit(mini_archive, tmp_path, monkeypatch):
    from DNSD.training import run

    if os.path.basename(mini_archive) != "cifar-10-mini.tar.gz":
        pytest.skip("the README's quick check was printed from cifar-10-mini.tar.gz, not this archive")
    readme = Path(ROOT, "README.md").read_text()
    numerics = re.search(r"\((\w+) numerics, the default where", readme).group(1)
    printed = re.search(r"^epoch 1/10 .*active blocks [\d.]+", readme, re.MULTILINE).group(0)
    monkeypatch.setattr(run, "train", lambda trainer: trainer.train(until=1))  # the first of the ten epochs
    result = dnsd("--config", "quick", "--data-file", mini_archive, "--val-size", "500", "--output-dir",
                  str(tmp_path / "quick"))
    assert result.returncode == 0, result.stderr
    [session] = read_json(str(tmp_path / "quick" / "environment.json"))["entries"]
    if session["settings"]["cpu_numerics"] != numerics:
        pytest.skip(f"the README's quick check was printed in {numerics} CPU numerics, which this machine lacks")
    [line] = [line for line in result.stdout.splitlines() if line.startswith("epoch 1/10 ")]
    assert line.startswith(printed + "  ")
