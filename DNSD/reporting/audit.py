"""dnsd audit: re-train an epoch of a run from the checkpoint it started from, with the run's own config, in a
temporary folder, and compare the weights with the digest the run recorded. Every file is checked against the
others before anything is trained: a checkpoint's weights against the record sealed in it, that record against
metrics.jsonl, the record's session against environment.json."""
import copy
import dataclasses
import os
import re
import tempfile

import numpy as np
import paddle

from DNSD.changes import for_checkpoint
from DNSD.config import config_from_dict, load_yaml
from DNSD.datasets import load_splits
from DNSD.errors import AuditFailed, InputError, TrainingStopped
from DNSD.files import read_json
from DNSD.models import build_model
from DNSD.runs.checkpoint import check_resume_state, check_same_data, read_state, restore_model
from DNSD.runs.folder import BEST, BRANCH, CONFIG, KEPT, LAST, MANIFEST, METRICS, read_records, sweep_folders
from DNSD.runs.manifest import describe_environment, entry_for, flatten, manifest_differences, numerics, read_manifest
from DNSD.system.device import describe_device, select_run_device
from DNSD.training.loop import Diverged, Interrupted, Trainer
from DNSD.training.ranks import host_weights, weights_digest

SHOWN_DIFFERENCES = 12  # manifest differences printed; the rest are counted


@dataclasses.dataclass
class AuditedRun:
    folder: str
    config: object
    records: list  # metrics.jsonl, epoch K at index K - 1
    manifest: list  # environment.json's entries, or None for a run trained before DNSD wrote one
    kept: dict  # epoch: the paths of the checkpoints that hold the model at that epoch's end
    branched_at: int  # the epochs a branch's source trained (branch.json), or None
    states: dict = dataclasses.field(default_factory=dict)  # the checkpoints read so far, by path

    def path(self, name):
        return os.path.join(self.folder, name)

    def checkpoint(self, path):
        """A checkpoint's state, read (and its digest checked) once however often it is asked for."""
        if path not in self.states:
            self.states[path] = read_state(path)
        return self.states[path]


@dataclasses.dataclass
class Plan:
    """What one epoch's audit starts from and compares with, each file checked."""

    epoch: int
    start: tuple  # (path, state) of the checkpoint of epoch - 1, or None: the seed's initialisation
    ends: list  # (path, state) of the kept checkpoints of the epoch
    altered: list  # the paths of ends whose weights do not match the record sealed in them
    entry: dict  # the manifest entry of the session that trained the epoch, or None


def open_run(folder, stated):
    """The run in folder with its records, manifest and kept checkpoints; InputError for anything else."""
    if not os.path.isfile(os.path.join(folder, CONFIG)):
        several = bool(sweep_folders([folder]))
        raise InputError(f"{folder} holds several runs; audit one of them, e.g. {os.path.join(folder, 'seed-0')}"
                         if several else f"{folder} holds no run ({CONFIG}); pass the output folder of a training run")
    path = os.path.join(folder, CONFIG)
    config = for_checkpoint(config_from_dict(load_yaml(path), where=f" in {path}"), stated, "dnsd audit")
    records = read_records(folder, ["val_error"])
    for number, record in enumerate(records, 1):
        if record["epoch"] != number:
            raise InputError(f"{os.path.join(folder, METRICS)} line {number} is epoch {record['epoch']}, not "
                             f"{number}: the file was edited or damaged; restore it from a copy of the run folder")
        if not re.fullmatch(r"[0-9a-f]{64}", str(record.get("weights_sha256"))):
            raise InputError(f"{os.path.join(folder, METRICS)} line {number} holds no weight digest: the run was "
                             "trained before DNSD recorded them (1.1.0), or the file was edited; nothing to audit "
                             "against")
    branch = read_json(os.path.join(folder, BRANCH)) if os.path.isfile(os.path.join(folder, BRANCH)) else None
    if branch is not None and not (isinstance(branch, dict) and type(branch.get("epochs_done")) is int):
        raise InputError(f"{os.path.join(folder, BRANCH)} is damaged; restore it from a copy of the run folder")
    run = AuditedRun(folder, config, records, read_manifest(folder), {}, branch and branch["epochs_done"])
    for name in os.listdir(folder):
        found = re.fullmatch(KEPT.format(r"([1-9][0-9]*)"), name)
        if found:
            run.kept.setdefault(int(found.group(1)), []).append(run.path(name))
    for name in (LAST, BEST):
        if os.path.isfile(run.path(name)):
            state = run.checkpoint(run.path(name))
            if state.get("step") == 0:  # saved at an epoch's end, not within one
                run.kept.setdefault(state["epochs_done"], []).append(run.path(name))
    return run


