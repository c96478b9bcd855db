"""Data-parallel runs (DNSD/training/ranks.py, and the trainer under paddle.distributed): real two-process runs on
the CPU (gloo backend), and the sharding that lets the ranks together compute what one process would."""
import glob
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cifar_archive import synthetic_batches, write_archive
from DNSD.datasets import Splits
from DNSD.datasets.pipeline import Dataset, Normalizer, TrainingBatches
from DNSD.errors import InputError
from DNSD.runs.checkpoint import read_state, restore_model
from DNSD.training.ranks import Ranks, check_shards, weights_digest
from helpers import ROOT, dnsd, read_jsonl

SEED = 3
RUN = ["--device", "cpu", "--depth", "8", "--seed", str(SEED),
       "--epochs", "2", "--batch-size", "32", "--val-size", "40"]


def launch(log_dir, *args, processes=2):
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(processes),
               "--log_dir", log_dir, os.path.join("DNSD", "main.py"), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, tiny_archive):
    folder = tmp_path_factory.mktemp("data_parallel")
    run_dir, log_dir = str(folder / "run"), str(folder / "log")
    result = launch(log_dir, "--data-file", tiny_archive, "--output-dir", run_dir, *RUN)
    logs = [Path(log_dir, f"workerlog.{rank}").read_text() for rank in range(2)]
    assert result.returncode == 0, result.stdout[-3000:] + "\n".join(logs)
    return run_dir, logs


@pytest.mark.slow
def test_both_ranks_end_with_the_weights_rank_0_saved(two_rank_run):
    run_dir, logs = two_rank_run
    path = os.path.join(run_dir, "last.pdckpt")
    saved = weights_digest(restore_model(read_state(path), path))
    for rank, log in enumerate(logs):
        assert re.findall(r"rank (\d) of 2 ends with weights sha256 (\w+)", log) == [(str(rank), saved)]


@pytest.mark.slow
def test_synced_batch_norm_makes_two_ranks_train_what_one_process_trains(two_rank_run, tiny_archive, tmp_path):
    """The authors trained on one GPU: batch norm's statistics are those of the whole mini-batch. Each rank's own
    share (--no-sync-batch-norm) ends about 0.016 away in some weight after these two epochs."""
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(tmp_path / "one"), *RUN)
    assert result.returncode == 0, result.stderr
    one = read_state(str(tmp_path / "one" / "last.pdckpt"))["model"]
    two = read_state(os.path.join(two_rank_run[0], "last.pdckpt"))["model"]
    assert max(np.abs(np.asarray(one[name]) - np.asarray(two[name])).max() for name in one) < 1e-4


@pytest.mark.slow
def test_the_ranks_drop_the_blocks_that_the_seed_gives_every_step(two_rank_run):
    # The gates of (seed, epoch, step), drawn here as the paper describes; 160 images in mini-batches of 32 are 5
    # steps an epoch. The run itself stops if two ranks' gates ever differ.
    survival = 1 - np.arange(1, 4) / 3 * 0.5
    records = read_jsonl(os.path.join(two_rank_run[0], "metrics.jsonl"))
    for record in records:
        active = [(np.random.default_rng([SEED, 3, record["epoch"], step]).random(3) < survival).sum()
                  for step in range(5)]
        assert record["mean_active_blocks"] == pytest.approx(np.mean(active))


@pytest.mark.slow
def test_only_rank_0_writes_logs_and_checkpoints(two_rank_run):
    run_dir, logs = two_rank_run
    assert len(read_jsonl(os.path.join(run_dir, "metrics.jsonl"))) == 2
    assert len(glob.glob(os.path.join(run_dir, "vdl", "*"))) == 1
    # last.test.json is there when the last epoch is not the best one.
    assert sorted(set(os.listdir(run_dir)) - {"last.test.json"}) == [
        ".lock", "best.pdckpt", "best.test.json", "config.yaml", "environment.json", "last.pdckpt", "metrics.jsonl",
        "summary.json", "vdl"]
    assert "epoch 2/2" in logs[0] and "epoch 2/2" not in logs[1]
    assert "test error" in logs[0] and "test error" not in logs[1]


def test_the_shards_of_the_ranks_make_up_the_single_process_batch():
    rng = np.random.default_rng(0)
    train = Dataset(rng.integers(0, 256, (45, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 45))
    data = Splits(train, train, train, Normalizer.fit(train.images))
    whole = TrainingBatches(data, 16, True, seed=7, epoch=2)
    for world_size in (2, 3):
        shards = [TrainingBatches(data, 16, True, seed=7, epoch=2, rank=rank, world_size=world_size)
                  for rank in range(world_size)]
        for step in range(len(whole)):
            images, labels = whole[step]
            assert np.array_equal(np.concatenate([shard[step][0] for shard in shards]), images)
            assert np.array_equal(np.concatenate([shard[step][1] for shard in shards]), labels)


@pytest.mark.parametrize("count, world_size", [(32, 2), (13, 3), (2, 4), (0, 2)])
def test_shards_partition_the_examples_evenly(count, world_size):
    parts = [np.arange(count)[Ranks(rank, world_size).shard(count)] for rank in range(world_size)]
    assert np.array_equal(np.concatenate(parts), np.arange(count))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_mini_batch_too_small_for_the_ranks_is_refused():
    check_shards(160, 32, 2)
    with pytest.raises(InputError, match="--batch-size"):
        check_shards(161, 32, 2)  # the last mini-batch holds one image
    with pytest.raises(InputError, match="--batch-size"):
        check_shards(160, 2, 4)


@pytest.mark.slow
def test_an_interrupted_two_rank_run_resumes_to_the_same_weights(tmp_path):
    archive = write_archive(str(tmp_path / "larger.tar.gz"), synthetic_batches(400, learnable=True))
    run = ["--data-file", archive, *RUN[:6], "--epochs", "3", "--batch-size", "64", "--val-size", "200"]

    def digests(log_dir):
        return {line for line in open(os.path.join(log_dir, "workerlog.0")).read().splitlines() if "sha256" in line}

    reference = launch(str(tmp_path / "log-reference"), *run, "--output-dir", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stdout[-3000:]

    log_dir, run_dir = str(tmp_path / "log-interrupted"), str(tmp_path / "interrupted")
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", log_dir,
               os.path.join("DNSD", "main.py"), *run, "--output-dir", run_dir]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rank_0_log = os.path.join(log_dir, "workerlog.0")
    deadline = time.monotonic() + 300
    while not (os.path.exists(rank_0_log) and "epoch 1/3" in Path(rank_0_log).read_text()):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch did"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)  # as Ctrl-C in a terminal: the launcher passes SIGTERM to every rank
    assert process.wait(timeout=120) != 0
    stopped = [Path(log_dir, f"workerlog.{rank}").read_text() for rank in range(2)]
    steps = [re.search(r"SIGTERM at epoch (\d+), step (\d+)", log).groups() for log in stopped]
    assert steps[0] == steps[1]

    resumed = launch(str(tmp_path / "log-resumed"), "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert digests(str(tmp_path / "log-resumed")) == digests(str(tmp_path / "log-reference"))
    assert len(digests(str(tmp_path / "log-reference"))) == 1
