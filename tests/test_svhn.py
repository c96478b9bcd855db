"""SVHN (`--dataset svhn`): the official MATLAB files, the authors' validation split, points every N iterations
(run.eval_every_iterations), and bad files refused in one line. The files are small synthetic ones in the official
layout:
X of shape 32x32x3xN uint8, y of shape Nx1 with labels 1..10 (10 for the digit 0)."""
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from DNSD.datasets import svhn
from DNSD.datasets.pipeline import _std_of_uint8
from DNSD.errors import InputError
from DNSD.randomness import generator
from helpers import assert_one_line_error, dnsd, read_json, read_jsonl

SIZES = {"train": 60, "extra": 40, "test": 30}


def write_mat(path, count, seed=0, labels=None, **variables):
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 10 + 1) if labels is None else labels
    contents = {"X": rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8),
                "y": np.asarray(labels, np.uint8).reshape(-1, 1), **variables}
    scipy.io.savemat(path, contents)
    return contents


def write_folder(folder, parts=("train", "extra", "test")):
    os.makedirs(folder, exist_ok=True)
    return {part: write_mat(os.path.join(folder, f"{part}_32x32.mat"), SIZES[part], seed=index)
            for index, part in enumerate(parts)}


@pytest.fixture(scope="module")
def svhn_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("svhn"))
    write_folder(folder)
    return folder


