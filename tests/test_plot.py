"""`--mode plot`: several runs' curves in one PNG, and clear errors for what cannot be plotted."""
import os
import struct

import pytest

from helpers import TINY_RUN, assert_one_line_error, dnsd

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


def test_two_runs_are_drawn_into_one_png(trained_run, constant_depth_run, tmp_path):
    one, two = str(tmp_path / "one.png"), str(tmp_path / "two.png")
    assert dnsd("--mode", "plot", "--runs", trained_run[0], "--plot-file", one).returncode == 0
    result = dnsd("--mode", "plot", "--runs", trained_run[0], constant_depth_run, "--plot-file", two)
    assert result.returncode == 0, result.stderr
    assert two in result.stdout
    width, height = png_size(two)
    assert width > height > 100 and os.path.getsize(two) > 10_000
    # The second run adds its lines: the figure is not the one-run figure.
    assert png_size(one) == (width, height) and open(one, "rb").read() != open(two, "rb").read()


def test_a_run_still_training_is_plotted_without_a_test_error(trained_run, tmp_path):
    run_dir = tmp_path / "running"
    run_dir.mkdir()
    first_epoch = open(os.path.join(trained_run[0], "metrics.jsonl")).readline()
    (run_dir / "metrics.jsonl").write_text(first_epoch)
    result = dnsd("--mode", "plot", "--runs", str(run_dir), "--plot-file", str(tmp_path / "running.png"))
    assert result.returncode == 0, result.stderr
    assert png_size(str(tmp_path / "running.png"))


@pytest.mark.parametrize("metrics, fragment", [(None, "no metrics.jsonl"), ("", "no epoch yet"),
                                               ('{"epoch": 1}\n', "line 1 is not an epoch record"),
                                               ("{not json\n", "line 1 is not an epoch record")])
def test_a_folder_without_usable_metrics_is_a_clear_error(tmp_path, metrics, fragment):
    if metrics is not None:
        (tmp_path / "metrics.jsonl").write_text(metrics)
    figure = tmp_path / "curves.png"
    figure.write_bytes(b"an older figure")
    result = dnsd("--mode", "plot", "--runs", str(tmp_path), "--plot-file", str(figure))
    assert_one_line_error(result, fragment)
    assert figure.read_bytes() == b"an older figure"


def test_plot_refuses_config_keys_and_a_missing_folder(trained_run, tmp_path):
    assert_one_line_error(dnsd("--mode", "plot", "--runs", trained_run[0], "--depth", "20"), "no config keys")
    assert_one_line_error(dnsd("--mode", "plot"), "--runs")
    assert_one_line_error(dnsd("--mode", "plot", "--runs", trained_run[0], "--plot-file",
                               str(tmp_path / "missing" / "curves.png")), "--plot-file")