def auditable_epochs(run):
    """The epochs whose start is at hand: epoch 1 from the seed (not in a branch), K + 1 from a kept checkpoint of K."""
    starts = set(run.kept) | ({0} if run.branched_at is None else set())
    first = (run.branched_at or 0) + 1
    return sorted(start + 1 for start in starts if first <= start + 1 <= len(run.records))


def choose_epochs(run, epoch, every):
    allowed = auditable_epochs(run)
    if every or epoch is None:
        if not allowed:
            raise InputError(f"{run.folder} keeps no checkpoint an epoch of its own starts from; train with "
                             "--keep-every 1 to audit any epoch")
        return allowed if every else allowed[-1:]
    if not 1 <= epoch <= len(run.records):
        raise InputError(f"--epoch {epoch}: {run.folder} has trained epochs 1 to {len(run.records)}")
    if run.branched_at is not None and epoch <= run.branched_at:
        raise InputError(f"epoch {epoch} was trained by the run this one branched from ({run.path(BRANCH)}): audit "
                         "it there")
    if epoch not in allowed:
        near = ", ".join(map(str, allowed[-5:])) or "none"
        raise InputError(f"--epoch {epoch}: {run.folder} keeps no checkpoint of epoch {epoch - 1} to start from "
                         f"(auditable epochs: {near}); train with --keep-every 1 to audit any epoch")
    return [epoch]


def sealed_record(run, path, state, epoch):
    """The record of epoch that the checkpoint sealed in its history, checked against metrics.jsonl."""
    history = state.get("history")
    sealed = history[epoch - 1] if isinstance(history, list) and len(history) >= epoch else None
    if sealed != run.records[epoch - 1]:
        raise InputError(f"{run.path(METRICS)} line {epoch} and the record sealed in {path} disagree: one of them "
                         "was altered after it was written; restore the run folder from a copy")
    return sealed


def plan(run, epoch):
    """Check every file the audit of epoch reads, before anything is trained."""
    start = None
    if epoch > 1 or run.branched_at is not None:
        path = run.kept[epoch - 1][0]
        state = run.checkpoint(path)
        if weights_digest(state["model"]) != sealed_record(run, path, state, epoch - 1)["weights_sha256"]:
            raise InputError(f"{path} was altered after it was written: its weights do not match the digest of "
                             f"epoch {epoch - 1} sealed with them; restore it from a copy, or audit another epoch")
        start = (path, state)
    ends, altered = [], []
    for path in run.kept.get(epoch, []):
        state = run.checkpoint(path)
        ends.append((path, state))
        if weights_digest(state["model"]) != sealed_record(run, path, state, epoch)["weights_sha256"]:
            altered.append(path)
    digest = run.records[epoch - 1].get("environment_sha256")
    entry = entry_for(run.manifest, digest)
    if run.manifest is not None and entry is None:
        raise InputError(f"{run.path(MANIFEST)} has no entry for the session that trained epoch {epoch} "
                         f"(sha256 {str(digest)[:12]}...): it was altered or replaced; restore it from a copy")
    return Plan(epoch, start, ends, altered, entry)


