"""The command line end to end, as a user runs it: real processes, real files."""
import glob
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from DNSD.schema import Config
from helpers import ROOT, assert_one_line_error, dnsd, read_json, read_jsonl, read_yaml


def test_training_writes_the_run_folder(trained_run):
    run_dir, result = trained_run
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "best.pdckpt", "last.pdckpt", "best.test.json"):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    assert [record["epoch"] for record in records] == [1, 2]
    for record in records:
        assert {"train_loss", "train_error", "val_error", "lr", "mean_active_blocks", "epoch_seconds",
                "images_per_second"} <= set(record)
        assert 0 <= record["val_error"] <= 100 and 0 < record["mean_active_blocks"] <= 3
    summary = read_json(os.path.join(run_dir, "summary.json"))
    assert summary["best_val_error"] == min(record["val_error"] for record in records)
    assert summary["best_on_tie"] == "earliest" and summary["best_epoch"] == summary["tied_best_epochs"][0]
    assert summary["tied_best_epochs"] == [record["epoch"] for record in records
                                           if record["val_error"] == summary["best_val_error"]]
    # The last epoch's test error: its own report where it is not the best epoch, the best one's where it is.
    last_report = "best.test.json" if summary["best_epoch"] == 2 else "last.test.json"
    assert summary["last_test_error"] == read_json(os.path.join(run_dir, last_report))["error"]
    assert f"test error {summary['test_error']:.2f} %" in result.stdout
    stored = read_yaml(os.path.join(run_dir, "config.yaml"))
    assert stored["model"]["depth"] == 8 and stored["train"]["epochs"] == 2


def test_run_files_get_the_permissions_of_any_new_file(trained_run):
    # Written through temporary files, they must still be readable by whoever may read the folder, as the umask says.
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.yaml", "summary.json", "best.pdckpt", "last.pdckpt", "best.test.json"):
        assert os.stat(os.path.join(trained_run[0], name)).st_mode & 0o777 == 0o666 & ~umask, name


def test_learning_rate_follows_the_authors_schedule(trained_run):
    # lr_decay_at 0.5, 0.75 of 2 epochs: epoch 1 reaches 50 %, epoch 2 reaches 75 %, as in the authors' rule.
    records = read_jsonl(os.path.join(trained_run[0], "metrics.jsonl"))
    assert records[0]["lr"] == pytest.approx(0.01) and records[1]["lr"] == pytest.approx(0.001)


def test_visualdl_logs_hold_the_same_scalars_as_metrics(trained_run):
    from visualdl import LogReader

    run_dir = trained_run[0]
    records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    reader = LogReader(file_path=glob.glob(os.path.join(run_dir, "vdl", "*"))[0])
    for key in ("train_loss", "val_error", "mean_active_blocks"):
        logged = [entry.value for entry in reader.get_data("scalar", key)]
        assert np.allclose(logged, [record[key] for record in records], rtol=1e-6)


def test_eval_of_the_best_checkpoint_gives_the_reported_errors(trained_run, tiny_archive):
    run_dir = trained_run[0]
    summary = read_json(os.path.join(run_dir, "summary.json"))
    checkpoint = os.path.join(run_dir, "best.pdckpt")
    test = dnsd("--mode", "eval", "--checkpoint", checkpoint)
    assert test.returncode == 0, test.stderr
    report = read_json(os.path.join(run_dir, "best.test.json"))
    assert report["error"] == summary["test_error"]
    assert f"test error {summary['test_error']:.2f} %" in test.stdout
    assert len(report["per_class_accuracy"]) == 10 and report["images"] == 40
    val = dnsd("--mode", "eval", "--checkpoint", checkpoint, "--split", "val", "--data-file", tiny_archive)
    assert val.returncode == 0, val.stderr
    assert read_json(os.path.join(run_dir, "best.val.json"))["error"] == summary["best_val_error"]


def test_eval_reports_top5_error_and_draws_the_confusion_matrix(trained_run, tmp_path):
    run_dir = trained_run[0]
    figure = str(tmp_path / "confusion.png")
    result = dnsd("--mode", "eval", "--checkpoint", os.path.join(run_dir, "best.pdckpt"), "--plot-file", figure)
    assert result.returncode == 0, result.stderr
    report = read_json(os.path.join(run_dir, "best.test.json"))
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == report["images"] == 40
    assert 100 * (1 - np.trace(matrix) / matrix.sum()) == pytest.approx(report["error"])
    for index, accuracy in enumerate(report["per_class_accuracy"].values()):
        if matrix[index].sum():
            assert accuracy == pytest.approx(100 * matrix[index, index] / matrix[index].sum())
    assert 0 <= report["top5_error"] <= report["error"]
    assert f"top-5 error {report['top5_error']:.2f} %" in result.stdout
    assert Path(figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(figure) > 10_000


def test_eval_refuses_a_figure_it_cannot_write_before_evaluating(trained_run, tmp_path):
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    result = dnsd("--mode", "eval", "--checkpoint", checkpoint, "--plot-file", str(tmp_path / "matrix.gif"))
    assert_one_line_error(result, ".png, .pdf or .svg")
    assert "test error" not in result.stdout


@pytest.mark.parametrize("entry, cwd", [(("-m", "DNSD"), ROOT), (("DNSD/main.py",), ROOT),
                                        (("main.py",), os.path.join(ROOT, "DNSD"))])
def test_every_entry_point_runs_the_same_cli(entry, cwd):
    result = dnsd("--print-config", "--epochs", "3", cwd=cwd, entry=entry)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["train"]["epochs"] == 3
    assert config["model"] == yaml.safe_load(Config().to_yaml())["model"]


@pytest.mark.parametrize("name", ["quick", "quick.yaml", "configs/quick.yaml"])
def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path, name):
    result = dnsd("--config", name, "--print-config", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == yaml.safe_load(dnsd("--config", "configs/quick.yaml",
                                                                "--print-config").stdout)


def test_a_missing_config_path_is_not_replaced_by_a_shipped_one(tmp_path):
    from helpers import assert_one_line_error

    result = dnsd("--config", str(tmp_path / "quick.yaml"), "--print-config")
    assert_one_line_error(result, "cannot read config file", "resnet110_sd")
