"""dnsd audit: a real run's epochs re-trained bit for bit, and every altered file of a run named as such."""
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from DNSD.audits.verdicts import FAILED, UNVERIFIED, VERIFIED, Retrained, across_builds
from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint
from DNSD.runs.manifest import seal
from forgery import claim, claim_gpu, forge_state
from helpers import TINY_RUN, assert_one_line_error, dnsd, read_json, read_yaml, real_archive

MINI_RUN = ["--depth", "8", "--epochs", "2", "--batch-size", "50", "--val-size", "100", "--train-images", "400",
            "--keep-every", "1"]


def real_run(run_dir, *extra):
    """A real run on the mini archive (2 epochs unless extra says otherwise) that keeps every epoch's checkpoint."""
    result = dnsd("train", "--data-file", real_archive(), "--output-dir", run_dir, *MINI_RUN, *extra)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    return real_run(str(tmp_path_factory.mktemp("audit") / "run"))


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


@pytest.mark.slow
def test_the_digest_of_each_epoch_is_the_sha256_of_its_checkpoints_weights(mini_run):
    for record in records(mini_run):
        digest = hashlib.sha256()
        for name, array in read_checkpoint(os.path.join(mini_run, f"epoch-{record['epoch']}.pdckpt"))["model"].items():
            digest.update(name.encode() + np.ascontiguousarray(array).tobytes())
        assert record["weights_sha256"] == digest.hexdigest()


