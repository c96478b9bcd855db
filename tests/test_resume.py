"""Reproducible runs and exact resume: real child processes, real signals, weights compared bit for bit."""
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest

from DNSD.config import build_config
from DNSD.errors import TrainingStopped
from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint
from DNSD.training.run import start
from helpers import ROOT, assert_one_line_error, dnsd, read_json, read_jsonl

RUN = ["--depth", "8", "--epochs", "6", "--batch-size", "32", "--val-size", "40", "--checkpoint-every-iterations", "1"]
TIMING = ("epoch_seconds", "images_per_second", "environment_sha256")  # and the session that trained it


def arrays(path):
    """The model and optimiser tensors of a checkpoint, as numpy arrays by name."""
    state = read_checkpoint(path)
    tensors = {f"model/{k}": v for k, v in state["model"].items()}
    tensors.update({f"optimizer/{k}": v for k, v in state["optimizer"].items() if hasattr(v, "shape")})
    return {name: np.asarray(value) for name, value in tensors.items()}


def metrics(run_dir):
    records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    return [{k: v for k, v in record.items() if k not in TIMING} for record in records]


def assert_same_run(run_dir, reference_dir):
    ours, theirs = arrays(os.path.join(run_dir, "last.pdckpt")), arrays(os.path.join(reference_dir, "last.pdckpt"))
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert np.array_equal(ours[name], theirs[name]), name
    assert metrics(run_dir) == metrics(reference_dir)
    summary = read_json(os.path.join(run_dir, "summary.json"))
    reference = read_json(os.path.join(reference_dir, "summary.json"))
    assert (summary["test_error"], summary["best_epoch"]) == (reference["test_error"], reference["best_epoch"])


@pytest.fixture(scope="module")
def reference_run(tiny_archive, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("reference") / "run")
    result = dnsd("--data-file", tiny_archive, "--output-dir", run_dir, *RUN)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.slow
def test_the_same_seed_gives_a_bit_identical_run(reference_run, tiny_archive, tmp_path):
    run_dir = str(tmp_path / "again")
    assert dnsd("--data-file", tiny_archive, "--output-dir", run_dir, *RUN).returncode == 0
    assert_same_run(run_dir, reference_run)


@pytest.mark.slow
def test_another_seed_gives_another_run(reference_run, tiny_archive, tmp_path):
    run_dir = str(tmp_path / "seed1")
    assert dnsd("--data-file", tiny_archive, "--output-dir", run_dir, "--seed", "1", *RUN).returncode == 0
    ours, theirs = arrays(os.path.join(run_dir, "last.pdckpt")), arrays(os.path.join(reference_run, "last.pdckpt"))
    assert not all(np.array_equal(ours[name], theirs[name]) for name in ours)
    assert metrics(run_dir) != metrics(reference_run)


def start_training(tiny_archive, run_dir):
    return subprocess.Popen([sys.executable, "-m", "DNSD", "--data-file", tiny_archive, "--output-dir", run_dir, *RUN],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_first_checkpoint(process, run_dir):
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(run_dir, "last.pdckpt")):
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_a_signal_saves_and_the_resumed_run_is_bit_identical(reference_run, tiny_archive, tmp_path, signum):
    run_dir = str(tmp_path / "interrupted")
    process = start_training(tiny_archive, run_dir)
    wait_for_first_checkpoint(process, run_dir)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith(f"DNSD: stopped: {signal.Signals(signum).name} at epoch ")
    assert f"continue with: {sys.executable} -m DNSD --resume {run_dir}" in message and "Traceback" not in stderr
    state = read_checkpoint(os.path.join(run_dir, "last.pdckpt"))
    assert (state["epochs_done"], state["step"]) != (6, 0)  # stopped before the end
    result = dnsd("--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert_same_run(run_dir, reference_run)
    assert_whole_dashboard(run_dir)


def assert_whole_dashboard(run_dir):
    """VisualDL shows the newest log file of a folder alone: a resumed run's one log holds every epoch."""
    from visualdl import LogReader

    (log,) = os.listdir(os.path.join(run_dir, "vdl"))
    reader = LogReader(file_path=os.path.join(run_dir, "vdl", log))
    epochs = [record["epoch"] for record in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))]
    assert [record.id for record in reader.get_data("scalar", "val_error")] == epochs


