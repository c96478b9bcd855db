"""Every user mistake gets one clear line, a non-zero exit, no traceback, and loses nothing."""
import gzip
import os
from pathlib import Path

import paddle
import pytest

from cifar_archive import MEMBERS, synthetic_batches, write_archive
from DNSD.models.resnet import CifarResNet
from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint
from helpers import TINY_RUN, assert_one_line_error, dnsd, read_yaml


def make_archive(kind, folder):
    path = str(folder / ("cifar-10-python.tar.gz" if kind == "md5 mismatch" else f"{kind.replace(' ', '-')}.tar.gz"))
    if kind == "missing":
        return path
    if kind == "truncated":
        write_archive(path, synthetic_batches(20))
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 3])
    elif kind == "not gzip":
        Path(path).write_text("plain text, not an archive\n")
    elif kind == "wrong layout":
        write_archive(path, synthetic_batches(20), skip=[MEMBERS[-1]])
    elif kind == "md5 mismatch":
        Path(path).write_bytes(gzip.compress(b"an official name, but not the official file"))
    return path


@pytest.mark.parametrize("kind, fragment", [
    ("missing", "does not exist"),
    ("truncated", "truncated"),
    ("not gzip", "gzip"),
    ("wrong layout", "test_batch"),
    ("md5 mismatch", "md5"),
])
def test_bad_archive(tmp_path, kind, fragment):
    archive = make_archive(kind, tmp_path)
    run_dir = tmp_path / "run"
    result = dnsd("--data-file", archive, "--output-dir", str(run_dir), *TINY_RUN)
    assert_one_line_error(result, fragment, os.path.basename(archive))
    assert not run_dir.exists() or os.listdir(run_dir) == []


def test_bad_archive_with_overwrite_keeps_the_old_run(trained_run, tmp_path):
    run_dir = trained_run[0]
    before = sorted(os.listdir(run_dir))
    result = dnsd("--data-file", make_archive("not gzip", tmp_path), "--output-dir", run_dir, "--overwrite",
                  *TINY_RUN)
    assert_one_line_error(result, "gzip")
    assert sorted(os.listdir(run_dir)) == before


@pytest.mark.parametrize("content, fragment", [
    ("train: {epochs: [1,\n", "not valid YAML"),
    ("train:\n  epoch: 3\n", "did you mean train.epochs"),
    ("train:\n  epochs: three\n", "expected an integer"),
    ("model:\n  survival_last: 1.5\n", "(0, 1]"),
])
def test_bad_config_file(tmp_path, content, fragment):
    path = tmp_path / "config.yaml"
    path.write_text(content)
    assert_one_line_error(dnsd("--config", str(path)), fragment, "config")


def test_missing_config_file(tmp_path):
    assert_one_line_error(dnsd("--config", str(tmp_path / "none.yaml")), "cannot read config file")


def test_unknown_flag():
    assert_one_line_error(dnsd("--epoch", "3"), "--epoch")


def altered_checkpoint(trained_run, tmp_path, change):
    state = read_checkpoint(os.path.join(trained_run[0], "best.pdckpt"))
    change(state)
    path = str(tmp_path / "altered.pdckpt")
    save_checkpoint(path, state)
    return path


def set_depth(state):
    state["config"]["model"]["depth"] = 14


def set_classes(state):
    state["num_classes"] = 100


@pytest.mark.parametrize("change, fragments", [(set_depth, ("ResNet-14", "another model")),
                                                (set_classes, ("num_classes is 100", "cifar10 has 10 classes"))])
def test_checkpoint_from_another_depth_or_number_of_classes(trained_run, tmp_path, change, fragments):
    path = altered_checkpoint(trained_run, tmp_path, change)
    assert_one_line_error(dnsd("--mode", "eval", "--checkpoint", path), *fragments)


def test_checkpoint_from_another_architecture(tmp_path):
    path = str(tmp_path / "resnet.pdparams")
    paddle.save(CifarResNet(8).state_dict(), path)
    assert_one_line_error(dnsd("--mode", "eval", "--checkpoint", path), "not a DNSD checkpoint")


def test_corrupt_checkpoint(trained_run, tmp_path):
    corrupt = tmp_path / "corrupt.pdckpt"
    corrupt.write_bytes(Path(trained_run[0], "best.pdckpt").read_bytes()[:1000])
    assert_one_line_error(dnsd("--mode", "eval", "--checkpoint", str(corrupt)), str(corrupt))


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(dnsd("--mode", "eval", "--checkpoint", str(tmp_path / "none.pdckpt")), "does not exist")


def test_eval_without_checkpoint():
    assert_one_line_error(dnsd("--mode", "eval"), "--checkpoint")


def test_eval_cannot_change_the_model(trained_run):
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    assert_one_line_error(dnsd("--mode", "eval", "--checkpoint", checkpoint, "-o", "model.depth=20"), "model.depth")
    assert_one_line_error(dnsd("--mode", "eval", "--checkpoint", checkpoint, "--depth", "20"),
                          "--depth is a flag of dnsd train")


def test_unwritable_output_folder(tmp_path, tiny_archive):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(blocker / "run"), *TINY_RUN)
    assert_one_line_error(result, "cannot write to output folder", "--output-dir")


def test_existing_run_is_refused_naming_resume_and_overwrite(trained_run, tiny_archive):
    run_dir = trained_run[0]
    before = Path(run_dir, "metrics.jsonl").read_text()
    result = dnsd("--data-file", tiny_archive, "--output-dir", run_dir, *TINY_RUN)
    assert_one_line_error(result, run_dir, "--resume", "--overwrite")
    assert Path(run_dir, "metrics.jsonl").read_text() == before
    assert read_yaml(os.path.join(run_dir, "config.yaml"))["train"]["epochs"] == 2