@pytest.mark.slow
def test_an_audit_of_every_epoch_is_bit_identical_and_changes_nothing(mini_run, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = snapshot(mini_run)
    result = dnsd("audit", mini_run, "--all")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "epoch 1: verified: bit-identical" in result.stdout and "epoch 2: verified: bit-identical" in result.stdout
    assert "from the initialisation of seed 0" in result.stdout  # epoch 1 needs no kept checkpoint
    assert snapshot(mini_run) == before
    assert os.listdir(tmp_path) == []  # the temporary folder is removed


@pytest.mark.slow
def test_a_changed_weight_byte_in_a_resealed_checkpoint_is_named_with_its_tensor(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    tensor = list(read_checkpoint(os.path.join(run_dir, "epoch-2.pdckpt"))["model"])[5]
    flip_byte(os.path.join(run_dir, "epoch-2.pdckpt"), tensor)
    result = dnsd("audit", run_dir, "--epoch", "2")
    assert result.returncode == 4
    assert "epoch-2.pdckpt was altered after it was written" in result.stdout
    assert f"tensor {tensor} differs" in result.stdout
    # the run's own record is confirmed by the re-training; the file that differs from it fails the epoch
    assert "epoch 2: failed: bit-identical to the run" in result.stdout


@pytest.mark.slow
def test_an_altered_start_checkpoint_is_refused_before_anything_is_trained(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    flip_byte(os.path.join(run_dir, "epoch-1.pdckpt"), "fc.weight", 3)
    before = snapshot(run_dir)
    result = dnsd("audit", run_dir, "--epoch", "2")
    assert_one_line_error(result, "epoch-1.pdckpt was altered after it was written", code=4)
    assert "auditing" not in result.stdout
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_an_edited_metrics_line_is_named(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    lines = records(run_dir)
    lines[0]["val_error"] -= 10
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as stream:
        stream.writelines(json.dumps(line) + "\n" for line in lines)
    assert_one_line_error(dnsd("audit", run_dir, "--epoch", "2"), "metrics.jsonl line 1", "altered", code=4)


@pytest.mark.slow
def test_an_edited_missing_or_resealed_manifest_leaves_bit_identity_alone_to_verify(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    path = os.path.join(run_dir, "environment.json")
    manifest = read_json(path)
    manifest["entries"][0]["device"]["kind"] = "gpu"
    Path(path).write_text(json.dumps(manifest))
    for said in ("environment.json: entry 1 was altered", "has no entry for the session that trained"):
        result = dnsd("audit", run_dir)
        assert result.returncode == 0, audit_lines(result)  # the re-training is bit-identical all the same
        assert said in result.stdout and "only what re-trains bit for bit can be verified" in result.stdout
        manifest["entries"][0]["sha256"] = seal(manifest["entries"][0])
        Path(path).write_text(json.dumps(manifest))
    os.remove(path)
    result = dnsd("audit", run_dir)
    assert result.returncode == 0 and "environment.json is missing" in result.stdout, audit_lines(result)


@pytest.mark.slow
def test_a_run_without_digests_or_without_the_epoch_asked_is_refused(mini_run, tmp_path):
    assert_one_line_error(dnsd("audit", mini_run, "--epoch", "3"), "has trained epochs 1 to 2")
    run_dir = copy_of(mini_run, tmp_path)
    os.remove(os.path.join(run_dir, "epoch-1.pdckpt"))
    os.remove(os.path.join(run_dir, "best.pdckpt"))
    assert_one_line_error(dnsd("audit", run_dir, "--epoch", "2"), "epoch-1.pdckpt is missing", code=4)
    path = os.path.join(run_dir, "config.yaml")
    raw = read_yaml(path)
    raw["run"]["keep_every"] = 0  # a setting: the run no longer promises kept checkpoints
    Path(path).write_text(yaml.safe_dump(raw))
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
    entries = read_json(os.path.join(run_dir, "environment.json"))["entries"]
    assert len(entries) == 2 and entries[1]["command"][:3] == ["dnsd", "train", "--resume"]
    again = records(run_dir)
    assert [record["environment_sha256"] for record in again] == [entry["sha256"] for entry in entries]
    assert [record["weights_sha256"] for record in again] == [record["weights_sha256"] for record in first]


def test_only_every_nth_epoch_is_kept(tiny_archive, tmp_path):
    run_dir = str(tmp_path / "run")
    run = [*TINY_RUN, "--epochs", "3", "--keep-every", "2"]
    assert dnsd("train", "--data-file", tiny_archive, "--output-dir", run_dir, *run).returncode == 0
    assert sorted(name for name in os.listdir(run_dir) if name.startswith("epoch-")) == ["epoch-2.pdckpt"]


def forge_epoch(run_dir, epoch, tensor="fc.weight", change=0.05):
    """Change a tensor of an epoch's weights and re-seal every file that names them."""
    forge_state(run_dir, epoch, lambda state: state["model"].update({tensor: state["model"][tensor] +
                                                                     np.float32(change)}))


def audit_lines(result):
    return result.stdout + result.stderr


@pytest.mark.slow
def test_a_forged_epoch_fails_whatever_device_it_claims_and_without_its_manifest(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    forge_epoch(run_dir, 2)
    result = dnsd("audit", run_dir, "--epoch", "2")
    assert result.returncode == 4 and "audit: epoch 2: failed" in result.stdout, audit_lines(result)
    claim_gpu(run_dir)
    for manifest in ("claiming an H100", "removed"):
        result = dnsd("audit", run_dir, "--epoch", "2")
        assert result.returncode == 4, (manifest, audit_lines(result))
        assert "its step losses are reproduced here bit for bit" in result.stdout
        if os.path.exists(os.path.join(run_dir, "environment.json")):
            os.remove(os.path.join(run_dir, "environment.json"))


@pytest.mark.slow
def test_an_honest_run_of_other_numerics_is_consistent_and_a_changed_recipe_is_not(tmp_path, mini_archive):
    """A run trained with a 10 % higher learning rate or another seed, re-sealed to claim the recipe and a GPU,
    fails; the same run honestly claimed (its own config, its own CPU) passes across numerics."""
    run = ["--data-file", mini_archive, *MINI_RUN, "--epochs", "3", "-o", "train.lr_decay_at=1.0"]
    folders = {}
    for name, extra in (("honest", ["--cpu-numerics", "native"]), ("lr", ["-o", "train.lr=0.11"]),
                        ("seed", ["--seed", "1"])):
        folders[name] = str(tmp_path / name)
        result = dnsd("train", "--output-dir", folders[name], *run, *extra)
        assert result.returncode == 0, result.stderr
    honest = dnsd("audit", folders["honest"], "--epoch", "2", "--cpu-numerics", "portable")
    assert honest.returncode == 0, audit_lines(honest)
    if "bit-identical" in honest.stdout:
        pytest.skip("native and portable numerics compute the same bits on this machine: no run of other numerics")
    assert "consistent with its recipe within the rounding noise measured here" in honest.stdout
    claim(folders["lr"], "train.lr", 0.1, reschedule=False)
    assert_one_line_error(dnsd("audit", folders["lr"], "--epoch", "2"), "holds the learning rate 0.011 after epoch 3",
                          "schedule gives 0.01", code=4)
    claim(folders["lr"], "train.lr", 0.1)
    claim(folders["seed"], "run.seed", 0)
    for name in ("lr", "seed"):
        claim_gpu(folders[name])
        result = dnsd("audit", folders[name], "--epoch", "2")
        assert result.returncode == 4, (name, audit_lines(result))
        assert "inconsistent with its recipe" in result.stdout


@pytest.mark.slow
def test_a_config_changed_after_training_is_named(mini_run, tmp_path):
    run_dir = copy_of(mini_run, tmp_path)
    path = os.path.join(run_dir, "config.yaml")
    raw = read_yaml(path)
    raw["run"]["seed"] = 7
    Path(path).write_text(yaml.safe_dump(raw))
    assert_one_line_error(dnsd("audit", run_dir, "--epoch", "2"), "run.seed is 7", "altered", code=4)


@pytest.mark.slow
def test_checkpoints_saved_within_an_epoch_are_audited_and_listed(tiny_archive, tmp_path):
    run_dir = str(tmp_path / "run")
    result = dnsd("train", "--data-file", tiny_archive, "--output-dir", run_dir, *TINY_RUN, "--keep-every", "1",
                  "-o", "run.eval_every_iterations=3")
    assert result.returncode == 0, result.stderr
    best = read_checkpoint(os.path.join(run_dir, "best.pdckpt"))
    assert best["step"] > 0  # saved at an evaluation point within an epoch
    audited = dnsd("audit", run_dir, "--all")
    assert audited.returncode == 0, audit_lines(audited)
    position = f"epoch {best['epochs_done'] + 1}, step {best['step']}"
    assert f"audit: {position}: verified: bit-identical" in audited.stdout
    assert f"best.pdckpt ({position}): verified" in audited.stdout
    best["model"]["fc.weight"] = np.zeros_like(best["model"]["fc.weight"])
    save_checkpoint(os.path.join(run_dir, "best.pdckpt"), best)
    forged = dnsd("audit", run_dir)  # by default: best.pdckpt's position, what users load
    assert forged.returncode == 4, audit_lines(forged)
    assert "best.pdckpt was altered after it was written" in forged.stdout


@pytest.mark.slow
def test_a_sample_of_epochs_is_drawn_from_the_seed_it_prints_and_passes_only_where_it_covers_best(mini_run):
    best = read_checkpoint(os.path.join(mini_run, "best.pdckpt"))["epochs_done"]
    for seed in range(8):
        result = dnsd("audit", mini_run, "--sample", "1", "--sample-seed", str(seed))
        assert "auditing 1 of 2 auditable epochs drawn with --sample-seed" in result.stdout
        drawn = int(result.stdout.split("audit: epoch ")[1].split(":")[0])
        assert result.returncode == (0 if drawn == best else 2), audit_lines(result)
        if drawn != best:
            assert "best.pdckpt, the file users load, is not covered" in result.stderr
    assert_one_line_error(dnsd("audit", mini_run, "--sample", "5"), "--sample 5", "2 auditable epochs")


def retrained(weights, losses, predictions, fields=None):
    tensors = {f"model:{name}": array for name, array in weights.items()}
    return Retrained(tensors, fields or {"epochs_done": 2}, "", {"step_losses": losses}, 1.0, {},
                     np.array(predictions))


def group(stem, fc):
    return {"stem.0.weight": np.array(stem, np.float32), "fc.weight": np.array(fc, np.float32)}


def recorded(stem, fc, fields=None):
    return {f"model:{name}": array for name, array in group(stem, fc).items()}, fields or {"epochs_done": 2}


FIRST = retrained(group([1.1, 0.9], [1.2, 0.8]), [2.0, 1.9, 1.8], [0, 1, 2, 3])
NOISE = [retrained(group([1.1001, 0.9001], [1.2002, 0.8002]), [2.0, 1.90001, 1.8002], [0, 1, 2, 4]),
         retrained(group([1.0999, 0.8999], [1.1998, 0.7998]), [2.0, 1.89999, 1.7998], [0, 1, 2, 3])]


def test_tensors_predictions_and_losses_within_the_measured_rounding_noise_are_consistent():
    verdict = across_builds(recorded([1.1001, 0.8999], [1.1999, 0.8001]), np.array([0, 1, 2, 4]),
                            [2.0, 1.90001, 1.7999], FIRST, NOISE)
    assert verdict.outcome == VERIFIED, verdict.lines
    assert [line.split(":")[0] for line in verdict.lines[1:]] == ["tensors", "predictions", "step losses"]


def test_a_tensor_predictions_losses_or_an_exact_field_beyond_the_noise_are_inconsistent_and_named():
    forged = across_builds(recorded([1.1, 0.9], [1.25, 0.8]), np.array([0, 1, 2, 3]), None, FIRST, NOISE)
    assert forged.outcome == FAILED and "model:fc.weight" in forged.lines[0] and "tensors are" in forged.lines[0]
    flipped = across_builds(recorded([1.1, 0.9], [1.2, 0.8]), np.array([1, 2, 3, 0]), None, FIRST, NOISE)
    assert flipped.outcome == FAILED and "predictions are 4.0x" in flipped.lines[0]
    losses = across_builds(recorded([1.1, 0.9], [1.2, 0.8]), np.array([0, 1, 2, 3]), [2.0, 1.95, 1.8], FIRST, NOISE)
    assert losses.outcome == FAILED and "step losses are" in losses.lines[0] and "step 2" in losses.lines[0]
    counted = across_builds(recorded([1.1, 0.9], [1.2, 0.8], {"epochs_done": 3}), np.array([0, 1, 2, 3]), None,
                            FIRST, NOISE)
    assert counted.outcome == FAILED and "its epochs_done is 3" in counted.lines[0]


def test_step_losses_alone_never_verify_a_model_across_builds():
    verdict = across_builds(None, None, [2.0, 1.9, 1.8], FIRST, NOISE)
    assert verdict.outcome == UNVERIFIED and "step losses alone" in verdict.lines[0]