def test_images_are_read_channel_first_and_the_label_10_is_the_digit_0(tmp_path):
    stored = write_mat(str(tmp_path / "train_32x32.mat"), 20, labels=[10, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 2)
    images, labels = svhn.read_part(str(tmp_path / "train_32x32.mat"))
    assert images.dtype == np.uint8 and images.shape == (20, 3, 32, 32)
    # Pixel (row 5, column 7) of channel 2 of image 13 is X[5, 7, 2, 13].
    assert images[13, 2, 5, 7] == stored["X"][5, 7, 2, 13]
    assert np.array_equal(images[4].transpose(1, 2, 0), stored["X"][:, :, :, 4])
    assert labels.tolist() == list(range(10)) * 2


def test_training_images_are_train_then_extra_as_uint8(svhn_folder):
    train, test, classes, identity = svhn.read(type("Data", (), {"data_file": svhn_folder, "extra": True})())
    assert (len(train), len(test), train.train_count) == (100, 30, 60)
    assert train.images.dtype == np.uint8 and list(classes) == [str(digit) for digit in range(10)]
    extra_images, _ = svhn.read_part(os.path.join(svhn_folder, "extra_32x32.mat"))
    assert np.array_equal(train.images[60:], extra_images)
    alone, _, _, other = svhn.read(type("Data", (), {"data_file": svhn_folder, "extra": False})())
    assert len(alone) == 60 and other["sha256"] != identity["sha256"]


def origin_counts(chosen, train_count, labels):
    """{(part, digit): count} of the chosen indices."""
    counts = {}
    for index in chosen:
        key = ("train" if index < train_count else "extra", int(labels[index]))
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_the_validation_split_takes_two_thirds_of_each_class_from_train_and_one_third_from_extra():
    labels = np.random.default_rng(1).integers(0, 10, 500)
    images = np.arange(500, dtype=np.uint32).view(np.uint8).reshape(500, 4)  # each image says its index
    train = svhn.TrainAndExtra(images, labels, 300)
    rest, val = svhn.split(train, 60, generator(0, "split"))
    indices = [int(row.view(np.uint32)[0]) for row in val.images]
    assert len(val) == 60 and len(rest) == 440
    assert origin_counts(indices, 300, labels) == {**{("train", d): 4 for d in range(10)},
                                                   **{("extra", d): 2 for d in range(10)}}
    assert not set(indices) & {int(row.view(np.uint32)[0]) for row in rest.images}
    # "The first k of each class in the shuffled set": the same seed gives the same split, another seed another.
    assert np.array_equal(svhn.split(train, 60, generator(0, "split"))[1].images, val.images)
    assert not np.array_equal(svhn.split(train, 60, generator(1, "split"))[1].images, val.images)
    order = generator(0, "split").permutation(300)
    first_of_each = [int(i) for digit in range(10) for i in order[labels[order] == digit][:4]]
    assert sorted(first_of_each) == sorted(i for i in indices if i < 300)


def test_without_extra_the_validation_split_takes_each_class_equally_from_train():
    labels = np.arange(200) % 10
    train = svhn.TrainAndExtra(np.zeros((200, 3, 32, 32), np.uint8), labels, 200)
    rest, val = svhn.split(train, 50, generator(0, "split"))
    assert np.bincount(val.labels).tolist() == [5] * 10 and len(rest) == 150


@pytest.mark.parametrize("val_size, extra, fragment", [(50, True, "multiple of 30, e.g. 6000"),
                                                       (45, False, "multiple of 10"),
                                                       (300, True, "fewer than the 20")])
def test_a_validation_size_the_rule_cannot_give_is_refused(val_size, extra, fragment):
    labels = np.arange(150) % 10
    train = svhn.TrainAndExtra(np.zeros((150, 3, 32, 32), np.uint8), labels, 100 if extra else 150)
    with pytest.raises(InputError, match=fragment):
        svhn.split(train, val_size, generator(0, "split"))


def test_the_std_of_many_pixels_is_counted_in_chunks_and_exact():
    values = np.random.default_rng(2).integers(0, 256, (1 << 24) + 12345, dtype=np.uint8)
    assert _std_of_uint8(values) == pytest.approx(float(np.std(values)), rel=1e-12)


@pytest.fixture(scope="module")
def point_run(svhn_folder, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "svhn")
    result = dnsd("--dataset", "svhn", "--data-file", svhn_folder, "--val-size", "30", "--no-augment", "--depth", "8",
                  "--epochs", "2", "--batch-size", "16", "--eval-every-iterations", "3", "--output-dir", run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_points_every_n_steps_choose_the_best_checkpoint(point_run):
    run_dir, result = point_run
    points = read_jsonl(os.path.join(run_dir, "points.jsonl"))
    summary = read_json(os.path.join(run_dir, "summary.json"))
    # 70 training images in steps of 16: 5 steps an epoch, 10 in all; points every 3 steps, none of its own at the
    # last (the authors' protocol).
    assert [point["iteration"] for point in points] == [3, 6, 9]
    assert [(point["epoch"], point["step"]) for point in points] == [(1, 3), (2, 1), (2, 4)]
    lowest = min(point["val_error"] for point in points)
    best = next(point for point in points if point["val_error"] == lowest)  # the earliest of the ties
    assert (summary["best_iteration"], summary["best_val_error"]) == (best["iteration"], lowest)
    assert summary["tied_best_iterations"] == [p["iteration"] for p in points if p["val_error"] == lowest]
    # The reported test error is best.pdckpt's, evaluated again: the point's own.
    assert summary["test_error"] == best["test_error"]
    assert f"best step {best['iteration']} (epoch {best['epoch']})" in result.stdout


def test_an_svhn_checkpoint_evaluates_on_the_svhn_test_set(point_run, svhn_folder):
    run_dir, _ = point_run
    result = dnsd("--mode", "eval", "--checkpoint", os.path.join(run_dir, "best.pdckpt"), "--data-file", svhn_folder)
    assert result.returncode == 0, result.stderr
    summary = read_json(os.path.join(run_dir, "summary.json"))
    assert f"test error {summary['test_error']:.2f} %" in result.stdout and "on 30 images" in result.stdout


def test_no_extra_trains_without_the_extra_file(tmp_path):
    folder = str(tmp_path / "svhn")
    write_folder(folder, ("train", "test"))
    result = dnsd("--dataset", "svhn", "--data-file", folder, "--no-extra", "--val-size", "20", "--depth", "8",
                  "--epochs", "1", "--batch-size", "20", "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "40 train / 20 val / 30 test images" in result.stdout


BAD_FILES = {
    "not a MATLAB file": (lambda path: Path(path).write_bytes(b"not a mat file" * 100), "as a MATLAB file"),
    "X of another shape": (lambda path: scipy.io.savemat(path, {"X": np.zeros((28, 28, 1, 10), np.uint8),
                                                               "y": np.ones((10, 1), np.uint8)}), "(28, 28, 1, 10)"),
    "float images": (lambda path: scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 10)),
                                                         "y": np.ones((10, 1), np.uint8)}), "X is double"),
    "labels out of range": (lambda path: write_mat(path, 10, labels=[0] * 10), "integers in 1..10"),
    "no labels": (lambda path: scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 10), np.uint8)}), "it holds X"),
    # 50,000 zero images compress to a few kB: reading them would take 150 MB that the file does not hold.
    "compressed": (lambda path: scipy.io.savemat(path, {"X": np.zeros((32, 32, 3, 50000), np.uint8),
                                                       "y": np.ones((50000, 1), np.uint8)}, do_compression=True),
                   "compressed into a smaller file"),
}


