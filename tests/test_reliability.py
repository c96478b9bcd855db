"""Runs that cannot be corrupted: one live run per folder, no non-finite checkpoint, checkpoints that cannot run code
and prove their integrity, the data a run used, every file-system fault as one line, inputs that are what they claim,
no ignored flag and advice that works. Real processes where the point is about processes."""
import errno
import hashlib
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml

from cifar_archive import MEMBERS, synthetic_batches, write_archive, write_cifar100_archive
from DNSD import main as cli
from DNSD.config import build_config
from DNSD.errors import EXIT_RUN_IN_USE, TrainingStopped
from DNSD.runs.checkpoint_file import read_checkpoint
from DNSD.runs.locks import lock
from DNSD.training.loop import Trainer
from DNSD.training.run import start
from helpers import ROOT, TINY_RUN, assert_one_line_error, dnsd, read_json, read_jsonl, read_yaml

ONE_EPOCH = [*TINY_RUN[:4], "--epochs", "1", *TINY_RUN[6:]]


def snapshot(folder):
    """{relative path: sha256} of every file below folder."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            files[os.path.relpath(path, folder)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return files


def copy_run(trained_run, tmp_path, name="copy"):
    target = str(tmp_path / name)
    shutil.copytree(trained_run[0], target)
    return target


def run_cli(capsys, *argv):
    """The CLI in this process (for faults that only a patch can make): (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code, err, *fragments, expected=2):
    assert code == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# One live run per folder.

