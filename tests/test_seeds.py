"""Several seeds in one command (`--seeds`), a sweep without a grid: one run per seed, each the same as a run of that
seed alone, the summary at the end, `--resume` of the folder going on with the seeds that are not finished, and the
folders of DNSD 1.1's --seeds (seeds.json) read as such a sweep."""
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cifar_archive import synthetic_batches, write_archive
from DNSD.errors import InputError
from DNSD.runs.checkpoint_file import read_checkpoint
from DNSD.sweeps.grid import parse_seeds
from helpers import TINY_RUN, assert_one_line_error, dnsd, read_json

ONE_EPOCH = [*TINY_RUN[:4], "--epochs", "1", *TINY_RUN[6:]]
SEEDS_RUN = [*TINY_RUN, "--epochs", "1"]  # the flags of the seeds_folder fixture


@pytest.mark.parametrize("text, seeds", [("0,1,2", [0, 1, 2]), ("0-3", [0, 1, 2, 3]), ("0-2,7", [0, 1, 2, 7]),
                                         ("5", [5])])
def test_seeds_are_a_list_or_a_range(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["a", "1,1", "0-x", "", "-1"])
def test_bad_seeds_are_refused(text):
    with pytest.raises(InputError, match="--seeds"):
        parse_seeds(text)


def model_arrays(run_dir):
    return read_checkpoint(os.path.join(run_dir, "last.pdckpt"))["model"]


@pytest.mark.slow
def test_a_multi_seed_run_is_its_seeds_alone_and_resumes_what_is_unfinished(seeds_folder, tiny_archive, tmp_path):
    folder = tmp_path / "sd"
    shutil.copytree(seeds_folder, folder)
    assert read_json(folder / "sweep.json")["seeds"] == [0, 1]
    alone = tmp_path / "alone"
    assert dnsd("--data-file", tiny_archive, "--output-dir", str(alone), *SEEDS_RUN, "--seed", "1").returncode == 0
    ours, theirs = model_arrays(folder / "seed-1"), model_arrays(alone)
    assert all(np.array_equal(ours[name], theirs[name]) for name in theirs)
    assert "| sd | 2 |" in (folder / "summary.md").read_text()
    shutil.rmtree(folder / "seed-1")  # as if the command had been stopped before seed 1
    finished = os.stat(folder / "seed-0" / "last.pdckpt").st_mtime_ns
    again = dnsd("--resume", str(folder))
    assert again.returncode == 0, again.stderr
    assert os.stat(folder / "seed-0" / "last.pdckpt").st_mtime_ns == finished
    assert all(np.array_equal(model_arrays(folder / "seed-1")[name], theirs[name]) for name in theirs)
    assert "| sd | 2 |" in again.stdout


@pytest.mark.slow
def test_seeds_of_another_config_are_refused_in_the_same_folder(seeds_folder, tiny_archive, tmp_path):
    folder = tmp_path / "sd"
    shutil.copytree(seeds_folder, folder)
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(folder), *SEEDS_RUN, "--seeds", "2", "--lr", "0.5")
    assert_one_line_error(result, "holds a sweep of another config")
    assert_one_line_error(dnsd("--resume", str(folder), "--seeds", "1"), "leave out --seeds")
    assert_one_line_error(dnsd("--resume", str(folder), "--lr", "0.5"), "train.lr is 0.1", "cannot change it")
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(folder / "seed-0"), *SEEDS_RUN, "--seeds", "1")
    assert_one_line_error(result, "holds a run of its own")
    assert read_json(folder / "sweep.json")["seeds"] == [0, 1] and not (folder / "seed-2").exists()


@pytest.mark.slow
def test_the_sweep_keeps_the_archive_and_another_one_is_refused(tiny_archive, tmp_path):
    folder = tmp_path / "sd"
    copy = tmp_path / "data" / "copy.tar.gz"
    copy.parent.mkdir()
    shutil.copy(tiny_archive, copy)
    result = dnsd("--data-file", "copy.tar.gz", "--output-dir", str(folder), *ONE_EPOCH, "--seeds", "0",
                  cwd=str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    recorded = read_json(folder / "sweep.json")
    assert recorded["config"]["data"]["data_file"] == str(copy)  # resolved, so a resume from elsewhere finds it
    assert recorded["data_sha256"] == hashlib.sha256(Path(tiny_archive).read_bytes()).hexdigest()
    other = write_archive(str(tmp_path / "other.tar.gz"), synthetic_batches(40, seed=5, learnable=True))
    assert_one_line_error(dnsd("--resume", str(folder), "--data-file", other), "is not the archive the sweep in",
                          "pass that archive")
    assert_one_line_error(dnsd("--data-file", other, "--output-dir", str(folder), *ONE_EPOCH, "--seeds", "1"),
                          "is not the archive the sweep in")


OLD_FOLDER = os.path.join(os.path.dirname(__file__), "data", "seeds-folder-1.1.0")
OLD_RUN = ["--depth", "8", "--epochs", "1", "--batch-size", "32", "--val-size", "40"]


def old_seeds_folder(folder, archive):
    """The text files of a folder that DNSD 1.1.0's `--seeds 0,1` wrote (OLD_RUN on the tiny archive), its
    checkpoints left out and seed 1 removed, as if the command had stopped before it; @...@ stand for its paths."""
    values = {"@ARCHIVE@": archive, "@FOLDER@": str(folder),
              "@ARCHIVE_SHA256@": hashlib.sha256(Path(archive).read_bytes()).hexdigest()}
    for path, _, names in os.walk(OLD_FOLDER):
        for name in names:
            text = Path(path, name).read_text()
            for placeholder, value in values.items():
                text = text.replace(placeholder, value)
            target = folder / os.path.relpath(os.path.join(path, name), OLD_FOLDER)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    return folder


@pytest.mark.slow
def test_a_folder_of_dnsd_1_1s_seeds_goes_on_as_a_sweep_without_a_grid(tiny_archive, tmp_path):
    folder = old_seeds_folder(tmp_path / "sd", tiny_archive)
    summary = (folder / "seed-0" / "summary.json").read_text()
    other = write_archive(str(tmp_path / "other.tar.gz"), synthetic_batches(40, seed=5, learnable=True))
    assert_one_line_error(dnsd("--resume", str(folder), "--data-file", other), "is not the archive the sweep in")
    assert_one_line_error(dnsd("--data-file", tiny_archive, "--output-dir", str(folder), *OLD_RUN, "--seeds", "2",
                               "--lr", "0.5"), "holds a sweep of another config")
    assert not (folder / "sweep.json").exists()  # a refused command records nothing
    result = dnsd("--resume", str(folder))
    assert result.returncode == 0, result.stderr
    assert read_json(folder / "sweep.json")["seeds"] == [0, 1]
    assert (folder / "seed-0" / "summary.json").read_text() == summary  # finished, left as it was
    alone = tmp_path / "alone"
    # Alone, on the model DNSD 1.1 trained by default, which the folder's config records.
    assert dnsd("--data-file", tiny_archive, "--output-dir", str(alone), *OLD_RUN, "--seed", "1", "-o",
                "model.bn_weight_init=ones", "-o", "model.shortcut_downsample=average").returncode == 0
    ours, theirs = model_arrays(folder / "seed-1"), model_arrays(alone)
    assert all(np.array_equal(ours[name], theirs[name]) for name in theirs)
    assert "| sd | 2 |" in (folder / "summary.md").read_text()
