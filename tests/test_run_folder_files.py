"""A run or sweep folder from elsewhere is checked, never believed: crafted files that anyone can write (and re-seal)
are refused in one line, in bounded time and memory, and nothing outside the folder is read through them or written.
"""
import io
import json
import os
import re
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from DNSD.config import build_config
from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint
from DNSD.runs.manifest import seal
from DNSD.sweeps.grid import open_sweep
from helpers import TINY_RUN, assert_one_line_error, dnsd, read_json, write_executable
from test_audit import copy_of, snapshot


def sweep(tiny_archive, folder, grid=None, seeds=(0,)):
    config = build_config({"data.data_file": tiny_archive, "model.depth": 8, "train.epochs": 1,
                           "data.val_size": 40, "train.batch_size": 32, "run.output_dir": str(folder)})
    open_sweep(config, grid or {"model.survival_last": [0.5]}, list(seeds))
    return str(folder)


def rewrite(path, change):
    recorded = read_json(path)
    change(recorded)
    Path(path).write_text(json.dumps(recorded))


def measured(call, *args):
    """(call's result, the peak of the memory Python allocated during it)."""
    tracemalloc.start()
    try:
        return call(*args), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def victim(tmp_path):
    """A folder outside the sweep with a file in it, and its snapshot."""
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "environment.json").write_text("precious\n")
    return folder, snapshot(str(folder))


@pytest.mark.parametrize("change, fragment", [
    (lambda r: r["grid"].update({"model.depth": ["8/../../../victim"]}), "model.depth"),
    (lambda r: r["grid"].update({"run./abs/path": [1]}), "run./abs/path"),
    (lambda r: r["grid"].update({"model.survival_last": [0.5, "0.5/../../victim"]}), "model.survival_last"),
    (lambda r: r["grid"].update({"model.survival_last": [0.5, 0.5]}), "listed twice"),
    (lambda r: r.update(seeds=[0, -1]), "seeds"),
])
def test_a_crafted_grid_is_refused_and_nothing_outside_the_sweep_is_touched(tiny_archive, tmp_path, change, fragment):
    folder = sweep(tiny_archive, tmp_path / "sweep")
    rewrite(os.path.join(folder, "sweep.json"), change)
    target, before = victim(tmp_path)
    assert_one_line_error(dnsd("train", "--resume", folder), "sweep.json", fragment)
    assert snapshot(str(target)) == before and sorted(os.listdir(tmp_path)) == ["sweep", "victim"]
    assert_one_line_error(dnsd("summary", "--runs", folder), "sweep.json")


def test_a_grid_of_millions_of_runs_is_refused_at_once_in_little_memory(tiny_archive, tmp_path):
    folder = sweep(tiny_archive, tmp_path / "sweep")
    rewrite(os.path.join(folder, "sweep.json"), lambda r: r.update(grid={
        "model.survival_last": [i / 4000 for i in range(1, 3001)], "train.lr": [i / 1000 for i in range(1, 3001)]}))
    started = time.perf_counter()
    result, peak = measured(dnsd, "train", "--resume", folder)
    seconds = time.perf_counter() - started
    assert_one_line_error(result, "more than 10,000 runs")
    assert peak < 200 << 20 and seconds < 60, (peak, seconds)
    rewrite(os.path.join(folder, "sweep.json"), lambda r: r.update(grid={"train.lr": [0.1] * 110_000}))
    assert_one_line_error(dnsd("train", "--resume", folder), "more than 10,000 runs")


def test_a_point_folder_that_links_out_of_the_sweep_is_refused(tiny_archive, tmp_path):
    folder = sweep(tiny_archive, tmp_path / "sweep")
    target, before = victim(tmp_path)
    os.symlink(target, os.path.join(folder, "survival_last=0.5"))
    assert_one_line_error(dnsd("train", "--resume", folder), "leads out of the sweep folder")
    assert snapshot(str(target)) == before


@pytest.mark.parametrize("name", [".lock", "metrics.jsonl", "environment.json"])
def test_a_symlink_where_a_run_writes_is_refused_and_its_target_left_as_it_was(trained_run, tmp_path, name):
    run_dir = copy_of(trained_run[0], tmp_path)
    target = tmp_path / "target"
    target.write_text("precious\n")
    if os.path.exists(os.path.join(run_dir, name)):
        os.remove(os.path.join(run_dir, name))
    os.symlink(target, os.path.join(run_dir, name))
    result = dnsd("train", "--resume", os.path.join(run_dir, "best.pdckpt"))
    assert_one_line_error(result, name, "symbolic link")
    assert target.read_text() == "precious\n"


def test_an_export_into_a_linked_folder_of_a_run_is_refused(trained_run, tmp_path):
    run_dir = copy_of(trained_run[0], tmp_path)
    target, before = victim(tmp_path)
    os.symlink(target, os.path.join(run_dir, "best-inference"))
    assert_one_line_error(dnsd("export", "--checkpoint", os.path.join(run_dir, "best.pdckpt")),
                          "best-inference is a symbolic link")
    assert snapshot(str(target)) == before