def launch(tiny_archive, run_dir, *extra):
    return subprocess.Popen([sys.executable, "-m", "DNSD", "--data-file", tiny_archive, "--output-dir", run_dir,
                             *ONE_EPOCH, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_two_trainings_started_at_once_in_one_folder_never_mix(tiny_archive, tmp_path):
    for attempt in range(4):
        run_dir = str(tmp_path / f"race{attempt}")
        first, second = launch(tiny_archive, run_dir, "--seed", "1"), launch(tiny_archive, run_dir, "--seed", "2")
        results = [(process.wait(timeout=300), *process.communicate()) for process in (first, second)]
        codes = sorted(code for code, _, _ in results)
        # The loser finds the folder locked (75, try again later) or, arriving after the winner's first epoch, taken.
        assert codes in ([0, 2], [0, EXIT_RUN_IN_USE]), results
        [(_, _, loser)] = [result for result in results if result[0] != 0]
        assert "is in use by a running DNSD training (process " in loser or "already holds a run" in loser, loser
        assert len(loser.strip().splitlines()) == 1
        records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
        assert [record["epoch"] for record in records] == [1]
        winner_seed = read_yaml(os.path.join(run_dir, "config.yaml"))["run"]["seed"]
        assert read_checkpoint(os.path.join(run_dir, "last.pdckpt"))["config"]["run"]["seed"] == winner_seed


@pytest.mark.slow
def test_a_running_training_is_not_overwritten_or_resumed_by_another(tiny_archive, tmp_path):
    run_dir = str(tmp_path / "busy")
    process = subprocess.Popen([sys.executable, "-m", "DNSD", "--data-file", tiny_archive, "--output-dir", run_dir,
                                *TINY_RUN[:4], "--epochs", "200", *TINY_RUN[6:]], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(run_dir, "last.pdckpt")):
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.05)
        overwrite = dnsd("--data-file", tiny_archive, "--output-dir", run_dir, *ONE_EPOCH, "--overwrite")
        for result in (overwrite, dnsd("--resume", run_dir)):
            assert_one_line_error(result, f"{run_dir} is in use by a running DNSD training (process {process.pid} on ",
                                  code=EXIT_RUN_IN_USE)
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()
    # Its lock died with it: the folder can be taken at once.
    os.close(lock(run_dir))


def test_a_lock_file_left_by_a_dead_process_blocks_nothing(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    with open(os.path.join(run_dir, ".lock"), "w") as stream:
        stream.write("process 999999 on elsewhere\n")
    result = dnsd("--resume", run_dir)
    assert result.returncode == 0, result.stderr


# No non-finite checkpoint.

def tiny_config(tiny_archive, run_dir, **values):
    base = {"data.data_file": tiny_archive, "data.val_size": 40, "model.depth": 8, "train.batch_size": 32,
            "train.epochs": 3, "run.output_dir": run_dir}
    return build_config({**base, **values})


@pytest.mark.slow
def test_non_finite_batch_norm_statistics_are_never_saved_and_the_branch_command_goes_on(tiny_archive, tmp_path,
                                                                                            monkeypatch):
    run_dir = str(tmp_path / "poisoned")
    real_step = Trainer.train_step
    steps = []

    def poisoning_step(trainer, *args, **kwargs):
        stop = real_step(trainer, *args, **kwargs)
        steps.append(1)
        if len(steps) == 7:  # epoch 2, step 2: a running mean becomes NaN while the loss stays finite
            batch_norm = next(layer for layer in trainer.model.sublayers() if isinstance(layer, paddle.nn.BatchNorm2D))
            batch_norm._mean.set_value(np.full(batch_norm._mean.shape, np.nan, np.float32))
        return stop

    monkeypatch.setattr(Trainer, "train_step", poisoning_step)
    with pytest.raises(TrainingStopped) as stopped:
        start(tiny_config(tiny_archive, run_dir))
    message = str(stopped.value)
    assert "became non-finite (NaN or infinite) by the end of epoch 2" in message
    assert f"kept {run_dir}/best.pdckpt (epoch 1) and {run_dir}/last.pdckpt (epoch 1)" in message
    for name in ("best.pdckpt", "last.pdckpt"):
        state = read_checkpoint(os.path.join(run_dir, name))
        assert state["epochs_done"] == 1
        assert all(np.isfinite(value).all() for value in state["model"].values())
    monkeypatch.undo()
    command = message.split("to go on with a lower learning rate: ")[1]
    assert command.startswith(f"{sys.executable} -m DNSD --resume {run_dir}/last.pdckpt --branch ")
    result = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    branch_dir = shlex.split(command)[6]
    branch = read_json(os.path.join(branch_dir, "branch.json"))
    assert branch["changes"] == {"train.lr": {"from": 0.1, "to": 0.01}} and branch["epochs_done"] == 1
    assert read_yaml(os.path.join(branch_dir, "config.yaml"))["train"]["lr"] == 0.01
    records = read_jsonl(os.path.join(branch_dir, "metrics.jsonl"))
    # Epoch 1 from the source, then the branch's own: the schedule of lr 0.01 decays at 50 % and 75 % of 3 epochs.
    assert [record["epoch"] for record in records] == [1, 2, 3]
    assert [record["lr"] for record in records[1:]] == pytest.approx([0.001, 0.0001])


def test_an_exploding_learning_rate_saves_nothing_non_finite_and_names_what_is_kept(tiny_archive, tmp_path):
    run_dir = tmp_path / "exploded"
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(run_dir), *TINY_RUN, "--lr", "1e9",
                  "--checkpoint-every-iterations", "1")
    assert_one_line_error(result, "at epoch 1, step", "training stopped, kept ", code=1)
    state = read_checkpoint(str(run_dir / "last.pdckpt"))
    assert f"last.pdckpt (epoch 1, step {state['step']})" in result.stderr
    assert all(np.isfinite(value).all() for value in state["model"].values())
    assert all(np.isfinite(value).all() for value in state["optimizer"].values() if isinstance(value, np.ndarray))


@pytest.mark.slow
def test_a_run_that_diverges_before_its_first_checkpoint_gets_a_command_that_starts_again(tiny_archive, tmp_path):
    run_dir = tmp_path / "exploded"
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(run_dir), *TINY_RUN, "--lr", "1e9")
    assert_one_line_error(result, "no checkpoint had been written; to start again with a lower learning rate: ",
                          code=1)
    assert not (run_dir / "last.pdckpt").exists()
    command = shlex.split(result.stderr.split("learning rate: ")[1])
    assert command[-3:] == ["--overwrite", "-o", "train.lr=1e+08"]
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode in (0, 1) and "Traceback" not in again.stderr, again.stderr
    assert read_yaml(run_dir / "config.yaml")["train"]["lr"] == 1e8


def test_resume_refuses_a_new_learning_rate_and_names_the_branch(trained_run):
    result = dnsd("--resume", trained_run[0], "--lr", "0.01")
    assert_one_line_error(result, "train.lr", "--branch NEW_DIR")


def test_a_branch_cannot_change_the_model(trained_run, tmp_path):
    result = dnsd("--resume", trained_run[0], "--branch", str(tmp_path / "b"), "--depth", "14")
    assert_one_line_error(result, "model.depth", "a branch continues the same model")
    assert not (tmp_path / "b" / "config.yaml").exists()


