"""`--mode plot`: several runs' curves in one PNG, and clear errors for what cannot be plotted."""
import os
import struct
from pathlib import Path

import pytest

from helpers import TINY_RUN, assert_one_line_error, dnsd, read_json, read_jsonl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the PNG header, or None if the file is not a PNG."""
    with open(path, "rb") as stream:
        header = stream.read(24)
    if header[:8] != PNG_SIGNATURE or header[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", header[16:24])


@pytest.fixture(scope="module")
def constant_depth_run(tmp_path_factory, tiny_archive):
    run_dir = str(tmp_path_factory.mktemp("runs") / "constant")
    result = dnsd("--data-file", tiny_archive, "--output-dir", run_dir, *TINY_RUN, "--survival-last", "1")
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.slow
def test_two_runs_are_drawn_into_one_png(trained_run, constant_depth_run, tmp_path):
    one, two = str(tmp_path / "one.png"), str(tmp_path / "two.png")
    assert dnsd("--mode", "plot", "--runs", trained_run[0], "--plot-file", one).returncode == 0
    result = dnsd("--mode", "plot", "--runs", trained_run[0], constant_depth_run, "--plot-file", two)
    assert result.returncode == 0, result.stderr
    assert two in result.stdout
    width, height = png_size(two)
    assert width > height > 100 and os.path.getsize(two) > 10_000
    # The second run adds its lines: the figure is not the one-run figure.
    assert png_size(one) == (width, height) and Path(one).read_bytes() != Path(two).read_bytes()


def test_a_run_still_training_is_plotted_without_a_test_error(trained_run, tmp_path):
    run_dir = tmp_path / "running"
    run_dir.mkdir()
    first_epoch = Path(trained_run[0], "metrics.jsonl").read_text().splitlines(keepends=True)[0]
    (run_dir / "metrics.jsonl").write_text(first_epoch)
    (run_dir / "config.yaml").write_text(Path(trained_run[0], "config.yaml").read_text())
    result = dnsd("--mode", "plot", "--runs", str(run_dir), "--plot-file", str(tmp_path / "running.png"))
    assert result.returncode == 0, result.stderr
    assert png_size(str(tmp_path / "running.png"))


@pytest.mark.parametrize("metrics, fragment", [(None, "no metrics.jsonl"), ("", "no epoch yet"),
                                               ('{"epoch": 1}\n', "line 1 is not an epoch record"),
                                               ("{not json\n", "line 1 is not an epoch record")])
def test_a_folder_without_usable_metrics_is_a_clear_error(trained_run, tmp_path, metrics, fragment):
    (tmp_path / "config.yaml").write_text(Path(trained_run[0], "config.yaml").read_text())
    if metrics is not None:
        (tmp_path / "metrics.jsonl").write_text(metrics)
    figure = tmp_path / "curves.png"
    figure.write_bytes(b"an older figure")
    result = dnsd("--mode", "plot", "--runs", str(tmp_path), "--plot-file", str(figure))
    assert_one_line_error(result, fragment)
    assert figure.read_bytes() == b"an older figure"


def test_plot_refuses_config_keys_and_a_missing_folder(trained_run, tmp_path):
    assert_one_line_error(dnsd("--mode", "plot", "--runs", trained_run[0], "--depth", "20"),
                          "--depth is a flag of dnsd train, not of dnsd plot")
    assert_one_line_error(dnsd("--mode", "plot"), "required: --runs")
    assert_one_line_error(dnsd("--mode", "plot", "--runs", trained_run[0], "--plot-file",
                               str(tmp_path / "missing" / "curves.png")), "--plot-file")


def drawn(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    return figure.axes


@pytest.mark.parametrize("extension, signature", [("pdf", b"%PDF"), ("svg", b"<svg")])
def test_pdf_and_svg_are_written_in_their_format(trained_run, tmp_path, extension, signature):
    path = str(tmp_path / f"curves.{extension}")
    result = dnsd("--mode", "plot", "--runs", trained_run[0], "--plot-file", path)
    assert result.returncode == 0, result.stderr
    assert signature in Path(path).read_bytes()[:400]


def test_another_format_is_refused(trained_run, tmp_path):
    assert_one_line_error(dnsd("--mode", "plot", "--runs", trained_run[0], "--plot-file", str(tmp_path / "c.jpg")),
                          ".png, .pdf or .svg")
    assert not os.path.exists(tmp_path / "c.jpg")


def test_a_one_epoch_run_has_markers_and_axes_read_plainly(trained_run, tmp_path):
    from DNSD.reporting.figures import draw_curves

    one_epoch = tmp_path / "one"
    one_epoch.mkdir()
    first_epoch = Path(trained_run[0], "metrics.jsonl").read_text().splitlines(keepends=True)[0]
    (one_epoch / "metrics.jsonl").write_text(first_epoch)
    (one_epoch / "config.yaml").write_text(Path(trained_run[0], "config.yaml").read_text())
    loss, error, active = drawn(draw_curves([str(one_epoch), trained_run[0]]))
    curves = [line for line in error.lines if line.get_linestyle() == "-"]  # not the dots, the drops
    assert [line.get_marker() for line in curves] == [".", "None"]
    for axis in (loss, error, active):
        assert all(tick == int(tick) for tick in axis.get_xticks())
    labels = [label.get_text() for label in loss.get_yticklabels(minor=True) + loss.get_yticklabels()]
    assert any(labels) and not any("$" in label or "^" in label for label in labels)


@pytest.fixture(scope="module")
def second_seed_run(tmp_path_factory, tiny_archive):
    run_dir = str(tmp_path_factory.mktemp("runs") / "seed1")
    result = dnsd("--data-file", tiny_archive, "--output-dir", run_dir, *TINY_RUN, "--seed", "1")
    assert result.returncode == 0, result.stderr
    return run_dir


def test_figure_3_draws_the_mean_test_error_of_each_configuration_and_the_seeds_spread(
        trained_run, second_seed_run, constant_depth_run, tmp_path):

    import numpy as np

    from DNSD.reporting.figures import draw_test_error

    (axis,) = drawn(draw_test_error([trained_run[0], second_seed_run, constant_depth_run]))
    seeds = [[record["test_error"] for record in read_jsonl(os.path.join(run, "metrics.jsonl"))]
             for run in (trained_run[0], second_seed_run)]
    constant = [record["test_error"] for record in read_jsonl(os.path.join(constant_depth_run, "metrics.jsonl"))]
    mean, alone = axis.lines
    assert mean.get_ydata().tolist() == pytest.approx(np.mean(seeds, axis=0).tolist())
    assert alone.get_ydata().tolist() == pytest.approx(constant)
    (band,) = axis.collections  # one band: the constant-depth configuration has a single run
    lows_and_highs = band.get_paths()[0].vertices[:, 1]
    assert min(lows_and_highs) == pytest.approx(np.min(seeds)) and max(lows_and_highs) == pytest.approx(np.max(seeds))
    # The legend's number is the summary's: the mean test error of the runs' best-validation checkpoints.
    finals = [read_json(os.path.join(run, "summary.json"))["test_error"] for run in (trained_run[0],
                                                                                          second_seed_run)]
    assert f"(2 runs: {np.mean(finals):.2f} %)" in mean.get_label() and "(1 run: " in alone.get_label()
    # A run still training (no summary.json) is drawn dotted on its own, never in the mean or the band.
    running = tmp_path / "running"
    running.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        text = Path(second_seed_run, name).read_text()
        (running / name).write_text(text.splitlines(keepends=True)[0] if name == "metrics.jsonl" else text)
    (axis,) = drawn(draw_test_error([trained_run[0], str(running)]))
    finished, dotted = axis.lines
    assert finished.get_ydata().tolist() == pytest.approx(seeds[0]) and not axis.collections
    assert dotted.get_linestyle() == ":" and dotted.get_ydata().tolist() == pytest.approx(seeds[1][:1])
    assert "1 unfinished, not averaged" in dotted.get_label()
    path = str(tmp_path / "figure3.png")
    result = dnsd("--mode", "plot", "--figure", "test-error", "--runs", trained_run[0], second_seed_run,
                  "--plot-file", path)
    assert result.returncode == 0, result.stderr
    assert png_size(path)


def test_figure_3_refuses_runs_without_a_test_error_per_epoch(trained_run, tmp_path):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(Path(trained_run[0], "config.yaml").read_text())
    records = Path(trained_run[0], "metrics.jsonl").read_text().replace('"test_error"', '"other"')
    (run_dir / "metrics.jsonl").write_text(records)
    assert_one_line_error(dnsd("--mode", "plot", "--figure", "test-error", "--runs", str(run_dir), "--plot-file",
                               str(tmp_path / "f.png")), "no test error for every epoch", "run.test_every_epoch")


def test_curves_mark_the_learning_rate_drops_and_expected_active_blocks_and_tell_seeds_apart(
        trained_run, second_seed_run, tmp_path):
    from DNSD.reporting.figures import draw_curves

    figure = draw_curves([trained_run[0], second_seed_run], labels=["stochastic depth"])
    records = read_jsonl(os.path.join(trained_run[0], "metrics.jsonl"))
    drops = [now["epoch"] - 0.5 for before, now in zip(records, records[1:]) if now["lr"] < before["lr"]]
    assert drops
    for axis in drawn(figure):
        assert [line.get_xdata()[0] for line in axis.lines if line.get_linestyle() == "--"] == drops
    loss, _, active = drawn(figure)
    # ResNet-8 has 3 blocks, p_l = 1 - l / 3 * (1 - 0.5): 5/6 + 4/6 + 3/6 = 2 active on average.
    [expected] = [line for line in active.lines if line.get_linestyle() == ":"]
    assert expected.get_ydata()[0] == pytest.approx(2.0)
    assert len({tuple(line.get_color()) for line in loss.lines if line.get_linestyle() == "-"}) == 2
    assert figure.legends[0].get_texts()[0].get_text().startswith("stochastic depth (2 runs")
    result = dnsd("plot", "--runs", trained_run[0], second_seed_run, "--labels", "a", "b", "--plot-file",
                  str(tmp_path / "f.png"))
    assert_one_line_error(result, "--labels gives 2 labels for 1 configurations", "give one each")
