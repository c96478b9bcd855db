"""The paper's Figure 7 (gradient magnitudes recorded in training) and Figure 8's right panel (a two-key sweep's heat
map), and the grid table of a two-key sweep's summary."""
import copy
import json
import os
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from DNSD.config import build_config
from DNSD.datasets import Splits
from DNSD.datasets.pipeline import Dataset, Normalizer
from DNSD.models import build_model
from DNSD.reporting.figures import draw_gradients, draw_heatmap
from DNSD.sweeps.grid import open_sweep, read_sweep, sweep_runs
from DNSD.training.loop import Trainer
from DNSD.training.meters import TrainingMeter
from helpers import TINY_RUN, assert_one_line_error, dnsd

WATCHED = ["stem.weight", "stage1.weight", "stage2.weight", "stage3.weight"]


def test_a_steps_recorded_magnitude_is_the_mean_absolute_gradient_of_its_mini_batchs_loss(tmp_path):
    paddle.seed(0)
    config = build_config({"model.depth": 8, "model.survival_last": 1.0, "train.batch_size": 16})  # every gate open
    model = build_model(config.model, 10)
    twin = copy.deepcopy(model)
    rng = np.random.default_rng(0)
    pixels, labels = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 16)
    batch = Dataset(pixels, labels)
    trainer = Trainer(config, str(tmp_path), Splits(batch, batch, batch, Normalizer.fit(pixels)), model)
    model.train(), twin.train()
    images = paddle.to_tensor(trainer.data.normalizer(pixels))
    trainer.train_step(images, paddle.to_tensor(labels), 16)
    trainer.read_steps()
    twin.begin_step(config.run.seed, 1, 0, 16)
    F.cross_entropy(twin(images), paddle.to_tensor(labels)).backward()
    expected = {"stem.weight": twin.stem[0].weight.grad, "stage1.weight": twin.blocks[0].residual[0].weight.grad,
                "stage2.weight": twin.blocks[1].residual[0].weight.grad,
                "stage3.weight": twin.blocks[2].residual[0].weight.grad}
    assert sorted(trainer.meter.gradients) == sorted(expected)
    for name, gradient in expected.items():
        assert trainer.meter.gradients[name] == pytest.approx(float(np.abs(gradient.numpy()).mean()), rel=1e-5)


def test_an_epochs_record_is_the_mean_over_its_steps():
    meter = TrainingMeter()
    meter.add(2.0, 1, 3, 4, 0.1, {"stem.weight": 0.3})
    meter.add(2.0, 1, 3, 4, 0.1, {"stem.weight": 0.1})
    assert meter.record(1, 50.0, 0.1, 0.0)["gradients"] == {"stem.weight": pytest.approx(0.2)}


@pytest.fixture(scope="module")
def two_configurations(tiny_archive, tmp_path_factory):
    """Constant depth and stochastic depth, seeds 0 and 1 of each in FOLDER/seed-K, two epochs each with the
    learning rate divided after the first."""
    folders = []
    for survival in ("1", "0.5"):
        folder = str(tmp_path_factory.mktemp("figure7") / f"p{survival}")
        for seed in (0, 1):
            result = dnsd("train", "--data-file", tiny_archive, "--output-dir", os.path.join(folder, f"seed-{seed}"),
                          *TINY_RUN, "--survival-last", survival, "--seed", str(seed))
            assert result.returncode == 0, result.stderr
        folders.append(folder)
    return folders