def test_a_metrics_line_longer_than_any_record_is_refused_without_reading_it_whole(trained_run, tmp_path):
    run_dir = copy_of(trained_run[0], tmp_path)
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as stream:
        stream.write('{"epoch": 3, "val_error": ' + "1" * (20 << 20) + "}\n")
    result, peak = measured(dnsd, "summary", "--runs", run_dir)
    assert_one_line_error(result, "metrics.jsonl line 3", "longer")
    assert peak < 64 << 20, peak


@pytest.mark.parametrize("path, value", [(("device", "cpu", "vendor"), None), (("dnsd", "commit"), 7),
                                         (("device", "gpus"), "H100"), (("settings", "world_size"), "2")])
def test_a_resealed_manifest_entry_of_the_wrong_shape_is_one_line(trained_run, tmp_path, path, value):
    run_dir = copy_of(trained_run[0], tmp_path)

    def change(manifest):
        entry = manifest["entries"][0]
        parent = entry
        for key in path[:-1]:
            parent = parent[key]
        if value is None:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        entry["sha256"] = seal(entry)

    rewrite(os.path.join(run_dir, "environment.json"), change)
    assert_one_line_error(dnsd("card", run_dir), "environment.json: entry 1 is not a DNSD manifest entry")
    # The audit reads no field of it: it verifies what re-trains bit for bit, and says why nothing else can be.
    audited = dnsd("audit", run_dir, "--epoch", "1")
    assert "manifest: " in audited.stdout and "entry 1 is not a DNSD manifest entry" in audited.stdout
    best = read_checkpoint(os.path.join(run_dir, "best.pdckpt"))["epochs_done"]
    assert audited.returncode == (0 if best == 1 else 2), audited.stdout + audited.stderr  # covered, or not kept


def test_a_checkpoint_array_that_declares_a_huge_shape_is_refused_before_it_is_allocated(trained_run, tmp_path):
    path = str(tmp_path / "huge.pdckpt")
    state = read_checkpoint(os.path.join(trained_run[0], "best.pdckpt"))
    save_checkpoint(path, state)
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    data = members[1][1]
    stream = io.BytesIO(data)
    np.lib.format.read_magic(stream)
    np.lib.format.read_array_header_1_0(stream)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)})
    members[1] = (members[1][0], header.getvalue() + data[stream.tell():])
    from DNSD.runs.checkpoint_file import _digest  # re-sealed, as anyone can

    members[-1] = ("sha256", _digest(members[:-1]).encode())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    result, peak = measured(dnsd, "eval", "--checkpoint", path)
    assert_one_line_error(result, "huge.pdckpt", "declares shape (100000, 100000)")
    assert peak < 256 << 20, peak


def test_the_card_escapes_what_it_copies_from_files(tiny_archive, tmp_path):
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py (requirements-test.txt) renders the card")
    folder = str(tmp_path / "runs" / "a|b <img src=x onerror=alert(1)> `x")
    assert dnsd("train", "--data-file", tiny_archive, "--output-dir", folder, *TINY_RUN, "--epochs", "1").returncode \
        == 0

    def craft(manifest):
        manifest["entries"][0]["device"]["cpu"]["model"] = "<script>alert(1)</script> | x"
        manifest["entries"][0]["command"] = ["dnsd", "```\n<b>evil</b>|"]
        manifest["entries"][0]["sha256"] = seal(manifest["entries"][0])

    rewrite(os.path.join(folder, "environment.json"), craft)
    rewrite(os.path.join(folder, "summary.json"), lambda s: s["data"].update(file="/x/```\n<b>evil</b>|.tar.gz"))
    assert dnsd("card", folder).returncode == 0
    page = markdown_it.MarkdownIt("commonmark").enable("table").render(
        Path(folder, "MODEL_CARD.md").read_text())
    assert not re.search(r"<(script|b)\b", page), page
    assert re.findall(r"<img [^>]*>", page) == [re.search(r"<img [^>]*>", page).group()] and \
        'src="MODEL_CARD-curves.png"' in page  # the card's own figure alone
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.DOTALL)
    assert rows and all(row.count("<td>") in (0, 3, 6) for row in rows), rows  # every cell stays one cell
    assert page.count("<pre>") == 2  # the loading example's block and the citation's alone


@pytest.mark.parametrize("script, fragment", [
    ("echo 'sbatch: error: Batch job submission failed: Invalid account' >&2; exit 1",
     "sbatch failed (exit 1): sbatch: error: Batch job submission failed: Invalid account"),
    ("echo 'garbage'", "sbatch printed no job id"),
    pytest.param("exec sleep 300", "did not answer within 2 s and was stopped", marks=pytest.mark.slow),
])
def test_sbatch_that_fails_prints_garbage_or_hangs_is_one_line(tiny_archive, tmp_path, monkeypatch, script, fragment):
    pytest.importorskip("submitit")
    from DNSD.sweeps import launchers

    monkeypatch.setattr(launchers, "SBATCH_SECONDS", 2)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_executable(str(bin_dir / "srun"), "#!/bin/sh\nexit 0\n")
    write_executable(str(bin_dir / "sbatch"), f"#!/bin/sh\n{script}\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    started = time.perf_counter()
    result = dnsd("--data-file", tiny_archive, *TINY_RUN, "--epochs", "1", "--output-dir", str(tmp_path / "sweep"),
                  "--seeds", "0,1", "--launcher", "slurm")
    assert_one_line_error(result, fragment)
    assert time.perf_counter() - started < 60
