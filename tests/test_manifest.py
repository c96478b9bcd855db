"""environment.json: what produced a run, and dnsd info --compare of two runs."""
import hashlib
import json
import os
from pathlib import Path

import paddle
import pytest

from DNSD.runs.manifest import seal
from DNSD.system.numerics import operators_build
from helpers import TINY_RUN, assert_one_line_error, dnsd, environment, read_json

ONE_EPOCH = [*TINY_RUN, "--epochs", "1"]


def manifest(run_dir):
    return json.load(open(os.path.join(run_dir, "environment.json")))["entries"]


@pytest.mark.slow
def test_the_manifest_names_paddles_build_the_threads_the_command_and_the_data_but_no_other_variable(
        tiny_archive, tmp_path):
    run_dir = str(tmp_path / "run")
    env = environment(MKL_NUM_THREADS="1", DNSD_TEST_SECRET="hunter2")
    result = dnsd("train", "--data-file", tiny_archive, "--output-dir", run_dir, *ONE_EPOCH, "--cpu-threads", "2",
                  env=env)
    assert result.returncode == 0, result.stderr
    [entry] = manifest(run_dir)
    assert entry["paddle"]["version"] == paddle.__version__
    assert entry["paddle"]["commit"] == paddle.version.commit
    assert ("CPU build" in entry["paddle"]["build"]) == (not paddle.device.is_compiled_with_cuda())
    assert entry["settings"]["cpu_threads"] == 2 and entry["settings"]["world_size"] == 1
    assert entry["settings"]["environment"]["MKL_NUM_THREADS"] == "1"
    if {"avx2", "fma"} <= set(entry["device"]["cpu"]["instruction_sets"]):  # auto: DNSD's operators where they build
        built = operators_build(set(entry["device"]["cpu"]["instruction_sets"]))
        assert entry["settings"]["cpu_numerics"] == ("onednn" if built else "portable")
        assert entry["settings"]["environment"]["MKL_CBWR"] == "AVX2,STRICT"
    assert entry["command"] == ["dnsd", "train", "--data-file", tiny_archive, "--output-dir", run_dir, *ONE_EPOCH,
                                "--cpu-threads", "2"]
    assert entry["data"]["sha256"] == hashlib.sha256(Path(tiny_archive).read_bytes()).hexdigest()
    assert entry["packages"]["numpy"] == entry["numpy"]
    assert entry["dnsd"]["commit"] is None or len(entry["dnsd"]["commit"]) == 40
    assert "hunter2" not in Path(run_dir, "environment.json").read_text()


def test_a_damaged_manifest_stops_a_resume_and_is_left_as_it_was(tiny_archive, tmp_path):
    run_dir = str(tmp_path / "run")
    assert dnsd("train", "--data-file", tiny_archive, "--output-dir", run_dir, *ONE_EPOCH).returncode == 0
    path = os.path.join(run_dir, "environment.json")
    with open(path, "w") as stream:
        stream.write('{"format": "dnsd-environment/1", "entries": 3}')
    assert_one_line_error(dnsd("train", "--resume", run_dir), "environment.json is damaged")
    assert Path(path).read_text() == '{"format": "dnsd-environment/1", "entries": 3}'


@pytest.mark.slow
def test_compare_of_two_seeds_names_the_seed_first(seeds_folder):
    result = dnsd("info", "--compare", os.path.join(seeds_folder, "seed-0"), os.path.join(seeds_folder, "seed-1"))
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    assert rows[0].split() == ["recipe", "run.seed:", "0", "->", "1"]
    assert all("recipe" not in row for row in rows[1:])
    assert any("run.output_dir" in row for row in rows)


def test_compare_orders_the_data_before_the_software_and_the_hardware(tiny_archive, tmp_path):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    assert dnsd("train", "--data-file", tiny_archive, "--output-dir", first, *ONE_EPOCH).returncode == 0
    assert dnsd("train", "--data-file", tiny_archive, "--output-dir", second, *ONE_EPOCH,
                "--lr", "0.05").returncode == 0
    path = os.path.join(second, "environment.json")
    written = read_json(path)
    forged = written["entries"][0]
    forged["paddle"]["version"], forged["device"]["cpu"]["vendor"] = "0.0.0", "OtherVendor"
    forged["data"]["file"] = "/elsewhere/tiny.tar.gz"
    forged["sha256"] = seal(forged)
    Path(path).write_text(json.dumps(written))
    kinds = [row.split()[0] for row in dnsd("info", "--compare", first, second).stdout.splitlines()[1:]]
    order = [kinds.index(kind) for kind in ("recipe", "data", "software", "hardware")]
    assert order == sorted(order)


def test_compare_of_a_folder_without_a_run_is_one_line(tmp_path, trained_run):
    assert_one_line_error(dnsd("info", "--compare", trained_run[0], str(tmp_path)), "holds no run")