@pytest.mark.parametrize("problem", BAD_FILES)
def test_a_bad_file_is_one_line_naming_it(problem, tmp_path):
    folder = str(tmp_path / "svhn")
    write_folder(folder)
    make, fragment = BAD_FILES[problem]
    os.remove(os.path.join(folder, "extra_32x32.mat"))
    make(os.path.join(folder, "extra_32x32.mat"))
    result = dnsd("--dataset", "svhn", "--data-file", folder, "--val-size", "30", "--depth", "8", "--epochs", "1",
                  "--output-dir", str(tmp_path / "run"))
    assert_one_line_error(result, "extra_32x32.mat", fragment)
    assert not os.path.exists(tmp_path / "run")


def test_missing_files_and_keys_of_other_data_sets_are_refused(tmp_path, tiny_archive):
    folder = str(tmp_path / "svhn")
    write_folder(folder, ("train", "test"))
    common = ("--depth", "8", "--epochs", "1", "--output-dir", str(tmp_path / "run"))
    assert_one_line_error(dnsd("--dataset", "svhn", "--data-file", folder, *common), "extra_32x32.mat does not exist",
                          "--no-extra")
    assert_one_line_error(dnsd("--dataset", "svhn", "--data-file", tiny_archive, *common), "from a folder holding")
    assert_one_line_error(dnsd("--data-file", tiny_archive, "--no-extra", *common), "data.extra", "--dataset svhn")
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_a_failed_download_says_where_to_put_the_files(tmp_path):
    unreachable = svhn.SvhnSource(url="http://127.0.0.1:9/")
    with pytest.raises(InputError, match="cannot download train_32x32.mat") as error:
        svhn.locate_files(None, ("train", "test"), unreachable, download_dir=str(tmp_path / "cache"))
    assert str(tmp_path / "cache") in str(error.value) and "--data-file FOLDER" in str(error.value)


def test_the_shipped_svhn_configs_are_the_authors_recipe():
    from DNSD.config import shipped_config
    from DNSD.training.optimizer import decay_epochs

    for name, survival_last in (("resnet152_sd_svhn", 0.5), ("resnet152_baseline_svhn", 1.0)):
        config = shipped_config(name)
        assert (config.data.dataset, config.data.val_size, config.data.augment, config.data.extra) == \
            ("svhn", 6000, False, True)
        assert (config.model.depth, config.model.survival_last, config.train.epochs) == (152, survival_last, 50)
        assert [epoch + 1 for epoch in decay_epochs(config.train)] == [30, 35]
        assert config.run.eval_every_iterations == 200
        # The model behind the published numbers: the 2016 code's initialisation and shortcut.
        assert (config.model.bn_weight_init, config.model.shortcut_downsample) == ("uniform", "subsample")
