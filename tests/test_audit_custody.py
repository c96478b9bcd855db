"""dnsd audit tried as a forger would: an honest run changed through the public format (read_checkpoint,
save_checkpoint, chain.position_link) and re-sealed wherever the format lets anyone re-seal, then audited. Every
forgery fails (exit 4) or is called unverifiable (exit 2); the honest run, its resume and its branch pass."""
import glob
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cifar_archive import synthetic_batches, write_archive
from DNSD.files import file_digest
from DNSD.runs.chain import position_link
from DNSD.runs.checkpoint_file import read_checkpoint
from forgery import change, claim_data, claim_gpu, forge_state, path, records, reseal_histories
from helpers import ROOT, TINY_RUN, assert_one_line_error, dnsd, read_yaml, real_archive
from test_audit import MINI_RUN, real_run

THREE_EPOCHS = ("--epochs", "3")


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    return real_run(str(tmp_path_factory.mktemp("custody") / "run"), *THREE_EPOCHS)


@pytest.fixture
def forged(honest, tmp_path):
    copy = str(tmp_path / "forged")
    shutil.copytree(honest, copy)
    return copy


def audit(run_dir, *args):
    result = dnsd("audit", run_dir, *args)
    return result, result.stdout + result.stderr


def plant_momentum(state):
    state["optimizer"]["fc.bias_velocity_0"][3] = -30.0


@pytest.mark.slow
def test_the_honest_run_passes_and_says_what_it_covered(honest):
    result, said = audit(honest)
    assert result.returncode == 0, said
    assert "audit: epoch 1: verified: bit-identical" in said and "audit: epoch 3: verified: bit-identical" in said
    assert "not re-trained, their starts kept (--all re-trains them): epoch 2" in said
    assert "best.pdckpt (epoch 3): verified" in said or "best.pdckpt (epoch " in said
    assert "not the official CIFAR-10 archive" in said
    best = read_checkpoint(path(honest, "best.pdckpt"))["epochs_done"]
    planned = f"re-training epoch 1, epoch {best} (2 epochs of training" if best > 1 else "re-training epoch 1 (1 epoch"
    assert planned in said
    assert " left take" not in said  # the run's cost to train is not the audit's
    assert "validation error" in said and "recomputed" in said
    result, said = audit(honest, "--all")
    assert result.returncode == 0, said


@pytest.mark.slow
def test_planted_momentum_is_refused_as_a_start_and_when_resealed_fails_the_first_epoch(forged):
    change(forged, "epoch-1.pdckpt", plant_momentum)
    assert_one_line_error(dnsd("train", "--resume", path(forged, "epoch-1.pdckpt")),
                          "epoch-1.pdckpt does not hold the state its run sealed for epoch 1")
    result, said = audit(forged, "--all")
    assert result.returncode == 4, said
    assert "epoch-1.pdckpt was altered after it was written" in said
    # The forger seals the planted state into epoch 1's record and trains on from it with DNSD's own --resume.
    lines = records(forged)
    lines[0]["state_sha256"] = position_link(read_checkpoint(path(forged, "epoch-1.pdckpt")))
    reseal_histories(forged, lines[:1])
    for name in ("epoch-2.pdckpt", "epoch-3.pdckpt", "last.pdckpt"):
        os.remove(path(forged, name))
    shutil.copyfile(path(forged, "epoch-1.pdckpt"), path(forged, "best.pdckpt"))
    resumed = dnsd("train", "--resume", path(forged, "epoch-1.pdckpt"))
    assert resumed.returncode == 0, resumed.stderr
    result, said = audit(forged)
    assert result.returncode == 4, said
    assert "audit: epoch 1: failed" in said


@pytest.mark.parametrize("name, edit, what", [
    ("best.pdckpt", lambda state: state["normalizer"]["mean"].__iadd__(np.float32(1.0)), "best.pdckpt"),
    ("epoch-2.pdckpt", lambda state: state["classes"].reverse(), "epoch-2.pdckpt"),
    ("last.pdckpt", lambda state: state["totals"].update(steps=1), "last.pdckpt"),
])
@pytest.mark.slow
def test_a_changed_normaliser_class_list_or_counter_is_named_as_altered(forged, name, edit, what):
    change(forged, name, edit)
    result, said = audit(forged)
    assert result.returncode == 4, said
    assert f"{what} was altered after it was written" in said


def forge_last_epoch(run_dir, shift=0.05):
    forge_state(run_dir, 3, lambda state: state["model"].update({"fc.weight": state["model"]["fc.weight"] +
                                                                 np.float32(shift)}))