def retrain(run, planned, device):
    """The weights (by name) and the epoch's record after re-training it, in a temporary folder removed after."""
    config = copy.deepcopy(run.config)
    config.run.keep_every = 0  # nothing of the temporary folder is kept
    path, state = planned.start or (None, None)
    data = load_splits(config, state and state["normalizer"])
    if state:
        check_same_data(state, data, path)
    elif planned.entry and planned.entry["data"]["sha256"] != data.identity["sha256"]:
        raise InputError(f"{data.identity['file']} is not the archive {run.folder} was trained on (sha256 "
                         f"{planned.entry['data']['sha256'][:12]}...); pass that archive with --data-file")
    with tempfile.TemporaryDirectory(prefix="dnsd-audit-") as folder:
        config.run.output_dir = folder
        if state:
            model = restore_model(state, path)
            check_resume_state(state, model, path, -(-len(data.train) // config.train.batch_size))
            trainer = Trainer(config, folder, data, model, state)
        else:
            paddle.seed(config.run.seed)  # the initialisation, as a new run draws it
            trainer = Trainer(config, folder, data, build_model(config.model, data.num_classes))
        print(f"DNSD: auditing epoch {planned.epoch} of {run.folder}: re-training it from "
              f"{path or f'the initialisation of seed {config.run.seed}'} on {describe_device(device)}", flush=True)
        try:
            trainer.train(until=planned.epoch)
        except (Diverged, Interrupted) as stopped:
            raise TrainingStopped(f"the audit's re-training stopped: {stopped.what}; nothing in {run.folder} was "
                                  "changed", stopped.exit_code, stopped.label) from None
        return host_weights(trainer.model), trainer.history[-1], data.identity


def first_difference(weights, reference):
    """(name, largest relative difference) of the first tensor in which two sets of weights differ, or None."""
    for name, array in weights.items():
        if array.tobytes() != reference[name].tobytes():
            return name, relative_difference(array, reference[name])
    return None


def relative_difference(array, reference):
    if not reference.size:
        return 0.0
    reference = reference.astype(np.float64)
    scale = max(float(np.abs(reference).max()), np.finfo(np.float32).tiny)
    return float(np.abs(array.astype(np.float64) - reference).max()) / scale


def group_differences(weights, reference):
    """{group: largest relative difference} per top-level part of the network (stem, blocks, fc, ...)."""
    groups = {}
    for name, array in weights.items():
        group = name.split(".")[0]
        groups[group] = max(groups.get(group, 0.0), relative_difference(array, reference[name]))
    return groups


def numerics_differences(entry, current):
    """What decides a step's bits and differs between the run's session and this one, in a few words."""
    ours, theirs = flatten(numerics(entry)), flatten(numerics(current))
    return "; ".join(f"{key} {ours.get(key)} in the run, {theirs.get(key)} here" for key in ours
                     if ours.get(key) != theirs.get(key))


def judge(run, planned, weights, record, current):
    """The verdict's lines for one epoch and whether it fails the audit."""
    epoch, recorded = planned.epoch, run.records[planned.epoch - 1]
    digest = weights_digest(weights)
    intact = [(path, state) for path, state in planned.ends if path not in planned.altered]
    comparable = planned.entry is not None and numerics(planned.entry) == numerics(current)
    lines, failed = [], False
    for path, state in planned.ends:
        if path in planned.altered:
            found = first_difference(weights, state["model"]) if digest == recorded["weights_sha256"] else None
            tensor = f": tensor {found[0]} differs from the re-trained epoch, which matches {METRICS}" if found else ""
            lines.append(f"{path} was altered after it was written (its weights do not match the digest sealed with "
                         f"them){tensor}")
            failed = True
    if digest == recorded["weights_sha256"]:
        also = f" and {', '.join(path for path, _ in intact)} hold" if intact else ""
        lines.insert(0, f"epoch {epoch}: bit-identical to the run: weights sha256 {digest[:16]}..., as {METRICS} "
                        f"records{also}; val error {record['val_error']:.2f} %; re-trained in "
                        f"{record['epoch_seconds']:.1f} s, {recorded['epoch_seconds']:.1f} s in the run")
        if planned.entry is not None and not comparable:
            lines.insert(1, f"across another build or device: {numerics_differences(planned.entry, current)}")
        return lines, failed
    reference = intact[0] if intact else None
    found = first_difference(weights, reference[1]["model"]) if reference else None
    where = (f"first tensor that differs: {found[0]} (largest relative difference {found[1]:.3g}, against "
             f"{reference[0]})" if found else
             f"no checkpoint of epoch {epoch} is kept to name the tensor (run.keep_every)")
    errors = f"val error {recorded['val_error']:.2f} % in the run, {record['val_error']:.2f} % re-trained"
    if comparable:
        lines.insert(0, f"epoch {epoch}: differs from the run's weights on the same build and device kind; "
                        f"{where}; {errors}")
        return lines, True
    why = "the run has no manifest" if planned.entry is None else "another build or device"
    lines.insert(0, f"epoch {epoch}: not bit-identical ({why}: bit-identity is not expected); {errors}")
    if reference:
        groups = group_differences(weights, reference[1]["model"])
        lines.append("largest relative difference per tensor group, against " + reference[0] + ": " +
                     ", ".join(f"{group} {value:.3g}" for group, value in groups.items()))
    if planned.entry is not None:
        differences = [item for item in manifest_differences(planned.entry, current) if item[0] != "command"]
        lines += [f"  {kind} {key}: {first!r} in the run, {second!r} here"
                  for kind, key, first, second in differences[:SHOWN_DIFFERENCES]]
        if len(differences) > SHOWN_DIFFERENCES:
            lines.append(f"  (+{len(differences) - SHOWN_DIFFERENCES} more differences: dnsd info --compare)")
    return lines, failed


def audit(folder, epoch=None, every=False, stated=None):
    """Audit the chosen epochs of the run in folder; raises AuditFailed where one must not pass."""
    run = open_run(folder, stated or {})
    plans = [plan(run, chosen) for chosen in choose_epochs(run, epoch, every)]
    device = select_run_device(run.config.run)
    failures, current = 0, None
    for planned in plans:
        weights, record, identity = retrain(run, planned, device)
        current = current or describe_environment(device, run.config.run, identity, 1)
        lines, failed = judge(run, planned, weights, record, current)
        print("audit: " + "\n  ".join(lines), flush=True)
        failures += failed
    if failures:
        raise AuditFailed(f"{failures} of {len(plans)} audited epochs of {folder} failed (see above)")
    print(f"audit: {len(plans)} of {len(plans)} epochs of {folder} passed")