def test_constant_images_are_refused(tmp_path):
    batches = {member: (np.full((40, 3072), 7, np.uint8), [1] * 40) for member in MEMBERS}
    archive = write_archive(str(tmp_path / "flat.tar.gz"), batches)
    result = dnsd("--data-file", archive, "--output-dir", str(tmp_path / "run"), *ONE_EPOCH)
    assert_one_line_error(result, "standard deviation of 0")


# Checkpoints that cannot run code and prove their integrity.

class Payload:
    def __reduce__(self):
        return os.system, (f"touch {MARKER}",)


MARKER = ""


def test_a_crafted_pickle_runs_nothing(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "payload-ran")
    path = tmp_path / "evil.pdckpt"
    path.write_bytes(pickle.dumps({"format": "dnsd-checkpoint/1", "config": Payload()}))
    result = dnsd("--mode", "eval", "--checkpoint", str(path))
    assert_one_line_error(result, "posix.system is not data", "nothing in it was run")
    assert not os.path.exists(MARKER)


def test_a_checkpoint_with_flipped_bytes_is_refused(trained_run, tmp_path):
    data = bytearray(Path(trained_run[0], "best.pdckpt").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - byte for byte in data[middle:middle + 64])
    path = tmp_path / "flipped.pdckpt"
    path.write_bytes(bytes(data))
    assert_one_line_error(dnsd("--mode", "eval", "--checkpoint", str(path)), "is damaged", "Bad CRC-32")