@pytest.mark.slow
def test_a_claim_of_other_hardware_refuted_by_the_step_losses_fails(forged):
    forge_last_epoch(forged)
    claim_gpu(forged)
    result, said = audit(forged, "--epoch", "3")
    assert result.returncode == 4, said
    assert "its step losses are reproduced here bit for bit" in said


@pytest.mark.slow
def test_without_its_manifest_a_run_that_differs_is_not_verified(forged):
    forge_last_epoch(forged)
    os.remove(path(forged, "environment.json"))
    lines = [{key: value for key, value in line.items() if key != "environment_sha256"} for line in records(forged)]
    lines[2]["step_losses"] = [loss * 1.001 for loss in lines[2]["step_losses"]]  # no longer reproduced
    reseal_histories(forged, lines)
    result, said = audit(forged, "--epoch", "3")
    assert result.returncode == 2, said
    assert "the run has no environment.json" in said and "no looser test applies" in said


@pytest.mark.parametrize("name, field", [("summary.json", "test_error"), ("best.test.json", "error"),
                                         ("summary.json", "best_val_error")])
@pytest.mark.slow
def test_an_edited_reported_error_fails(forged, name, field):
    with open(path(forged, name)) as stream:
        document = json.load(stream)
    document[field] -= 5.0
    with open(path(forged, name), "w") as stream:
        json.dump(document, stream)
    result, said = audit(forged)
    assert result.returncode == 4, said
    assert f"{name} states otherwise" in said


@pytest.mark.slow
def test_a_best_checkpoint_not_chosen_by_validation_error_fails(forged):
    best = read_checkpoint(path(forged, "best.pdckpt"))["epochs_done"]
    other = next(line["epoch"] for line in records(forged)
                 if line["val_error"] != records(forged)[best - 1]["val_error"])
    shutil.copyfile(path(forged, f"epoch-{other}.pdckpt"), path(forged, "best.pdckpt"))
    result, said = audit(forged)
    assert result.returncode == 4, said
    assert "it was not chosen by validation error" in said


@pytest.mark.slow
def test_a_run_whose_best_checkpoint_cannot_be_re_trained_is_not_verified(forged):
    best = read_checkpoint(path(forged, "best.pdckpt"))["epochs_done"]
    if best == 1:
        pytest.skip("the best epoch of this run is its first, which re-trains from the seed")
    for epoch in range(1, 4):
        os.remove(path(forged, f"epoch-{epoch}.pdckpt"))
    config = read_yaml(path(forged, "config.yaml"))
    config["run"]["keep_every"] = 0
    with open(path(forged, "config.yaml"), "w") as stream:
        yaml.safe_dump(config, stream)
    result, said = audit(forged, "--all")
    assert result.returncode == 2, said
    assert "best.pdckpt, the file users load, is not covered" in said and "not re-trainable" in said


@pytest.mark.slow
def test_a_checkpoint_the_config_promises_that_is_missing_fails(forged):
    os.remove(path(forged, "epoch-1.pdckpt"))
    assert_one_line_error(dnsd("audit", forged, "--all"), "epoch-1.pdckpt is missing", "run.keep_every", code=4)


@pytest.mark.slow
def test_a_planted_branch_json_exempts_no_epoch(forged):
    branch = {"from": "/elsewhere/epoch-2.pdckpt", "epochs_done": 2, "step": 0, "changes": {}}
    with open(path(forged, "branch.json"), "w") as stream:
        json.dump(branch, stream)
    result, said = audit(forged)
    assert result.returncode == 2, said  # the branch's start is not in its folder: nothing verifies epoch 3
    shutil.copyfile(path(forged, "epoch-2.pdckpt"), path(forged, "branch.pdckpt"))
    branch["state_sha256"] = position_link(read_checkpoint(path(forged, "branch.pdckpt")))
    with open(path(forged, "branch.json"), "w") as stream:
        json.dump(branch, stream)
    result, said = audit(forged)
    assert result.returncode == 4, said
    assert "epoch-3.pdckpt was altered after it was written" in said


@pytest.mark.slow
def test_an_honest_resume_and_an_honest_branch_pass(honest, tmp_path):
    resumed = str(tmp_path / "resumed")
    shutil.copytree(honest, resumed)
    assert dnsd("train", "--resume", path(resumed, "epoch-1.pdckpt")).returncode == 0
    result, said = audit(resumed, "--all")
    assert result.returncode == 0, said
    branch = str(tmp_path / "branch")
    made = dnsd("train", "--resume", path(honest, "epoch-2.pdckpt"), "--branch", branch, "-o", "train.lr=0.05")
    assert made.returncode == 0, made.stderr
    result, said = audit(branch)
    assert result.returncode == 0, said
    assert "re-training it from " + path(branch, "branch.pdckpt") in said
    assert "not audited here: epochs 1 to 2, trained by the run this one branched from" in said


