"""dnsd audit: a real run's epochs re-trained bit for bit, and every altered file of a run named as such."""
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import pytest

from DNSD.reporting.audit import Plan, judge
from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint
from DNSD.runs.manifest import seal
from helpers import MINI_ARCHIVE, TINY_RUN, assert_one_line_error, dnsd

MINI_RUN = ["--depth", "8", "--epochs", "2", "--batch-size", "50", "--val-size", "100", "--train-images", "400",
            "--keep-every", "1"]


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    """A real 2-epoch run on the mini archive that keeps every epoch's checkpoint."""
    if not os.path.isfile(MINI_ARCHIVE):
        pytest.skip(f"the real CIFAR-10 subset is not at {os.path.normpath(MINI_ARCHIVE)}")
    run_dir = str(tmp_path_factory.mktemp("audit") / "run")
    result = dnsd("train", "--data-file", MINI_ARCHIVE, "--output-dir", run_dir, *MINI_RUN)
    assert result.returncode == 0, result.stderr
    return run_dir


def snapshot(folder):
    """Every file of a folder with its content's digest."""
    found = {}
    for path, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(path, name), "rb") as stream:
                found[os.path.relpath(os.path.join(path, name), folder)] = hashlib.sha256(stream.read()).hexdigest()
    return found


def copy_of(run_dir, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy)
    return copy