@pytest.mark.slow
def test_a_kill_at_a_random_moment_loses_only_the_work_since_the_last_checkpoint(reference_run, tiny_archive,
                                                                                   tmp_path):
    run_dir = str(tmp_path / "killed")
    process = start_training(tiny_archive, run_dir)
    wait_for_first_checkpoint(process, run_dir)
    delay = random.uniform(0, 1.0)
    time.sleep(delay)
    process.kill()
    process.communicate(timeout=60)
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as stream:
        stream.write('{"epoch": 99, "train_lo')  # and a record whose write the kill cut short: the resume repairs it
    result = dnsd("--resume", run_dir)
    assert result.returncode == 0, f"killed after {delay:.2f} s: {result.stderr}"
    assert_same_run(run_dir, reference_run)
    # A kill during a save leaves a temporary file; the resume removes it.
    assert not [name for name in os.listdir(run_dir) if name.startswith(".tmp-")]


@pytest.mark.slow
def test_resume_refuses_a_change_to_what_was_trained(reference_run):
    result = dnsd("--resume", reference_run, "--lr", "0.5")
    assert_one_line_error(result, "train.lr", "--resume")


def test_resume_needs_a_last_checkpoint(tmp_path):
    assert_one_line_error(dnsd("--resume", str(tmp_path)), "last.pdckpt")


@pytest.mark.slow
def test_resume_finds_the_run_from_the_output_dir_flag(reference_run):
    result = dnsd("--resume", "--output-dir", reference_run)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout


def tiny_config(tiny_archive, run_dir, **train):
    values = {"data.data_file": tiny_archive, "data.val_size": 40, "model.depth": 8, "train.batch_size": 32,
              "run.output_dir": run_dir, **{f"train.{key}": value for key, value in train.items()}}
    return build_config(values)


def test_a_non_finite_loss_stops_training_and_keeps_the_best_checkpoint(tiny_archive, tmp_path, monkeypatch):
    run_dir = str(tmp_path / "diverged")
    cross_entropy = paddle.nn.functional.cross_entropy
    calls = []

    def diverging(logits, labels, **options):
        calls.append(1)  # 5 steps an epoch: the 8th call is epoch 2, step 3
        loss = cross_entropy(logits, labels, **options)
        return loss * float("nan") if len(calls) >= 8 else loss

    monkeypatch.setattr(paddle.nn.functional, "cross_entropy", diverging)
    with pytest.raises(TrainingStopped) as stopped:
        start(tiny_config(tiny_archive, run_dir, epochs=3))
    assert stopped.value.exit_code == 1
    assert "nan at epoch 2, step 3" in str(stopped.value)
    assert f"kept {run_dir}/best.pdckpt (epoch 1) and {run_dir}/last.pdckpt (epoch 1)" in str(stopped.value)
    for name in ("best.pdckpt", "last.pdckpt"):
        state = read_checkpoint(os.path.join(run_dir, name))
        assert state["epochs_done"] == 1
        assert all(np.all(np.isfinite(np.asarray(v))) for v in state["model"].values())


def test_a_diverging_run_exits_with_code_1_from_the_cli(tiny_archive, tmp_path):
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(tmp_path / "r"), "--lr", "1e30",
                  *RUN[:-2])
    assert result.returncode == 1, result.stderr
    assert "training loss became" in result.stderr and "at epoch 1, step" in result.stderr
    assert "Traceback" not in result.stderr


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pdckpt")
    save_checkpoint(path, {"value": 1})
    before = Path(path).read_bytes()

    real_writestr = zipfile.ZipFile.writestr

    def disk_fills(archive, name, data):
        real_writestr(archive, name, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_fills)
    with pytest.raises(OSError):
        save_checkpoint(path, {"value": 2})
    assert Path(path).read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pdckpt"]