@pytest.mark.slow
def test_a_run_trained_on_other_images_that_claims_the_archive_fails(tmp_path):
    """10 % of the training images swapped among themselves: the run then claims the real archive's identity."""
    batches = synthetic_batches(40, learnable=True)
    real = write_archive(str(tmp_path / "real.tar.gz"), batches)
    swapped = {member: (images.copy(), labels) for member, (images, labels) in batches.items()}
    for member, (images, _) in swapped.items():
        if "data_batch" in member:
            images[:4] = images[[1, 2, 3, 0]]
    other = write_archive(str(tmp_path / "swapped.tar.gz"), swapped)
    run_dir = str(tmp_path / "run")
    result = dnsd("train", "--data-file", other, "--output-dir", run_dir, *TINY_RUN, "--keep-every", "1")
    assert result.returncode == 0, result.stderr
    assert_one_line_error(dnsd("audit", run_dir, "--data-file", real), "is not the archive")
    claim_data(run_dir, {"file": real, "bytes": os.path.getsize(real), "sha256": file_digest(real, "sha256")})
    result, said = audit(run_dir, "--data-file", real)
    assert result.returncode == 4, said
    assert "audit: epoch 1: failed" in said


@pytest.mark.slow
def test_a_run_from_before_the_chain_audits_its_weights_and_says_what_it_lacks(forged):
    lines = [{key: value for key, value in line.items() if key != "state_sha256"} for line in records(forged)]
    reseal_histories(forged, lines)
    for name in os.listdir(forged):
        if name.endswith(".pdckpt"):
            change(forged, name, lambda state: state.pop("chain"))
    result, said = audit(forged)
    assert result.returncode == 2, said
    assert "audit: epoch 1: verified: bit-identical" in said
    assert "the records seal each epoch's weights only (DNSD before 1.6.0)" in said


def test_every_verdict_the_docs_quote_is_one_the_audit_prints():
    """docs/reproducing.md's verdicts, each in backticks, stand in the audit's code as it prints them."""
    docs = Path(ROOT, "docs", "reproducing.md").read_text()
    section = re.sub(r"```.*?```", "", docs[docs.index("**The audit.**"):docs.index("**What an audit proves.**")],
                     flags=re.DOTALL)
    quoted = [" ".join(text.split()) for text in re.findall(r"`([^`]+)`", section)
              if text.startswith(("verified", "failed", "cannot be verified"))]
    assert len(quoted) >= 4, quoted
    code = "".join(Path(name).read_text() for name in glob.glob(os.path.join(ROOT, "DNSD", "audits", "*.py")))
    for verdict in quoted:
        outcome, _, text = verdict.partition(": ")
        assert outcome in ("verified", "failed", "cannot be verified") and (not text or text in code), verdict


@pytest.mark.slow
def test_records_cut_short_are_named_before_anything_is_trained(forged):
    lines = records(forged)
    with open(path(forged, "metrics.jsonl"), "w") as stream:
        stream.writelines(json.dumps(line) + "\n" for line in lines[:2])
    assert_one_line_error(dnsd("audit", forged), "holds an epoch that", "metrics.jsonl does not record")


@pytest.mark.slow
def test_an_edited_test_error_in_the_records_fails_where_its_epoch_is_re_trained(forged):
    lines = records(forged)
    best = read_checkpoint(path(forged, "best.pdckpt"))["epochs_done"]
    lines[best - 1]["test_error"] -= 5.0
    reseal_histories(forged, lines)
    result, said = audit(forged)
    assert result.returncode == 4, said
    assert f"metrics.jsonl line {best}'s test_error is not what the re-training computes" in said


@pytest.mark.slow
def test_a_run_trained_on_two_threads_is_verified_bit_for_bit(tmp_path):
    run_dir = str(tmp_path / "run")
    trained = dnsd("train", "--data-file", real_archive(), "--output-dir", run_dir, *MINI_RUN, *THREE_EPOCHS, "-o",
                   "run.cpu_threads=2", env=dict(os.environ))  # a process of its own: threads are the process's
    assert trained.returncode == 0, trained.stderr
    result, said = audit(run_dir, "-o", "run.cpu_threads=1")
    assert result.returncode == 0, said
    assert "audit: epoch 1: verified: bit-identical" in said
