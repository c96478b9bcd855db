"""On real CIFAR-10 images (the 6,000-image subset in ../shared/data), when it is there."""
import json
import os

from helpers import dnsd


def test_a_short_run_of_a_shallow_network_learns_well_above_chance(mini_archive, tmp_path):
    run_dir = str(tmp_path / "mini")
    result = dnsd("--data-file", mini_archive, "--val-size", "500", "--depth", "8", "--epochs", "4",
                  "--output-dir", run_dir)
    assert result.returncode == 0, result.stderr
    summary = json.load(open(os.path.join(run_dir, "summary.json")))
    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    # Chance is 90 % error on ten balanced classes; 80 % is twice the accuracy of chance. Seen here: about 69 %.
    assert summary["test_error"] < 80
    assert records[-1]["train_loss"] < records[0]["train_loss"]
