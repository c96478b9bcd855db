"""Files from elsewhere are untrusted: a data archive cannot run code or take gigabytes, a re-sealed checkpoint with
impossible contents is refused field by field, flags and configs are bounded, outputs never replace a device, and
a model half replaced by an interrupted export is refused. Each refusal: exit 2, one line, nothing written."""
import hashlib
import io
import json
import os
import pickle
import stat
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cifar_archive import synthetic_batches, write_archive
from DNSD.datasets.cifar import SOURCES, read_archive
from DNSD.errors import InputError
from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint
from helpers import ROOT, TINY_RUN, assert_one_line_error, dnsd, read_json
from test_bad_input import altered_checkpoint


class Payload:
    """An object whose unpickling calls function(*arguments)."""

    def __init__(self, function, *arguments):
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


def payloads(marker):
    command = f"touch {marker}"
    return {"os.system": Payload(os.system, command),
            "builtins.eval": Payload(eval, f"__import__('os').system({command!r})"),
            "subprocess": Payload(subprocess.call, ["touch", marker]),
            "nested": {"inside": [Payload(os.system, command)]}}


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "subprocess", "nested"])
def test_a_pickle_that_names_code_is_refused_and_nothing_runs(tmp_path, kind):
    marker = str(tmp_path / "marker")
    batches = synthetic_batches(20)
    path = str(tmp_path / "evil.tar.gz")
    write_archive(path, batches)
    images, labels = batches["cifar-10-batches-py/data_batch_1"]
    evil = pickle.dumps({b"data": images, b"labels": labels, b"extra": payloads(marker)[kind]}, protocol=2)
    replace_member(path, "cifar-10-batches-py/data_batch_1", evil)
    result = dnsd("--data-file", path, "--output-dir", str(tmp_path / "run"), *TINY_RUN)
    assert_one_line_error(result, "data_batch_1 is not a CIFAR pickle", "nothing in it was run")
    assert not os.path.exists(marker) and not os.path.exists(tmp_path / "run")


def test_ragged_labels_are_one_line(tmp_path):
    batches = synthetic_batches(20)
    path = write_archive(str(tmp_path / "ragged.tar.gz"), batches)
    images, labels = batches["cifar-10-batches-py/data_batch_1"]
    replace_member(path, "cifar-10-batches-py/data_batch_1",
                   pickle.dumps({b"data": images, b"labels": [[1, 2], [3]] + labels[2:]}, protocol=2))
    assert_one_line_error(dnsd("--data-file", path, "--output-dir", str(tmp_path / "run"), *TINY_RUN),
                          "not a list of integer labels")


def replace_member(path, name, data):
    with tarfile.open(path, "r:gz") as archive:
        members = [(info, archive.extractfile(info).read()) for info in archive.getmembers()]
    with tarfile.open(path, "w:gz") as archive:
        for info, content in members:
            content = data if info.name == name else content
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def test_a_member_larger_than_any_official_batch_is_refused_before_it_is_read(tmp_path):
    path = str(tmp_path / "bomb.tar.gz")
    write_archive(path, synthetic_batches(20))
    # 40 MB of zeros gzip to about 40 KB: more than an official CIFAR-10 batch holds.
    replace_member(path, "cifar-10-batches-py/data_batch_1", bytes(40 << 20))
    assert os.path.getsize(path) < 1 << 20
    tracemalloc.start()
    with pytest.raises(InputError, match=r"data_batch_1 is 41,943,040 bytes, more than the largest batch"):
        read_archive(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20  # nothing of the member was held
    assert SOURCES["cifar10"].member_limit < 40 << 20 < SOURCES["cifar100"].member_limit


def nan_weights(state):
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] * np.nan


def float16_weights(state):
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name].astype(np.float16)


@pytest.mark.parametrize("change, fragments", [
    (lambda s: s.update(num_classes=20_000_000), ("num_classes is 20000000", "cifar10 has 10 classes")),
    (lambda s: s.update(num_classes="10"), ("num_classes is '10'",)),
    (lambda s: s.update(num_classes=True), ("num_classes is True",)),
    (lambda s: s.update(classes=["a", "b", "c"]), ("classes are not 10 class names",)),
    (lambda s: s.update(epochs_done=-5), ("epochs_done is -5",)),
    (lambda s: s.update(epochs_done="0"), ("epochs_done is '0'",)),
    (lambda s: s["normalizer"].update(mean=np.zeros(7)), ("normaliser is not a pixel mean and std",)),
    (lambda s: s["config"]["model"].update(depth=600000002), ("model.depth", "1 <= n <= 400")),
    (nan_weights, ("weights hold values that are not finite",)),
    (float16_weights, ("does not fit a ResNet-8",)),
])
def test_a_resealed_checkpoint_with_impossible_contents_is_refused_naming_the_field(trained_run, tmp_path, change,
                                                                                    fragments):
    path = altered_checkpoint(trained_run, tmp_path, change)
    result = dnsd("eval", "--checkpoint", path)
    assert_one_line_error(result, str(tmp_path), *fragments)
    assert not os.path.exists(tmp_path / "altered.test.json")


