"""`--mode summary` (DNSD/summary.py): runs grouped by configuration apart from the seed, mean ± std of the test
error, unfinished runs listed, Welch's comparison; on run folders written here, so that no training is needed."""
import json
import math
import os
import statistics
from pathlib import Path

import pytest
import yaml
from scipy import stats

from DNSD.schema import Config
from helpers import assert_one_line_error, dnsd, read_csv, read_yaml


def fake_run(folder, seed, survival_last, test_error=None, epochs=3):
    """A run folder as training writes it: config, metrics and, if finished, summary."""
    os.makedirs(folder)
    config = Config()
    config.run.seed, config.model.survival_last, config.run.output_dir = seed, survival_last, str(folder)
    Path(folder, "config.yaml").write_text(config.to_yaml())
    with open(os.path.join(folder, "metrics.jsonl"), "w") as stream:
        for epoch in range(1, epochs + 1):
            stream.write(json.dumps({"epoch": epoch, "train_loss": 1.0, "val_error": 30.0 - epoch, "lr": 0.1,
                                     "mean_active_blocks": 40.0 + seed, "epoch_seconds": 60.0,
                                     "images_per_second": 750.0, "train_error": 20.0}) + "\n")
    if test_error is not None:
        summary = {"best_epoch": epochs, "best_val_error": 30.0 - epochs, "test_error": test_error,
                   "last_test_error": test_error + 0.5}
        Path(folder, "summary.json").write_text(json.dumps(summary))
    return str(folder)


@pytest.fixture
def two_configurations(tmp_path):
    stochastic = [5.1, 5.4, 5.2]
    constant = [6.3, 6.5, 6.2, 6.6]
    for seed, error in enumerate(stochastic):
        fake_run(tmp_path / "sd" / f"seed-{seed}", seed, 0.5, error)
    fake_run(tmp_path / "sd" / "seed-9", 9, 0.5)  # still training
    for seed, error in enumerate(constant):
        fake_run(tmp_path / "baseline" / f"seed-{seed}", seed, 1.0, error)
    return tmp_path, stochastic, constant


def test_runs_are_grouped_by_configuration_and_averaged_over_finished_seeds(two_configurations):
    folder, stochastic, constant = two_configurations
    output = folder / "table.md"
    result = dnsd("--mode", "summary", "--runs", str(folder / "sd"), str(folder / "baseline"), "--summary-file",
                  str(output))
    assert result.returncode == 0, result.stderr
    rows = read_csv(folder / "table.csv")
    assert [row["configuration"] for row in rows] == ["sd", "baseline"]
    sd, baseline = rows
    assert (int(sd["runs"]), int(sd["finished"])) == (4, 3)
    assert float(sd["test_error_mean"]) == pytest.approx(sum(stochastic) / 3)
    assert float(sd["test_error_std"]) == pytest.approx(math.sqrt(sum((e - sum(stochastic) / 3) ** 2
                                                                      for e in stochastic) / 2))
    assert (float(sd["test_error_min"]), float(sd["test_error_max"])) == (5.1, 5.4)
    assert float(sd["last_test_error_mean"]) == pytest.approx(sum(stochastic) / 3 + 0.5)
    assert float(sd["training_hours"]) == pytest.approx(4 * 3 * 60 / 3600)
    assert float(baseline["test_error_mean"]) == pytest.approx(statistics.mean(constant))
    text = output.read_text()
    assert result.stdout == f"{text}written to {output} and {folder / 'table.csv'}\n"
    mean, spread = statistics.mean(stochastic), statistics.stdev(stochastic)
    assert f"| sd | 3 (+1 unfinished) | {mean:.2f} ± {spread:.2f} |" in text
    assert f"Unfinished, not averaged: {folder / 'sd' / 'seed-9'}" in text


def test_compare_gives_the_difference_with_welchs_interval(two_configurations):
    folder, stochastic, constant = two_configurations
    result = dnsd("--mode", "summary", "--runs", str(folder / "sd"), str(folder / "baseline"), "--summary-file",
                  str(folder / "t.md"), "--compare", "baseline", "sd")
    assert result.returncode == 0, result.stderr
    # Welch by hand: the standard error of the difference and the Welch-Satterthwaite degrees of freedom.
    a, b = [statistics.variance(x) / len(x) for x in (constant, stochastic)]
    freedom = (a + b) ** 2 / (a ** 2 / 3 + b ** 2 / 2)
    difference = statistics.mean(stochastic) - statistics.mean(constant)
    half = stats.t.ppf(0.975, freedom) * math.sqrt(a + b)
    assert (f"sd - baseline: {difference:+.2f} points of test error, 95% confidence interval "
            f"[{difference - half:+.2f}, {difference + half:+.2f}]") in result.stdout