def records(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


@pytest.mark.slow
def test_constant_and_stochastic_depth_record_every_watched_tensor_each_epoch(two_configurations):
    for folder in two_configurations:
        for record in records(os.path.join(folder, "seed-0")):
            assert sorted(record["gradients"]) == sorted(WATCHED)
            assert all(value > 0 for value in record["gradients"].values())


@pytest.mark.slow
def test_figure_7_draws_each_configurations_mean_on_a_log_axis_with_the_drops_dotted(two_configurations, tmp_path):
    axis = draw_gradients(two_configurations).axes[0]
    assert axis.get_yscale() == "log" and axis.get_xlabel() == "epoch" and "stem.weight" in axis.get_ylabel()
    lines = [line for line in axis.get_lines() if line.get_linestyle() == "-"]
    for line, folder in zip(lines, two_configurations):
        seeds = [[record["gradients"]["stem.weight"] for record in records(os.path.join(folder, f"seed-{seed}"))]
                 for seed in (0, 1)]
        assert list(line.get_ydata()) == pytest.approx(np.mean(seeds, axis=0))
    dotted = [line for line in axis.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in dotted] == [2]  # lr_decay_at 0.5, 0.75 of 2 epochs: one drop, at 2
    path = tmp_path / "figure7.png"
    assert dnsd("plot", "--runs", *two_configurations, "--figure", "gradients", "--tensor", "stage2.weight",
                "--plot-file", str(path)).returncode == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_figure_7_of_runs_without_records_names_what_is_missing(two_configurations, tmp_path):
    run_dir = tmp_path / "old"
    os.makedirs(run_dir)
    for name in ("config.yaml",):
        Path(run_dir / name).write_text(Path(two_configurations[0], "seed-0", name).read_text())
    with open(run_dir / "metrics.jsonl", "w") as stream:
        for record in records(os.path.join(two_configurations[0], "seed-0")):
            stream.write(json.dumps({key: value for key, value in record.items() if key != "gradients"}) + "\n")
    assert_one_line_error(dnsd("plot", "--runs", str(run_dir), "--figure", "gradients", "--plot-file",
                               str(tmp_path / "f.png")), "no gradient magnitudes", "--config figure7_cifar10")
    assert_one_line_error(dnsd("plot", "--runs", two_configurations[0], "--figure", "gradients", "--tensor", "fc",
                               "--plot-file", str(tmp_path / "f.png")), "records no gradient of fc", "stem.weight")


@pytest.fixture
def two_by_two(tiny_archive, tmp_path):
    """A 2 x 2 sweep of depth and p_L, two seeds a point, whose runs left their summaries; one point not finished."""
    folder = tmp_path / "sweep"
    open_sweep(build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": str(folder)}),
               {"model.depth": [8, 14], "model.survival_last": [0.5, 1.0]}, [0, 1])
    errors = {}
    for number, (point, _, run_dir) in enumerate(sweep_runs(str(folder), read_sweep(str(folder))["grid"], [0, 1])):
        if point == {"model.depth": 14, "model.survival_last": 0.5}:
            continue
        os.makedirs(run_dir)
        errors.setdefault((point["model.survival_last"], point["model.depth"]), []).append(10.0 + number)
        summary = {"test_error": 10.0 + number, "best_val_error": 12.0, "last_test_error": 10.0 + number}
        Path(run_dir, "summary.json").write_text(json.dumps(summary))
    return str(folder), errors


@pytest.mark.slow
def test_the_heat_map_draws_a_number_per_finished_cell_and_marks_the_unfinished_one(two_by_two, tmp_path):
    folder, errors = two_by_two
    axis = draw_heatmap(folder).axes[0]
    texts = [text.get_text() for text in axis.texts]
    numbers = sorted(float(text.split("\n")[0]) for text in texts if text[0].isdigit())
    assert numbers == pytest.approx(sorted(np.mean(values) for values in errors.values()))
    assert len(numbers) == 3 and texts.count("not finished") == 1
    assert all("n=2 of 2" in text for text in texts if text[0].isdigit())
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("survival_last", "depth")
    assert [label.get_text() for label in axis.get_xticklabels()] == ["0.5", "1"]
    path = tmp_path / "heatmap.svg"
    assert dnsd("plot", "--runs", folder, "--figure", "heatmap", "--plot-file", str(path)).returncode == 0
    assert "<svg" in path.read_text()[:500]


@pytest.mark.slow
def test_the_summary_of_a_two_key_sweep_prints_its_grid(two_by_two):
    folder, errors = two_by_two
    result = dnsd("summary", "--runs", folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines.index("| depth \\ survival_last | 0.5 | 1.0 |")
    assert lines[header + 2] == f"| 8 | {np.mean(errors[(0.5, 8)]):.2f} (2 of 2) | {np.mean(errors[(1.0, 8)]):.2f} " \
                                "(2 of 2) |"
    assert lines[header + 3] == f"| 14 | unfinished (0 of 2) | {np.mean(errors[(1.0, 14)]):.2f} (2 of 2) |"


@pytest.mark.slow
def test_a_heat_map_needs_a_sweep_of_two_keys(two_by_two, two_configurations, tiny_archive, tmp_path):
    folder, _ = two_by_two
    plot = ["--figure", "heatmap", "--plot-file", str(tmp_path / "h.png")]
    assert_one_line_error(dnsd("plot", "--runs", two_configurations[0], *plot), "it is not a sweep",
                          "figure8_heatmap_cifar10")
    assert_one_line_error(dnsd("plot", "--runs", folder, *plot, "--y", "survival_mode"),
                          "survival_last and survival_mode", "it sweeps depth, survival_last")
    one_key = tmp_path / "one"
    open_sweep(build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": str(one_key)}),
               {"model.survival_last": [0.5, 1.0]}, [0])
    assert_one_line_error(dnsd("plot", "--runs", str(one_key), *plot), "it sweeps survival_last")


@pytest.mark.parametrize("name, grid", [
    ("figure7_cifar10", {"model.survival_last": [1.0, 0.5]}),
    ("figure8_heatmap_cifar10", {"model.depth": [110, 302, 602, 1202],
                                 "model.survival_last": [round(0.1 * k, 1) for k in range(1, 11)]})])
def test_the_figure_configs_sweep_the_papers_grid_over_its_recipe(name, grid):
    import yaml

    printed = yaml.safe_load(dnsd("train", "--config", name, "--print-config").stdout)
    recipe = yaml.safe_load(dnsd("train", "--config", "resnet110_sd", "--print-config").stdout)
    assert {key: value for key, value in printed.items() if key != "sweep"} == recipe
    assert printed["sweep"] == grid