def test_a_checkpoint_altered_with_valid_zip_checksums_is_refused_by_its_digest(trained_run, tmp_path):
    altered = tmp_path / "altered.pdckpt"
    with zipfile.ZipFile(os.path.join(trained_run[0], "best.pdckpt")) as source, \
            zipfile.ZipFile(altered, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "arrays/0.npy":  # the first weight, one value changed: a model that would still run
                data = data[:-4] + np.float32(1.9e38).tobytes()
            target.writestr(name, data)
    assert_one_line_error(dnsd("--mode", "eval", "--checkpoint", str(altered)), "does not match its sha256")


def test_a_checkpoint_of_the_pickled_format_still_loads_and_evaluates_the_same(trained_run, tmp_path):
    state = read_checkpoint(os.path.join(trained_run[0], "best.pdckpt"))
    state["format"] = "dnsd-checkpoint/1"
    old = tmp_path / "old.pdckpt"
    paddle.save(state, str(old))
    result = dnsd("--mode", "eval", "--checkpoint", str(old))
    assert result.returncode == 0, result.stderr
    assert read_json(tmp_path / "old.test.json")["error"] == \
        read_json(os.path.join(trained_run[0], "summary.json"))["test_error"]


# The data a run used.

def test_resume_with_other_data_is_refused(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    other = write_archive(str(tmp_path / "other.tar.gz"), synthetic_batches(40, seed=9, learnable=True))
    result = dnsd("--resume", run_dir, "--data-file", other)
    assert_one_line_error(result, "is not the archive", "was trained on", "--data-file")


def test_eval_on_other_data_never_replaces_the_runs_report(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    before = Path(run_dir, "best.test.json").read_text()
    other = write_archive(str(tmp_path / "other.tar.gz"), synthetic_batches(40, seed=9, learnable=True))
    result = dnsd("--mode", "eval", "--checkpoint", os.path.join(run_dir, "best.pdckpt"), "--data-file", other)
    assert result.returncode == 0, result.stderr
    sha = hashlib.sha256(Path(other).read_bytes()).hexdigest()
    report = os.path.join(run_dir, f"best.test.other-{sha[:8]}.json")
    assert f"report written to {report}" in result.stdout
    assert read_yaml(report)["data"]["sha256"] == sha
    assert Path(run_dir, "best.test.json").read_text() == before


def test_a_relative_data_file_keeps_working_from_another_folder(tiny_archive, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(tiny_archive, work / "data.tar.gz")
    result = dnsd("--data-file", "data.tar.gz", "--output-dir", "run", *ONE_EPOCH, cwd=str(work))
    assert result.returncode == 0, result.stderr
    stored = read_yaml(work / "run" / "config.yaml")["data"]["data_file"]
    assert stored == str(work / "data.tar.gz")
    again = dnsd("--mode", "eval", "--checkpoint", str(work / "run" / "best.pdckpt"), cwd=str(tmp_path))
    assert again.returncode == 0, again.stderr


# File-system faults: one line, exit 2, nothing lost.

@pytest.mark.slow
def test_a_full_disk_while_saving_keeps_the_last_checkpoint_and_the_run_resumes_exactly(tiny_archive, tmp_path,
                                                                                          capsys, monkeypatch):
    reference = str(tmp_path / "reference")
    argv = ["--data-file", tiny_archive, *TINY_RUN, "--checkpoint-every-iterations", "2"]
    assert cli.main([*argv, "--output-dir", reference]) == 0
    run_dir = str(tmp_path / "full")
    real_writestr = zipfile.ZipFile.writestr
    saves = []

    def disk_fills(archive, name, data):
        if name == "state.json":
            saves.append(1)
        if len(saves) == 3:
            real_writestr(archive, name, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", archive.filename)
        real_writestr(archive, name, data)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", disk_fills)
    capsys.readouterr()
    code, _, err = run_cli(capsys, *argv, "--output-dir", run_dir)
    assert_one_line(code, err, "No space left on device", run_dir, "--resume")
    assert not [name for name in os.listdir(run_dir) if name.startswith(".tmp-")]
    monkeypatch.undo()
    assert read_checkpoint(os.path.join(run_dir, "last.pdckpt"))["step"] == 4
    assert cli.main(["--resume", run_dir]) == 0
    ours, theirs = (read_checkpoint(os.path.join(folder, "last.pdckpt"))["model"] for folder in (run_dir, reference))
    assert all(np.array_equal(ours[name], theirs[name]) for name in theirs)


def test_eval_into_a_read_only_run_folder_fails_before_evaluating(trained_run, tmp_path, capsys, monkeypatch):
    import tempfile

    from DNSD.training import evaluation

    run_dir = copy_run(trained_run, tmp_path)
    before = snapshot(run_dir)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    evaluated = []
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    monkeypatch.setattr(evaluation, "evaluate", lambda *args, **kwargs: evaluated.append(1))
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", os.path.join(run_dir, "best.pdckpt"))
    assert_one_line(code, err, "cannot write to folder", "Read-only file system")
    assert evaluated == [] and snapshot(run_dir) == before


@pytest.mark.parametrize("content, fragment", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text"),
    (b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n", "YAML alias"),
    (b"train:\n  epochs: 2\n" + b"# padding\n" * 120000, "larger than 1 MiB"),
])
def test_a_config_that_is_not_a_config_is_refused_quickly(tmp_path, content, fragment):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    started = time.time()
    assert_one_line_error(dnsd("--config", str(path), "--print-config"), fragment, str(path))
    assert time.time() - started < 60


def test_a_folder_as_config_or_plot_file_is_one_line(trained_run, tmp_path):
    assert_one_line_error(dnsd("--config", str(tmp_path), "--print-config"), "is a folder")
    result = dnsd("--mode", "plot", "--runs", trained_run[0], "--plot-file", str(tmp_path))
    assert_one_line_error(result, "is a folder")


# Inputs are what they claim.

def archive_with(tmp_path, name, change):
    batches = synthetic_batches(40, learnable=True)
    change(batches)
    return write_archive(str(tmp_path / f"{name}.tar.gz"), batches)


@pytest.mark.parametrize("name, change, fragment", [
    ("float-pixels", lambda b: b.update({MEMBERS[0]: (b[MEMBERS[0]][0] / 255.0, b[MEMBERS[0]][1])}),
     "float64 values of shape (40, 3072)"),
    ("float-labels", lambda b: b.update({MEMBERS[1]: (b[MEMBERS[1]][0], [1.5] * 40)}), "not a list of integer labels"),
    ("empty-test", lambda b: b.update({MEMBERS[-1]: (np.zeros((0, 3072), np.uint8), [])}), "holds no images"),
])
def test_inputs_that_are_not_what_they_claim_are_refused(tmp_path, name, change, fragment):
    archive = archive_with(tmp_path, name, change)
    result = dnsd("--data-file", archive, "--output-dir", str(tmp_path / "run"), *ONE_EPOCH)
    assert_one_line_error(result, fragment)


# --overwrite and leftovers.

def test_overwrite_clears_everything_the_old_run_wrote_and_nothing_else(trained_run, tiny_archive, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    for name in ("best.val.json", ".tmp-abc123", "best.test.other-12345678.json"):
        Path(run_dir, name).write_text("{}")
    os.makedirs(os.path.join(run_dir, "best-inference"))
    Path(run_dir, "notes.txt").write_text("mine")
    result = dnsd("--data-file", tiny_archive, "--output-dir", run_dir, *ONE_EPOCH, "--overwrite")
    assert result.returncode == 0, result.stderr
    names = set(os.listdir(run_dir))
    assert not {"best.val.json", ".tmp-abc123", "best.test.other-12345678.json", "best-inference"} & names
    assert {"notes.txt", "config.yaml", "best.pdckpt", "best.test.json"} <= names
    assert Path(run_dir, "notes.txt").read_text() == "mine"


def test_resume_removes_stale_temporary_files(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    Path(run_dir, ".tmp-left-by-a-kill").write_text("half")
    assert dnsd("--resume", run_dir).returncode == 0
    assert not os.path.exists(os.path.join(run_dir, ".tmp-left-by-a-kill"))


# No ignored flags, no circular advice.

@pytest.mark.parametrize("argv, fragment", [
    (["--checkpoint", "x.pdckpt"], "--checkpoint is a flag of dnsd eval and dnsd predict and dnsd export, not of "
                                   "dnsd train"),
    (["--mode", "eval", "--checkpoint", "x.pdckpt", "--runs", "a"], "--runs is a flag of dnsd plot and dnsd summary"),
    (["--split", "val"], "--split is a flag of dnsd eval, not of dnsd train"),
    (["--mode", "plot", "--runs", "a", "--export-prefix", "p"], "--export-prefix is a flag of dnsd export, not of "
                                                                 "dnsd plot"),
    (["--branch", "new"], "--branch NEW_DIR starts from a checkpoint"),
])
def test_a_flag_of_another_mode_is_refused(argv, fragment):
    assert_one_line_error(dnsd(*argv), fragment)


def suggested_command(message):
    return shlex.split(message.split("with: ")[1].split(", or ")[0])


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_gets_a_command_that_works(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    for name in ("best.pdckpt", "last.pdckpt", "summary.json", "best.test.json"):
        os.remove(os.path.join(run_dir, name))
    config = read_yaml(os.path.join(run_dir, "config.yaml"))
    config["run"]["output_dir"] = run_dir
    Path(run_dir, "config.yaml").write_text(yaml.safe_dump(config))
    result = dnsd("--resume", run_dir)
    assert_one_line_error(result, "stopped before its first one")
    command = shlex.split(result.stderr.split("start it again with: ")[1])
    assert command[:3] == [sys.executable, "-m", "DNSD"]
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_a_run_with_only_a_best_checkpoint_gets_a_command_that_works(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    os.remove(os.path.join(run_dir, "last.pdckpt"))
    result = dnsd("--resume", run_dir)
    assert_one_line_error(result, "holds no last.pdckpt, but a best.pdckpt")
    again = subprocess.run(suggested_command(result.stderr), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout


def test_a_cifar100_checkpoint_with_a_cifar10_archive_names_the_right_archive(tiny_archive, tmp_path):
    archive = write_cifar100_archive(str(tmp_path / "c100.tar.gz"), 300, 60, seed=4)
    run_dir = str(tmp_path / "c100")
    trained = dnsd("--dataset", "cifar100", "--data-file", archive, "--output-dir", run_dir, *ONE_EPOCH,
                   "--val-size", "60")
    assert trained.returncode == 0, trained.stderr
    result = dnsd("--mode", "eval", "--checkpoint", os.path.join(run_dir, "best.pdckpt"), "--data-file", tiny_archive)
    assert_one_line_error(result, "the checkpoint was trained on CIFAR-100", "cifar-100-python.tar.gz")
    assert "--dataset" not in result.stderr


# Exit codes.

def test_an_internal_error_is_one_line_with_its_own_code_and_a_log_in_the_run_folder(trained_run, tmp_path, capsys,
                                                                                     monkeypatch):
    from DNSD.training import evaluation

    run_dir = copy_run(trained_run, tmp_path)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(evaluation, "evaluate", broken)
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", os.path.join(run_dir, "best.pdckpt"))
    assert_one_line(code, err, "internal error: ZeroDivisionError: a bug", "please report it",
                    os.path.join(run_dir, "error.log"), expected=70)
    log = Path(run_dir, "error.log").read_text()
    assert "Traceback" in log and "ZeroDivisionError: a bug" in log
