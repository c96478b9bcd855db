"""What a new user meets first: help per mode, runs that never collide, every command taking the folders DNSD
writes, readings that say what they are, and the quick check's training subset."""
import os
import re

import numpy as np
import pytest

from DNSD.datasets.pipeline import Dataset, balanced_subset
from DNSD.errors import InputError
from DNSD.main import MODES, mode_parser
from helpers import TINY_RUN, assert_one_line_error, dnsd


def own_flags(mode):
    return {flag for flag in mode_parser(mode)[0]._option_string_actions if flag.startswith("--")}


def test_the_top_help_lists_every_mode_in_a_line():
    result = dnsd("--help")
    assert result.returncode == 0
    for mode, (_, summary) in MODES.items():
        assert f"  {mode:<9}{summary}" in result.stdout.splitlines()
    assert "--epochs" not in result.stdout and "--top-k" not in result.stdout


@pytest.mark.parametrize("mode, theirs, not_theirs", [
    ("train", {"--epochs", "--resume", "--seeds", "--data-file"}, {"--top-k", "--checkpoint", "--runs"}),
    ("eval", {"--checkpoint", "--split", "--data-file", "--device"}, {"--epochs", "--top-k", "--runs", "--depth"}),
    ("predict", {"--images", "--top-k", "--model", "--device"}, {"--epochs", "--split", "--data-file"}),
    ("plot", {"--runs", "--figure", "--plot-file"}, {"--epochs", "--config", "--checkpoint"}),
    ("summary", {"--runs", "--compare", "--summary-file"}, {"--figure", "--epochs"}),
    ("info", {"--device", "--cpu-threads"}, {"--epochs", "--checkpoint"}),
])
def test_each_mode_lists_its_own_flags_only(mode, theirs, not_theirs):
    both = [dnsd(mode, "--help"), dnsd("--mode", mode, "--help")]
    assert both[0].stdout == both[1].stdout and both[0].returncode == 0
    assert theirs <= own_flags(mode) and not not_theirs & own_flags(mode)
    assert not {flag for flag in not_theirs if re.search(rf"{flag}(?![\w-])", both[0].stdout)}


def test_train_help_groups_the_config_flags_by_section():
    text = dnsd("train", "--help").stdout
    headings = [line for line in text.splitlines() if line.endswith("keys (also -o SECTION.KEY=VALUE):".replace(
        "SECTION", line.split(" ")[0]))]
    assert [heading.split(" ")[0] for heading in headings] == ["data", "model", "train", "run"]


def test_a_flag_of_another_mode_is_refused_naming_its_mode():
    assert_one_line_error(dnsd("eval", "--checkpoint", "x", "--epochs", "3"),
                          "--epochs is a flag of dnsd train, not of dnsd eval")
    assert_one_line_error(dnsd("--depth", "8", "--top-k", "3"), "--top-k is a flag of dnsd predict")
    assert_one_line_error(dnsd("train", "--epoch", "3"), "has no flag --epoch; did you mean --epochs?")


def test_two_trainings_without_output_dir_get_their_own_folders(tiny_archive, tmp_path):
    run = ["--data-file", tiny_archive, "--device", "cpu", "--depth", "8", "--epochs", "1", "--batch-size", "32",
           "--val-size", "40"]
    folders = []
    for extra in ([], [], ["--config", "quick", "--train-images", "100", "--seed", "3"]):
        result = dnsd(*run, *extra, cwd=str(tmp_path))
        assert result.returncode == 0, result.stderr
        folders.append(re.search(r"run folder (\S+)$", result.stdout.splitlines()[0]).group(1))
        assert result.stdout.splitlines()[-1].endswith(f"({folders[-1]}/best.pdckpt)")
    # The flags in the order the config declares them, whatever order they were typed in.
    assert folders == ["runs/resnet110_sd-ResNet-8-val_size=40-epochs=1-batch_size=32",
                       "runs/resnet110_sd-ResNet-8-val_size=40-epochs=1-batch_size=32-2",
                       "runs/quick-ResNet-8-val_size=40-train_images=100-epochs=1-batch_size=32-seed=3"]


def test_plot_summary_and_eval_take_every_kind_of_folder(trained_run, seeds_folder, tiny_archive, tmp_path):
    run_dir = trained_run[0]
    parent = os.path.dirname(seeds_folder)
    for runs in ([run_dir], [seeds_folder], [parent]):
        for figure in ("curves", "test-error"):
            result = dnsd("plot", "--runs", *runs, "--figure", figure, "--plot-file", str(tmp_path / "f.png"))
            assert result.returncode == 0, (runs, result.stderr)
    summary = dnsd("summary", "--runs", parent)
    assert summary.returncode == 0, summary.stderr
    # Beside the runs: seed-0 and seed-1 are in the --seeds folder.
    assert summary.stdout.splitlines()[-1] == (f"written to {seeds_folder}/summary.md and "
                                               f"{seeds_folder}/summary.csv")
    assert "| sd | 2 |" in open(os.path.join(seeds_folder, "summary.md")).read()
    evaluated = dnsd("eval", "--checkpoint", run_dir, "--data-file", tiny_archive)
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stderr.strip() == (f"DNSD: --checkpoint {run_dir} is a run folder: using its best checkpoint, "
                                        f"{run_dir}/best.pdckpt")
    assert_one_line_error(dnsd("eval", "--checkpoint", seeds_folder), "holds a sweep's runs", "seed-0")
    heatmap = ["--figure", "heatmap", "--plot-file", str(tmp_path / "h.png")]
    assert_one_line_error(dnsd("plot", "--runs", seeds_folder, *heatmap), "it sweeps no key (seeds alone)")


def test_the_per_class_figures_are_labelled_accuracies(trained_run, tiny_archive):
    lines = dnsd("eval", "--checkpoint", os.path.join(trained_run[0], "best.pdckpt"),
                 "--data-file", tiny_archive).stdout.splitlines()
    assert lines[1] == "per-class accuracy:" and lines[2].startswith("  airplane")


def test_the_quick_subset_takes_the_first_images_of_each_class_in_turn():
    labels = np.array([2, 0, 0, 1, 0, 2, 1, 0, 0, 2])
    split = Dataset(np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1), labels)
    # By hand: the first image of each class (1, 3, 0), then the second of each (2, 6, 5), then the third...
    assert balanced_subset(split, 6).images.ravel().tolist() == [0, 1, 2, 3, 5, 6]
    assert balanced_subset(split, 8).images.ravel().tolist() == [0, 1, 2, 3, 4, 5, 6, 9]
    with pytest.raises(InputError, match="has 10 images"):
        balanced_subset(split, 11)


def test_train_images_keeps_validation_and_test_whole(tiny_archive, tmp_path):
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(tmp_path / "run"), *TINY_RUN, "--epochs", "1",
                  "--train-images", "50")
    assert result.returncode == 0, result.stderr
    assert "50 train / 40 val / 40 test images" in result.stdout