def test_a_checkpoint_nested_deeper_than_python_reads_is_refused(trained_run, tmp_path):
    path = altered_checkpoint(trained_run, tmp_path, lambda s: s.update(history=[]))
    from DNSD.runs import checkpoint_file as checkpoint

    members = checkpoint._members(read_checkpoint(path))
    deep = b'"history": ' + b"[" * 100_000 + b"]" * 100_000
    members[0] = ("state.json", members[0][1].replace(b'"history": []', deep))
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members[:-1]:
            archive.writestr(name, data)
        archive.writestr("sha256", checkpoint._digest(members[:-1]))
    assert_one_line_error(dnsd("eval", "--checkpoint", path), "damaged or not a DNSD checkpoint")


def test_a_resume_refuses_optimiser_state_that_does_not_fit(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (run_dir / name).write_text(Path(trained_run[0], name).read_text())

    def wrong_velocity(state):
        key = next(key for key in state["optimizer"] if key.endswith("_velocity_0"))
        state["optimizer"][key] = np.zeros((7,), np.float32)

    state = read_checkpoint(altered_checkpoint(trained_run, tmp_path, wrong_velocity))
    save_checkpoint(str(run_dir / "last.pdckpt"), state)
    before = Path(run_dir / "metrics.jsonl").read_text()
    assert_one_line_error(dnsd("--resume", str(run_dir)), "optimiser state", "does not fit the model's parameters")
    assert Path(run_dir / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("argv, fragment", [
    (["--seeds", "0-1000000000", "--print-config"], "more than 1000 seeds"),
    (["--seeds", "4294967296", "--print-config"], "seeds in [0, 2^32)"),
    (["--seed", str(10**23), "--print-config"], "at most 10 digits"),
    (["--depth", "600000002", "--print-config"], "1 <= n <= 400"),
    (["--depth", "1" * 29, "--print-config"], "at most 10 digits"),
    (["--epochs", "1000000", "--print-config"], "from 1 to 100,000"),
    (["--batch-size", "1000000", "--print-config"], "from 1 to 65,536"),
    (["-o", "run.output_dir=" + "x" * 5000, "--print-config"], "at most 4096"),
])
def test_flags_are_bounded_before_any_work(argv, fragment):
    assert_one_line_error(dnsd(*argv), fragment)


@pytest.mark.slow
def test_a_yaml_file_of_nested_brackets_and_a_fifo_are_one_line_each(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("train: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert_one_line_error(dnsd("--config", str(deep), "--print-config"), "nests deeper than Python can read")
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    (tmp_path / "x.pdckpt").write_bytes(b"")  # read after the images are listed
    for argv in (["--config", fifo, "--print-config"], ["--data-file", fifo, *TINY_RUN],
                 ["predict", "--checkpoint", str(tmp_path / "x.pdckpt"), "--images", fifo]):
        result = subprocess.run([sys.executable, "-m", "DNSD", *argv], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert_one_line_error(result, f"{fifo} is a FIFO")


def test_an_output_that_is_a_device_is_never_replaced(trained_run, tmp_path):
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    image = tmp_path / "a.png"
    from test_predict import write_png

    write_png(str(image), np.zeros((3, 32, 32), np.uint8))
    assert_one_line_error(dnsd("predict", "--checkpoint", checkpoint, "--images", str(image), "--output",
                               "/dev/null"), "/dev/null is not a regular file", "leave out --output")
    fifo = str(tmp_path / "figure.png")
    os.mkfifo(fifo)
    assert_one_line_error(dnsd("plot", "--runs", trained_run[0], "--plot-file", fifo), "is not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_an_interrupted_reexport_is_refused_when_loaded(trained_run, tmp_path):
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    prefix = str(tmp_path / "export" / "model")
    assert dnsd("export", "--checkpoint", checkpoint, "--export-prefix", prefix).returncode == 0
    info = read_json(f"{prefix}-info.json")
    assert ".pdiparams" in info["files"]
    for suffix, digest in info["files"].items():
        assert hashlib.sha256(Path(prefix + suffix).read_bytes()).hexdigest() == digest
    assert not [name for name in os.listdir(tmp_path / "export") if name.startswith(".tmp-")]
    # New weights beside the old info file, as a kill between the two renames would leave them.
    with open(f"{prefix}.pdiparams", "r+b") as stream:
        stream.seek(100)
        stream.write(b"\x01\x02\x03\x04")
    image = tmp_path / "a.png"
    from test_predict import write_png

    write_png(str(image), np.zeros((3, 32, 32), np.uint8))
    assert_one_line_error(dnsd("predict", "--model", prefix, "--images", str(image)),
                          "are not the ones", "export the model again")


def test_an_info_file_naming_other_classes_is_refused(trained_run, tmp_path):
    prefix = str(tmp_path / "model")
    assert dnsd("export", "--checkpoint", trained_run[0], "--export-prefix", prefix).returncode == 0
    info = read_json(f"{prefix}-info.json")
    info["classes"] = ["a", "b", "c"]
    Path(f"{prefix}-info.json").write_text(json.dumps(info))
    image = tmp_path / "a.png"
    from test_predict import write_png

    write_png(str(image), np.zeros((3, 32, 32), np.uint8))
    assert_one_line_error(dnsd("predict", "--model", prefix, "--images", str(image)), "gives 10 classes",
                          "names 3")


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    from PIL import Image

    from DNSD.predict import read_image

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 to 65,520
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    pixels, converted = read_image(str(tmp_path / "grey16.png"), resize=True)
    assert converted and pixels.shape == (32, 32, 3)
    assert (pixels == 255).mean() < 0.01 and pixels.min() < 10 and pixels.max() > 240


@pytest.mark.slow
def test_any_locale_trains_with_a_unicode_run_folder(tiny_archive, tmp_path):
    env = {**os.environ, "LC_ALL": "POSIX", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    run_dir = str(tmp_path / "rün-é")
    result = subprocess.run([sys.executable, "-m", "DNSD", "--data-file", tiny_archive, "--output-dir", run_dir,
                             *TINY_RUN, "--epochs", "1"], cwd=ROOT, capture_output=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert os.path.isfile(os.path.join(run_dir, "summary.json"))


def test_damaged_run_folder_files_are_one_line_each(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (run_dir / name).write_text(Path(trained_run[0], name).read_text())
    (run_dir / "summary.json").write_text('{"test_error": ')
    assert_one_line_error(dnsd("summary", "--runs", str(run_dir)), "summary.json is damaged")
    assert_one_line_error(dnsd("plot", "--runs", str(run_dir), "--plot-file", str(tmp_path / "f.png")),
                          "summary.json is damaged")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "seeds.json").write_text("[1, 2")
    assert_one_line_error(dnsd("--resume", str(seeds)), "seeds.json is damaged")


def test_compare_with_identical_errors_gives_the_exact_difference():
    from DNSD.reporting.tables import comparison

    rows = [{"configuration": "a", "test_errors": [5.0, 5.0]}, {"configuration": "b", "test_errors": [6.0, 6.0]}]
    assert comparison(rows, "a", "b") == ("b - a: +1.00 points of test error, exactly: the runs of each row have the "
                                          "same test error, so there is no spread to give an interval")


def test_a_summary_lists_a_seed_that_another_command_has_only_begun(trained_run, tmp_path):
    import shutil

    folder = tmp_path / "sd"
    shutil.copytree(trained_run[0], folder / "seed-0")
    (folder / "seed-1").mkdir()
    shutil.copy(os.path.join(trained_run[0], "config.yaml"), folder / "seed-1" / "config.yaml")
    (folder / "seed-1" / "metrics.jsonl").write_text("")  # its first epoch still running
    result = dnsd("summary", "--runs", str(folder))
    assert result.returncode == 0, result.stderr
    assert f"Unfinished, not averaged: {folder / 'seed-1'}" in result.stdout


def test_a_resume_takes_a_checkpoint_after_an_epochs_last_step_and_refuses_a_step_beyond(trained_run):
    from DNSD.runs.checkpoint import check_resume_state, read_state, restore_model

    path = os.path.join(trained_run[0], "last.pdckpt")
    state = read_state(path)
    model = restore_model(state, path)
    state["epochs_done"], state["history"] = 1, state["history"][:1]  # saved within epoch 2, after its 5 steps
    state["step"] = 5
    check_resume_state(state, model, path, steps_per_epoch=5)
    state["step"] = 6
    with pytest.raises(InputError, match="its step, totals, history"):
        check_resume_state(state, model, path, steps_per_epoch=5)


def test_an_svhn_file_whose_header_lies_about_its_pixels_type_is_refused(tmp_path):
    import scipy.io

    from DNSD.datasets.svhn import read_part

    path = str(tmp_path / "train_32x32.mat")
    scipy.io.savemat(path, {"X": np.full((32, 32, 3, 4), 1000.0), "y": np.array([[1], [2], [3], [4]], np.uint8)},
                     do_compression=False)
    data = bytearray(Path(path).read_bytes())
    # X's array flags: a miUINT32 element of 8 bytes whose first byte is the class, mxDOUBLE (6) made mxUINT8 (9).
    flags = data.find(b"\x06\x00\x00\x00\x08\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00")
    data[flags + 8] = 9
    Path(path).write_bytes(bytes(data))
    assert scipy.io.whosmat(path)[0] == ("X", (32, 32, 3, 4), "uint8")
    with pytest.raises(InputError, match="stores its images as float64 although its header says uint8"):
        read_part(path)