def points_of(run_dir):
    """points.jsonl's records without the session that measured each (a resume is a session of its own)."""
    return [{key: value for key, value in json.loads(line).items() if key != "environment_sha256"}
            for line in open(os.path.join(run_dir, "points.jsonl"))]


@pytest.mark.slow
def test_a_run_measuring_points_resumes_to_the_same_points_and_best_checkpoint(tiny_archive, tmp_path):
    points_run = [*RUN, "--eval-every-iterations", "3"]
    reference = str(tmp_path / "reference")
    assert dnsd("--data-file", tiny_archive, "--output-dir", reference, *points_run).returncode == 0
    run_dir = str(tmp_path / "killed")
    process = subprocess.Popen([sys.executable, "-m", "DNSD", "--data-file", tiny_archive, "--output-dir", run_dir,
                                *points_run], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(run_dir, "points.jsonl")):  # killed once a point has been measured
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(random.uniform(0, 1.0))
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL  # killed, not finished
    result = dnsd("--resume", run_dir)
    assert result.returncode == 0, result.stderr
    assert_same_run(run_dir, reference)
    assert points_of(run_dir) == points_of(reference)
    ours, theirs = arrays(os.path.join(run_dir, "best.pdckpt")), arrays(os.path.join(reference, "best.pdckpt"))
    assert all(np.array_equal(ours[name], theirs[name]) for name in ours)
    summaries = [read_json(os.path.join(folder, "summary.json")) for folder in (run_dir, reference)]
    assert summaries[0]["best_iteration"] == summaries[1]["best_iteration"]
    # A checkpoint saved before any point (a kill after the first point was written, before the next save): the
    # resume rewrites points.jsonl from it, so that no point is listed twice.
    path = os.path.join(run_dir, "last.pdckpt")
    save_checkpoint(path, {**read_checkpoint(path), "points": []})
    assert dnsd("--resume", run_dir).returncode == 0
    assert Path(run_dir, "points.jsonl").read_text() == ""


def test_a_checkpoint_saved_before_a_resumed_runs_first_step_keeps_the_optimisers_momentum(trained_run, tmp_path):
    """A resume at an epoch's last step saves its checkpoints before any step: Paddle 2.6's optimiser then leaves
    the restored momentum out of its state_dict(), which the checkpoint must hold all the same."""
    from DNSD.datasets import load_splits
    from DNSD.runs.checkpoint import read_state, restore_model
    from DNSD.training.loop import Trainer

    path = os.path.join(trained_run[0], "last.pdckpt")
    state = read_state(path)
    trainer = Trainer(state["config"], str(tmp_path), load_splits(state["config"], state["normalizer"]),
                      restore_model(state, path), state)
    saved = trainer.state()["optimizer"]
    momentum = {key: value for key, value in state["optimizer"].items() if hasattr(value, "shape")}
    assert momentum and all(np.array_equal(np.asarray(saved[key]), value) for key, value in momentum.items())


def test_a_checkpoint_saved_after_an_epochs_end_holds_the_chain_its_record_seals(trained_run, tmp_path):
    """A stop just after an epoch ends (a signal during validation, a pre-empted sweep task) saves last.pdckpt at step
    0 once the epoch is sealed: a resume must take it as the epoch's own checkpoint."""
    from DNSD.datasets import load_splits
    from DNSD.models import build_model
    from DNSD.runs.chain import breaks_chain
    from DNSD.runs.checkpoint import read_state
    from DNSD.training.loop import Trainer

    config = read_state(os.path.join(trained_run[0], "last.pdckpt"))["config"]
    config.run.output_dir, config.train.epochs = str(tmp_path), 1
    paddle.seed(config.run.seed)
    data = load_splits(config)
    trainer = Trainer(config, str(tmp_path), data, build_model(config.model, data.num_classes))
    trainer.train()
    trainer.save("last.pdckpt")  # what Trainer.stop saves after the epoch's end
    state = read_state(os.path.join(str(tmp_path), "last.pdckpt"))
    assert state["epochs_done"] == 1 and state["step"] == 0 and not breaks_chain(state)