def records(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def flip_byte(path, tensor, index=0):
    """Change one byte of a tensor of a checkpoint and seal the file again, as a forger would."""
    state = read_checkpoint(path)
    state["model"][tensor].view(np.uint8).flat[index] ^= 1
    save_checkpoint(path, state)


def test_the_digest_of_each_epoch_is_the_sha256_of_its_checkpoints_weights(mini_run):
    for record in records(mini_run):
        digest = hashlib.sha256()
        for name, array in read_checkpoint(os.path.join(mini_run, f"epoch-{record['epoch']}.pdckpt"))["model"].items():
            digest.update(name.encode() + np.ascontiguousarray(array).tobytes())
        assert record["weights_sha256"] == digest.hexdigest()


def test_an_audit_of_every_epoch_is_bit_identical_and_changes_nothing(mini_run, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = snapshot(mini_run)
    result = dnsd("audit", mini_run, "--all")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "epoch 1: bit-identical" in result.stdout and "epoch 2: bit-identical" in result.stdout
    assert "from the initialisation of seed 0" in result.stdout  # epoch 1 needs no kept checkpoint
    assert snapshot(mini_run) == before
    assert os.listdir(tmp_path) == []  # the temporary folder is removed


def test_a_changed_weight_byte_in_a_resealed_checkpoint_is_named_with_its_tensor(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    tensor = list(read_checkpoint(os.path.join(run_dir, "epoch-2.pdckpt"))["model"])[5]
    flip_byte(os.path.join(run_dir, "epoch-2.pdckpt"), tensor)
    result = dnsd("audit", run_dir, "--epoch", "2")
    assert result.returncode == 4
    assert "epoch-2.pdckpt was altered after it was written" in result.stdout
    assert f"tensor {tensor} differs" in result.stdout
    assert "epoch 2: bit-identical" in result.stdout  # the run's own record is confirmed by the re-training


def test_an_altered_start_checkpoint_is_refused_before_anything_is_trained(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    flip_byte(os.path.join(run_dir, "epoch-1.pdckpt"), "fc.weight", 3)
    before = snapshot(run_dir)
    result = dnsd("audit", run_dir, "--epoch", "2")
    assert_one_line_error(result, "epoch-1.pdckpt was altered after it was written")
    assert "auditing" not in result.stdout
    assert snapshot(run_dir) == before


def test_an_edited_metrics_line_is_named(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    lines = records(run_dir)
    lines[0]["val_error"] -= 10
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as stream:
        stream.writelines(json.dumps(line) + "\n" for line in lines)
    assert_one_line_error(dnsd("audit", run_dir, "--epoch", "2"), "metrics.jsonl line 1", "altered")


def test_an_edited_manifest_is_named_and_a_resealed_one_does_not_match_the_records(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    path = os.path.join(run_dir, "environment.json")
    manifest = json.load(open(path))
    manifest["entries"][0]["device"]["kind"] = "gpu"
    json.dump(manifest, open(path, "w"))
    assert_one_line_error(dnsd("audit", run_dir), "environment.json: entry 1 was altered")
    manifest["entries"][0]["sha256"] = seal(manifest["entries"][0])
    json.dump(manifest, open(path, "w"))
    assert_one_line_error(dnsd("audit", run_dir), "environment.json has no entry for the session that trained")
    del manifest["entries"][0]["settings"]
    manifest["entries"][0]["sha256"] = seal(manifest["entries"][0])
    json.dump(manifest, open(path, "w"))
    assert_one_line_error(dnsd("audit", run_dir), "entry 1 is not a DNSD manifest entry")


def test_a_run_without_digests_or_without_the_epoch_asked_is_refused(mini_run, tmp_path):
    assert_one_line_error(dnsd("audit", mini_run, "--epoch", "3"), "has trained epochs 1 to 2")
    run_dir = copy_of(mini_run, tmp_path)
    os.remove(os.path.join(run_dir, "epoch-1.pdckpt"))
    os.remove(os.path.join(run_dir, "best.pdckpt"))
    assert_one_line_error(dnsd("audit", run_dir, "--epoch", "2"), "keeps no checkpoint of epoch 1",
                          "--keep-every 1")
    lines = records(run_dir)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as stream:
        stream.writelines(json.dumps({k: v for k, v in line.items() if k != "weights_sha256"}) + "\n"
                          for line in lines)
    assert_one_line_error(dnsd("audit", run_dir), "holds no weight digest")
    assert_one_line_error(dnsd("audit", str(tmp_path / "nothing")), "holds no run")


def test_a_resumed_run_appends_its_session_to_the_manifest_and_its_epochs_name_it(tiny_archive, tmp_path):
    run_dir = str(tmp_path / "run")
    assert dnsd("train", "--data-file", tiny_archive, "--output-dir", run_dir, *TINY_RUN,
                "--keep-every", "1").returncode == 0
    first = records(run_dir)
    result = dnsd("train", "--resume", os.path.join(run_dir, "epoch-1.pdckpt"))
    assert result.returncode == 0, result.stderr
    entries = json.load(open(os.path.join(run_dir, "environment.json")))["entries"]
    assert len(entries) == 2 and entries[1]["command"][:3] == ["dnsd", "train", "--resume"]
    again = records(run_dir)
    assert [record["environment_sha256"] for record in again] == [entry["sha256"] for entry in entries]
    assert [record["weights_sha256"] for record in again] == [record["weights_sha256"] for record in first]


def test_only_every_nth_epoch_is_kept(tiny_archive, tmp_path):
    run_dir = str(tmp_path / "run")
    run = [*TINY_RUN, "--epochs", "3", "--keep-every", "2"]
    assert dnsd("train", "--data-file", tiny_archive, "--output-dir", run_dir, *run).returncode == 0
    assert sorted(name for name in os.listdir(run_dir) if name.startswith("epoch-")) == ["epoch-2.pdckpt"]


def weights(*values):
    return {"stem.0.weight": np.array(values[:2], np.float32), "fc.weight": np.array(values[2:], np.float32)}


def entry(paddle_version):
    return {"paddle": {"version": paddle_version, "commit": "c", "cuda": None, "cudnn": None, "build": "CPU build"},
            "numpy": "2", "device": {"kind": "cpu", "cpu": {"vendor": "V", "instruction_sets": ["avx2"]}},
            "settings": {"cpu_threads": 1, "environment": {}, "paddle_flags": {}, "world_size": 1},
            "dnsd": {}, "python": {}, "packages": {}, "data": {}, "sha256": "e"}


class FakeRun:
    records = [{"epoch": 1, "val_error": 50.0, "weights_sha256": "0" * 64}]


def test_a_difference_on_the_same_build_fails_naming_the_first_tensor():
    recorded, retrained = weights(1, 2, 3, 4), weights(1, 2, 3, 4.5)
    planned = Plan(1, None, [("epoch-1.pdckpt", {"model": recorded})], [], entry("3.3.1"))
    lines, failed = judge(FakeRun(), planned, retrained, {"val_error": 51.0}, entry("3.3.1"))
    assert failed
    assert "same build and device kind" in lines[0] and "fc.weight" in lines[0] and "0.125" in lines[0]


def test_another_build_reports_each_group_the_validation_errors_and_the_manifests_difference():
    recorded, retrained = weights(1, 2, 3, 4), weights(1, 2.002, 3, 4.5)
    planned = Plan(1, None, [("epoch-1.pdckpt", {"model": recorded})], [], entry("3.3.1"))
    lines, failed = judge(FakeRun(), planned, retrained, {"val_error": 51.0}, entry("2.6.2"))
    assert not failed
    text = "\n".join(lines)
    assert "another build or device" in text and "50.00 % in the run, 51.00 % re-trained" in text
    assert "stem 0.001" in text and "fc 0.125" in text
    assert "paddle.version: '3.3.1' in the run, '2.6.2' here" in text
