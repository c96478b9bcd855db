"""scripts/benchmark.py runs and writes its results file; the figures themselves belong in BENCHMARKS.md."""
import json
import subprocess
import sys

import pytest

from helpers import ROOT


def benchmark(*args):
    return subprocess.run([sys.executable, "scripts/benchmark.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_help_documents_every_option():
    result = benchmark("--help")
    assert result.returncode == 0
    for option in ("--depth", "--batch-size", "--steps", "--warmup", "--repeats", "--device", "--cpu-threads",
                   "--cpu-numerics", "--prefetch", "--compare-cpu-settings", "--profile", "--output", "--svhn-scale"):
        assert option in result.stdout


@pytest.mark.slow
def test_a_tiny_run_writes_every_section(tmp_path):
    output = tmp_path / "results.json"
    result = benchmark("--depth", "8", "--batch-size", "16", "--steps", "1", "--repeats", "2", "--warmup", "0",
                       "--data-batches", "2", "--output", str(output))
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())
    train = results["train"]
    assert len(train["constant_depth"]["samples"]) == 2 and train["constant_depth"]["median"] > 0
    assert train["constant_depth"]["mean_active_blocks"] == 3  # p_L = 1: every block, every step
    assert 0 < train["expected_ratio"] < 1 and train["measured_ratio"] > 0
    assert results["data"]["dnsd_batches_per_second"]["median"] > 0
    assert results["data"]["transforms_batches_per_second"]["median"] > 0
    assert results["eval_images_per_second"]["median"] > 0
    assert results["memory"]["host_peak_rss_mib"] > 0
    assert results["cpu_settings"]["threads"] >= 1


@pytest.mark.slow
def test_the_host_section_splits_the_real_step_into_its_phases(tmp_path):
    output = tmp_path / "results.json"
    result = benchmark("--sections", "host", "--device", "cpu", "--steps", "2", "--repeats", "1", "--warmup", "0",
                       "--output", str(output))
    assert result.returncode == 0, result.stderr
    host = json.loads(output.read_text())["host_ms_per_step"]
    assert set(host) == {"eager, stochastic depth", "eager, constant depth"}
    for name, parts in host.items():
        assert f"host cost {name}: " in result.stderr
        assert min(parts["forward"], parts["backward"], parts["optimiser"]) > 0
        assert parts["step"] == pytest.approx(parts["forward"] + parts["backward"] + parts["optimiser"] + parts["rest"])


@pytest.mark.slow
def test_the_svhn_section_reads_synthetic_files_in_a_process_of_its_own(tmp_path):
    output = tmp_path / "results.json"
    result = benchmark("--sections", "svhn", "--svhn-scale", "0.002", "--device", "cpu", "--output", str(output))
    assert result.returncode == 0, result.stderr
    reading = json.loads(output.read_text())["svhn_reading"]
    sizes = reading["sizes"]
    assert sizes == {"train": 147, "extra": 1062, "test": 100}
    assert (reading["train_images"], reading["val_images"], reading["test_images"]) == (147 + 1062 - 30, 30, 100)
    assert reading["dtype"] == "uint8" and reading["train_mib"] == pytest.approx((147 + 1062 - 30) * 3072 / 2**20)
    assert reading["peak_rss_mib"] > reading["train_mib"] and "svhn: read 1,309 images" in result.stderr


@pytest.mark.slow
def test_the_audit_section_times_a_passing_audit_against_the_runs_epoch(tmp_path, tiny_archive):
    output = tmp_path / "results.json"
    result = benchmark("--sections", "audit", "--data-file", tiny_archive, "--depth", "8", "--batch-size", "32",
                       "--val-size", "40", "--repeats", "1", "--device", "cpu", "--output", str(output))
    assert result.returncode == 0, result.stderr
    audit = json.loads(output.read_text())["audit"]
    assert len(audit["run_epoch_seconds"]) == 2 and len(audit["audits"]) == 1
    assert audit["retrained_epoch_seconds"]["median"] > 0 and audit["digest_seconds"]["median"] > 0
    assert benchmark("--sections", "audit", "--output", str(output)).returncode != 0  # no archive, no audit