def test_a_folder_without_runs_or_an_unknown_row_is_one_line(two_configurations):
    folder, _, _ = two_configurations
    (folder / "empty").mkdir()
    assert_one_line_error(dnsd("--mode", "summary", "--runs", str(folder / "empty")), "holds no run")
    result = dnsd("--mode", "summary", "--runs", str(folder / "sd"), "--summary-file", str(folder / "t.md"),
                  "--compare", "sd", "nothing")
    assert_one_line_error(result, "--compare nothing: no such row")
    result = dnsd("--mode", "summary", "--runs", str(folder / "sd"), "--summary-file", str(folder / "t.csv"))
    assert_one_line_error(result, "name a .md file")


def test_the_seed_and_where_a_run_went_do_not_split_a_configuration(tmp_path):
    fake_run(tmp_path / "a", 0, 0.5, 5.0)
    fake_run(tmp_path / "b", 1, 0.5, 6.0)
    config = read_yaml(tmp_path / "b" / "config.yaml")
    config["run"]["device"], config["data"]["data_file"] = "cpu", "/elsewhere/cifar.tar.gz"
    Path(tmp_path / "b" / "config.yaml").write_text(yaml.safe_dump(config))
    result = dnsd("--mode", "summary", "--runs", str(tmp_path / "a"), str(tmp_path / "b"), "--summary-file",
                  str(tmp_path / "t.md"))
    assert result.returncode == 0, result.stderr
    [row] = read_csv(tmp_path / "t.csv")
    assert row["configuration"] == "a / b" and float(row["test_error_mean"]) == 5.5


def test_two_folders_of_one_configuration_and_seed_count_once_and_are_named(tmp_path):
    fake_run(tmp_path / "a", 0, 0.5, 73.8)
    fake_run(tmp_path / "copy-of-a", 0, 0.5, 73.8)
    fake_run(tmp_path / "b", 0, 1.0, 70.0)
    fake_run(tmp_path / "c", 1, 1.0, 71.0)
    result = dnsd("--mode", "summary", "--runs", str(tmp_path / "a"), str(tmp_path / "copy-of-a"),
                  str(tmp_path / "b"), str(tmp_path / "c"), "--summary-file", str(tmp_path / "t.md"),
                  "--compare", "1", "2")
    assert_one_line_error(result, "--compare needs at least 2 seeds finished in each row", "has 1")
    result = dnsd("--mode", "summary", "--runs", str(tmp_path / "a"), str(tmp_path / "copy-of-a"),
                  "--summary-file", str(tmp_path / "t.md"))
    assert result.returncode == 0, result.stderr
    [row] = read_csv(tmp_path / "t.csv")
    assert row["runs"] == row["finished"] == "1" and float(row["test_error_mean"]) == 73.8
    assert row["test_error_std"] == ""
    assert f"Set aside, a seed already counted in its row (the same configuration and seed): " \
           f"{tmp_path / 'copy-of-a'}" in Path(tmp_path / "t.md").read_text()


def test_a_last_line_cut_short_is_set_aside_and_a_damaged_line_before_it_is_not(tmp_path):
    from DNSD.errors import InputError
    from DNSD.runs.folder import read_records

    run = fake_run(tmp_path / "sd" / "seed-0", 0, 0.5, epochs=2)
    with open(os.path.join(run, "metrics.jsonl"), "a") as stream:
        stream.write('{"epoch": 3, "train_loss": 0.9, "val_err')
    result = dnsd("--mode", "summary", "--runs", str(tmp_path / "sd"), "--summary-file", str(tmp_path / "t.md"))
    assert result.returncode == 0, result.stderr
    assert "cut short" in result.stderr and "damaged" not in (tmp_path / "t.md").read_text()
    assert [record["epoch"] for record in read_records(run, ["val_error"])] == [1, 2]
    lines = Path(run, "metrics.jsonl").read_text().splitlines()
    Path(run, "metrics.jsonl").write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    with pytest.raises(InputError, match="line 2 is not an epoch record"):
        read_records(run, ["val_error"])
