"""What a new user meets first: help per mode, runs that never collide, every command taking the folders DNSD
writes, readings that say what they are, and the quick check's training subset."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from DNSD.datasets.pipeline import Dataset, balanced_subset
from DNSD.errors import InputError
from DNSD.main import MODES, mode_parser
from DNSD.training.meters import estimate_line
from helpers import ROOT, TINY_RUN, assert_one_line_error, dnsd, read_jsonl


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


@pytest.mark.slow
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
    assert "| sd | 2 |" in Path(seeds_folder, "summary.md").read_text()
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


def test_a_checkpoint_path_that_does_not_exist_names_the_nearest_run_folder(trained_run, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(trained_run[0], runs / "quick-ResNet-20-val_size=500")
    shutil.copytree(trained_run[0], runs / "resnet110_sd-ResNet-110")
    result = dnsd("eval", "--checkpoint", "runs/quick-ResNet-20", cwd=str(tmp_path))
    assert_one_line_error(result, "--checkpoint runs/quick-ResNet-20 does not exist; the nearest run folder is "
                                  "runs/quick-ResNet-20-val_size=500")
    result = dnsd("eval", "--checkpoint", "runs/resnet110-sd-ResNet-110", cwd=str(tmp_path))
    assert_one_line_error(result, "the nearest run folder is runs/resnet110_sd-ResNet-110")
    result = dnsd("audit", "runs/quick-ResNet-20", cwd=str(tmp_path))  # the README's follow-up, as typed
    assert_one_line_error(result, "runs/quick-ResNet-20 holds no run", "the nearest run folder is "
                                  "runs/quick-ResNet-20-val_size=500")


def test_figure_3_of_a_run_without_test_errors_names_the_flag(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({key: value for key, value in record.items() if key != "test_error"}) + "\n" for record in records))
    result = dnsd("plot", "--runs", str(run_dir), "--figure", "test-error", "--plot-file", str(tmp_path / "f.png"))
    assert_one_line_error(result, "as configs/quick.yaml does", "train with --test-every-epoch")


def test_the_resume_hint_names_the_command_the_user_typed(tmp_path, monkeypatch):
    from DNSD.training.run import this_command

    installed = tmp_path / "bin" / "dnsd"
    installed.parent.mkdir()
    installed.write_text("#!/bin/sh\n")
    installed.chmod(0o755)
    monkeypatch.delenv("DNSD_PROGRAM", raising=False)
    monkeypatch.setattr(sys, "argv", [str(installed), "train"])
    monkeypatch.setenv("PATH", f"{installed.parent}:{os.environ['PATH']}")
    assert this_command() == "dnsd"
    monkeypatch.setenv("PATH", "/nowhere")
    assert this_command() == str(installed)  # not on PATH: the path it was started by
    monkeypatch.setattr(sys, "argv", ["/repo/DNSD/main.py"])
    assert this_command() == f"{sys.executable} -m DNSD"
    monkeypatch.setenv("DNSD_PROGRAM", "bash run.sh")
    assert this_command() == "bash run.sh"
    assert 'DNSD_PROGRAM="bash run.sh"' in Path(ROOT, "run.sh").read_text()


def test_a_run_of_many_steps_says_early_what_the_whole_run_costs(tiny_archive, tmp_path):
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(tmp_path / "run"), "--depth", "8", "--epochs", "3",
                  "--batch-size", "8", "--val-size", "40")
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if "epochs left take about" in line]
    speed = float(re.search(r"at (\d+) images/s", line).group(1))
    minutes = int(re.search(r"about (\d+) minutes?", line).group(1))
    # 160 training images a epoch, of which the first epoch's were seen when the estimate was made.
    assert "the 3 epochs left" in line and minutes == math.ceil((3 * 160 - 160) / speed / 60)
    assert result.stdout.index(line) < result.stdout.index("epoch 1/3")


def test_one_epoch_and_one_minute_are_said_in_the_singular(tiny_archive, tmp_path):
    meter = types.SimpleNamespace(images_per_second=100.0, seen=0)
    assert estimate_line(meter, 60, 1).endswith("the epoch left takes about 1 minute of training, besides evaluation")
    assert "the 2 epochs left take about 1 minute of" in estimate_line(meter, 60, 2)
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(tmp_path / "run"), *TINY_RUN[:4], "--epochs", "1",
                  *TINY_RUN[6:])
    assert result.returncode == 0, result.stderr
    assert "test images, 1 epoch on cpu" in result.stdout


def test_percentages_are_one_division_and_read_as_typed():
    from DNSD.training.evaluation import percent

    assert percent(142, 1000) == 14.2 and json.dumps(percent(142, 1000)) == "14.2"
    assert all(float(f"{percent(count, 1000):.3f}") == percent(count, 1000) for count in range(1001))


def test_info_names_the_packages_of_export_and_predict():
    result = dnsd("info", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    for package in ("paddle2onnx:", "onnx:", "onnxruntime:", "Pillow:"):
        assert any(line.startswith(package) for line in result.stdout.splitlines()), package


def test_the_docs_list_every_hub_entry_and_a_depth_8_run_loads_through_the_hub(trained_run):
    import paddle

    from DNSD.config import hub_configs

    text = Path(ROOT, "docs", "using-a-model.md").read_text()
    listed = re.findall(r"`([\w.]+)`", text[text.index("<!-- hub entries -->"):text.index("<!-- end -->")])
    assert listed == sorted(hub_configs())
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    network = paddle.hub.load(ROOT, "from_checkpoint", source="local", checkpoint=checkpoint)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    import DNSD

    expected = DNSD.load_checkpoint(checkpoint).predict(images)
    logits = network(paddle.to_tensor(network.normalize(images.transpose(0, 3, 1, 2))))
    assert np.allclose(paddle.nn.functional.softmax(logits).numpy(), expected, atol=1e-6)
    with pytest.raises(InputError, match="load it with the entry 'from_checkpoint'"):
        paddle.hub.load(ROOT, "resnet110_sd", source="local", checkpoint=checkpoint)


def test_the_test_command_says_why_a_test_is_skipped(tmp_path):
    (tmp_path / "test_skipped.py").write_text("import pytest\n\n\ndef test_it():\n    pytest.skip('a reason')\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", os.path.join(ROOT, "pytest.ini"),
                             "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert "SKIPPED [1]" in result.stdout and "a reason" in result.stdout, result.stdout
    # The README's command runs pytest from the repository's root, which reads that pytest.ini.
    assert 'cd "$root"' in Path(ROOT, "scripts", "test.sh").read_text()


def test_the_suite_writes_nothing_into_the_users_home():
    import pwd

    import paddle

    home = os.environ["HOME"]
    assert home != pwd.getpwuid(os.getuid()).pw_dir and os.path.basename(home).startswith("dnsd-tests-home-")
    assert paddle.dataset.common.DATA_HOME.startswith(home)


def test_a_wrong_image_layout_is_named_with_the_transpose_that_fixes_it(trained_run):
    import DNSD

    trained = DNSD.load_checkpoint(os.path.join(trained_run[0], "best.pdckpt"))
    channels_first = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"of shape \(2, 3, 32, 32\): pass images.transpose\(0, 2, 3, 1\)"):
        trained.predict(channels_first)
    with pytest.raises(ValueError, match=r"got shape \(2, 32, 32, 3\): pass images.transpose\(0, 3, 1, 2\)"):
        trained.normalize(channels_first.transpose(0, 2, 3, 1))
    assert trained.normalize(channels_first).shape == (2, 3, 32, 32)
    assert trained.predict(channels_first.transpose(0, 2, 3, 1)).shape == (2, 10)


def test_the_readmes_follow_up_commands_name_the_folder_its_example_wrote():
    readme = Path(ROOT, "README.md").read_text()
    folder = re.search(r"run folder (runs/quick-\S+)$", readme, re.MULTILINE).group(1)
    follow_up = readme[readme.index("Your numbers on the whole archive differ"):readme.index("## The modes")]
    assert f"`{folder}`" in follow_up


def test_the_real_archive_of_the_tests_can_be_named_by_a_variable(tmp_path):
    program = "import helpers; print(helpers.MINI_ARCHIVE)"
    env = {**os.environ, "DNSD_TEST_ARCHIVE": "cifar-10-python.tar.gz"}
    named = subprocess.run([sys.executable, "-c", program], cwd=os.path.join(ROOT, "tests"), env=env,
                           capture_output=True, text=True, timeout=60)
    assert named.stdout.strip() == os.path.join(ROOT, "tests", "cifar-10-python.tar.gz")


@pytest.mark.parametrize("page, first", [("runs.md", "Resuming, and reproducibility"), ("installing.md", "On a CPU")])
def test_the_run_and_install_pages_open_with_what_a_user_does(page, first):
    headings = re.findall(r"^## (.+)$", Path(ROOT, "docs", page).read_text(), re.MULTILINE)
    assert headings[0] == first
