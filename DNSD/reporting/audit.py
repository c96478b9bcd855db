"""dnsd audit: re-train a position of a run (an epoch's end, or a checkpoint saved within an epoch) from the checkpoint
it started from, with the run's own config, in a temporary folder, and compare it with what the run says it holds
there (verdicts.py). Every file is checked against the others before anything is trained."""
import copy
import dataclasses
import math
import os
import random
import re
import tempfile

import numpy as np
import paddle

from DNSD.changes import for_checkpoint, recipe
from DNSD.config import config_from_dict, load_yaml
from DNSD.datasets import load_splits
from DNSD.errors import AuditFailed, AuditUnverified, InputError, TrainingStopped
from DNSD.models import build_model
from DNSD.reporting.verdicts import (FAILED, UNVERIFIED, VERIFIED, Retrained, Verdict, across_builds,
                                     first_difference)
from DNSD.runs.checkpoint import check_resume_state, check_same_data, read_state, restore_model
from DNSD.runs.folder import (BEST, BRANCH, CONFIG, KEPT, LAST, MANIFEST, METRICS, branched_at,
                              read_evaluation_points, read_records, sweep_folders)
from DNSD.runs.manifest import describe_environment, entry_for, manifest_differences, numerics, read_manifest
from DNSD.system.device import describe_device, select_run_device
from DNSD.training.loop import Diverged, Interrupted, Trainer
from DNSD.training.optimizer import rate_at
from DNSD.training.ranks import host_weights, weights_digest

SHOWN_DIFFERENCES = 12  # manifest differences printed; the rest are counted


@dataclasses.dataclass
class AuditedRun:
    folder: str
    config: object
    records: list  # metrics.jsonl, epoch K at index K - 1
    points: list  # points.jsonl (run.eval_every_iterations), or []
    manifest: list  # environment.json's entries, or None for a run trained before DNSD wrote one
    kept: dict  # epoch: the paths of the checkpoints that hold the model at that epoch's end
    within: list  # (path, epoch, step) of best.pdckpt and last.pdckpt where saved within an epoch
    branched_at: int  # the epochs a branch's source trained (branch.json), or None
    states: dict = dataclasses.field(default_factory=dict)  # the checkpoints read so far, by path

    def path(self, name):
        return os.path.join(self.folder, name)

    def checkpoint(self, path):
        """A checkpoint's state, read (its digest and its recipe checked) once however often it is asked for."""
        if path not in self.states:
            state = read_state(path)
            ours, sealed = recipe(self.config), recipe(state["config"])
            changed = [key for key in ours if ours[key] != sealed.get(key)]
            if changed and (self.branched_at is None or state["epochs_done"] > self.branched_at):
                raise AuditFailed(f"{self.path(CONFIG)} says {changed[0]} is {ours[changed[0]]!r}, the config sealed "
                                  f"in {path} {sealed.get(changed[0])!r}: the run's config was altered after it "
                                  "trained")
            rate, scheduler = rate_at(state["config"].train, state["epochs_done"]), state.get("scheduler") or {}
            if not math.isclose(scheduler.get("last_lr", rate), rate, rel_tol=1e-9):
                raise AuditFailed(f"{path} holds the learning rate {scheduler['last_lr']:.6g} after epoch "
                                  f"{state['epochs_done']}, where its config's schedule gives {rate:.6g}: it was "
                                  "altered after it was written")
            self.states[path] = state
        return self.states[path]


@dataclasses.dataclass
class Target:
    """A position to re-train to, each file about it checked: the end of `epoch` (step 0) or `step` steps into it."""

    epoch: int
    step: int
    start: tuple  # (path, state) of the checkpoint at the end of epoch - 1, or None: the seed's initialisation
    files: list  # (path, state) of the checkpoints that hold the model at this position
    altered: list  # the paths of files whose weights do not match the record of this position
    record: dict  # metrics.jsonl's line of the epoch, or the evaluation point at the step, or None
    entry: dict  # the manifest entry of the session that trained it, or None

    def name(self):
        return f"epoch {self.epoch}" + (f", step {self.step}" if self.step else "")


def open_run(folder, stated):
    """The run in folder with its records, manifest and checkpoints; InputError for anything else."""
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
    branch = branched_at(folder)
    if branch is not None and branch[0] > len(records):
        raise InputError(f"{os.path.join(folder, BRANCH)} is damaged; restore it from a copy of the run folder")
    manifest = read_manifest(folder)
    if manifest is None and any("environment_sha256" in record for record in records):
        raise InputError(f"{os.path.join(folder, METRICS)} names sessions of {MANIFEST}, which is missing: nothing "
                         "says what trained the run; restore the file from a copy of the run folder")
    run = AuditedRun(folder, config, records, read_evaluation_points(folder), manifest, {}, [],
                     branch and branch[0])
    for name in os.listdir(folder):
        found = re.fullmatch(KEPT.format(r"([1-9][0-9]*)"), name)
        if found:
            run.kept.setdefault(int(found.group(1)), []).append(run.path(name))
    for name in (LAST, BEST):
        if os.path.isfile(run.path(name)):
            state = run.checkpoint(run.path(name))
            if state.get("step"):
                run.within.append((run.path(name), state["epochs_done"] + 1, state["step"]))
            else:
                run.kept.setdefault(state["epochs_done"], []).append(run.path(name))
    return run


def starts(run, epoch):
    """Whether the start of epoch is at hand: the seed's initialisation for epoch 1 (not in a branch), else a kept
    checkpoint of the epoch before, trained by this run."""
    first = (run.branched_at or 0) + 1
    return epoch >= first and (epoch - 1 in run.kept or (epoch == 1 and run.branched_at is None))


def positions(run):
    """Every position an audit can re-train: (epoch, 0) for each epoch recorded, (epoch, step) for each checkpoint
    saved within an epoch, whose start is at hand."""
    ends = [(epoch, 0) for epoch in range(1, len(run.records) + 1) if starts(run, epoch)]
    return ends + sorted({(epoch, step) for _, epoch, step in run.within if starts(run, epoch)})


def choose(run, epoch=None, every=False, sample=None, sample_seed=None):
    """The positions asked for: --all, --epoch K, --sample N of the epochs, or by default the position of
    best.pdckpt (what users load), else the last epoch whose start is kept."""
    allowed = positions(run)
    if not allowed:
        raise InputError(f"{run.folder} keeps no checkpoint an epoch of its own starts from; train with "
                         "--keep-every 1 to audit any epoch")
    if every:
        return allowed
    if sample is not None:
        ends = [position for position in allowed if not position[1]]
        if not 1 <= sample <= len(ends):
            raise InputError(f"--sample {sample}: {run.folder} has {len(ends)} auditable epochs; sample 1 to "
                             f"{len(ends)}")
        print(f"DNSD: auditing {sample} of {len(ends)} auditable epochs drawn with --sample-seed {sample_seed}")
        return sorted(random.Random(sample_seed).sample(ends, sample))
    if epoch is None:
        best = [(found, step) for path, found, step in run.within if path == run.path(BEST)] + \
            [(done, 0) for done, paths in run.kept.items() if run.path(BEST) in paths]
        ends = [position for position in allowed if not position[1]]
        return [position for position in best if position in allowed][:1] or ends[-1:] or allowed[-1:]
    if not 1 <= epoch <= len(run.records):
        raise InputError(f"--epoch {epoch}: {run.folder} has trained epochs 1 to {len(run.records)}")
    if run.branched_at is not None and epoch <= run.branched_at:
        raise InputError(f"epoch {epoch} was trained by the run this one branched from ({run.path(BRANCH)}): audit "
                         "it there")
    if (epoch, 0) not in allowed:
        near = ", ".join(str(found) for found, step in allowed[-5:] if not step) or "none"
        raise InputError(f"--epoch {epoch}: {run.folder} keeps no checkpoint of epoch {epoch - 1} to start from "
                         f"(auditable epochs: {near}); train with --keep-every 1 to audit any epoch")
    return [(epoch, 0)]


def sealed_record(run, path, state, epoch):
    """The record of epoch that the checkpoint sealed in its history, checked against metrics.jsonl."""
    history = state.get("history")
    sealed = history[epoch - 1] if isinstance(history, list) and len(history) >= epoch else None
    if sealed != run.records[epoch - 1]:
        raise AuditFailed(f"{run.path(METRICS)} line {epoch} and the record sealed in {path} disagree: one of them "
                         "was altered after it was written; restore the run folder from a copy")
    return sealed


def plan(run, position):
    """Check every file the audit of a position reads, before anything is trained."""
    epoch, step = position
    start = None
    if epoch > 1 or run.branched_at is not None:
        path = run.kept[epoch - 1][0]
        state = run.checkpoint(path)
        if weights_digest(state["model"]) != sealed_record(run, path, state, epoch - 1)["weights_sha256"]:
            raise AuditFailed(f"{path} was altered after it was written: its weights do not match the digest of "
                             f"epoch {epoch - 1} sealed with them; restore it from a copy, or audit another epoch")
        start = (path, state)
    if step:
        paths = [path for path, found, at in run.within if (found, at) == position]
        record = next((point for point in run.points if (point["epoch"], point["step"]) == position), None)
    else:
        paths, record = run.kept.get(epoch, []), run.records[epoch - 1]
    files, altered = [], []
    for path in paths:
        state = run.checkpoint(path)
        files.append((path, state))
        if step:
            if epoch > 1:
                sealed_record(run, path, state, epoch - 1)
            digest = (record or {}).get("weights_sha256")
            if digest is None:
                continue  # last.pdckpt within an epoch: no record but itself; the re-training checks it
        else:
            digest = sealed_record(run, path, state, epoch)["weights_sha256"]
        if weights_digest(state["model"]) != digest:
            altered.append(path)
    session = (record or {}).get("environment_sha256") or (
        run.records[epoch - 1].get("environment_sha256") if epoch <= len(run.records) else
        run.manifest and run.manifest[-1]["sha256"])
    entry = entry_for(run.manifest, session)
    if run.manifest is not None and entry is None:
        raise InputError(f"{run.path(MANIFEST)} has no entry for the session that trained epoch {epoch} "
                         f"(sha256 {str(session)[:12]}...): it was altered or replaced; restore it from a copy")
    return Target(epoch, step, start, files, altered, record, entry)


def retrain(run, target, device, perturbed=False):
    """The target re-trained from its start in a temporary folder, removed after; perturbed: from start weights
    each moved by one unit in the last place, a difference of rounding alone, to measure how far rounding carries."""
    config = copy.deepcopy(run.config)
    config.run.keep_every = 0  # nothing of the temporary folder is kept
    path, state = target.start or (None, None)
    # Training changes the history and totals it starts from, and a target is re-trained twice across builds.
    state = copy.deepcopy(state)
    data = load_splits(config, state and state["normalizer"])
    if state:
        check_same_data(state, data, path)
    elif target.entry and target.entry["data"]["sha256"] != data.identity["sha256"]:
        raise InputError(f"{data.identity['file']} is not the archive {run.folder} was trained on (sha256 "
                         f"{target.entry['data']['sha256'][:12]}...); pass that archive with --data-file")
    with tempfile.TemporaryDirectory(prefix="dnsd-audit-") as folder:
        config.run.output_dir = folder
        if state:
            model = restore_model(state, path)
            check_resume_state(state, model, path, -(-len(data.train) // config.train.batch_size))
        else:
            paddle.seed(config.run.seed)  # the initialisation, as a new run draws it
            model = build_model(config.model, data.num_classes)
        start = host_weights(model)
        if perturbed:
            model.set_state_dict({name: np.nextafter(array, np.inf) if array.dtype.kind == "f" else array
                                  for name, array in start.items()})
        trainer = Trainer(config, folder, data, model, state)
        how = ", its weights moved by one unit in the last place to measure the rounding noise" if perturbed else ""
        print(f"DNSD: auditing {target.name()} of {run.folder}: re-training it from "
              f"{path or f'the initialisation of seed {config.run.seed}'} on {describe_device(device)}{how}",
              flush=True)
        try:
            trainer.train(until=target.epoch, within=target.step)
        except (Diverged, Interrupted) as stopped:
            raise TrainingStopped(f"the audit's re-training stopped: {stopped.what}; nothing in {run.folder} was "
                                  "changed", stopped.exit_code, stopped.label) from None
        ended = trainer.history[-1] if not target.step else {"epoch_seconds": trainer.meter.seconds}
        return Retrained(start, host_weights(trainer.model), ended.get("step_losses"), ended["epoch_seconds"],
                         data.identity)


def bit_identical(target, weights):
    """Whether the re-trained weights are the ones the run records at the target."""
    if target.step:
        intact = [state for path, state in target.files if path not in target.altered]
        return bool(intact) and first_difference(weights, intact[0]["model"]) is None
    return weights_digest(weights) == target.record["weights_sha256"]


def judge(run, target, first, device, current):
    """The verdict on a target re-trained once, re-training it a second time from perturbed weights where the run's
    build or device differs from this one's."""
    intact = [(path, state) for path, state in target.files if path not in target.altered]
    identical = bit_identical(target, first.weights)
    altered = []
    for path, state in target.files:
        if path in target.altered:
            found = identical and first_difference(first.weights, state["model"])
            tensor = f": tensor {found[0]} differs from the re-trained weights, which match the record" if found else ""
            altered.append(f"{path} was altered after it was written (its weights do not match the record of "
                           f"{target.name()}){tensor}")
    if identical:
        held = ", ".join(path for path, _ in intact)
        recorded = f"as {METRICS} records" + (f" and {held} hold" if held else "") if not target.step else \
            f"as {held} holds"
        where = f"; re-trained in {first.seconds:.1f} s, {target.record['epoch_seconds']:.1f} s in the run" \
            if not target.step else ""
        line = f"bit-identical to the run: weights sha256 {weights_digest(first.weights)[:16]}..., {recorded}{where}"
        return Verdict(FAILED if altered else VERIFIED, [line, *altered])
    reference = intact[0] if intact else None
    if target.entry is not None and numerics(target.entry) == numerics(current):
        found = first_difference(first.weights, reference[1]["model"]) if reference else None
        where = f"first tensor that differs: {found[0]} (largest relative difference {found[1]:.3g}, against " \
                f"{reference[0]})" if found else f"no checkpoint of {target.name()} is kept to name the tensor"
        return Verdict(FAILED, [f"differs from the run on the same build and device kind; {where}", *altered])
    second = retrain(run, target, device, perturbed=True)
    verdict = across_builds(reference and reference[1]["model"], (target.record or {}).get("step_losses"),
                            first, second)
    if target.entry is not None:
        differences = [item for item in manifest_differences(target.entry, current) if item[0] != "command"]
        verdict.lines += [f"  {kind} {key}: {mine!r} in the run, {theirs!r} here"
                          for kind, key, mine, theirs in differences[:SHOWN_DIFFERENCES]]
        if len(differences) > SHOWN_DIFFERENCES:
            verdict.lines.append(f"  (+{len(differences) - SHOWN_DIFFERENCES} more differences: dnsd info --compare)")
    else:
        verdict.lines.append("  the run has no manifest: what trained it is unknown")
    if altered:
        verdict.outcome, verdict.lines = FAILED, [*verdict.lines, *altered]
    return verdict


def audit(folder, epoch=None, every=False, stated=None, sample=None, sample_seed=None):
    """Audit the chosen positions of the run in folder; raises AuditFailed (exit 4) where one does not follow from
    the run's recipe or a file was altered, AuditUnverified (exit 2) where one could not be verified."""
    run = open_run(folder, stated or {})
    targets = [plan(run, position) for position in choose(run, epoch, every, sample, sample_seed)]
    device = select_run_device(run.config.run)
    verdicts, current = [], None
    for target in targets:
        first = retrain(run, target, device)
        current = current or describe_environment(device, run.config.run, first.identity, 1)
        verdict = judge(run, target, first, device, current)
        print(f"audit: {target.name()}: {verdict.outcome}: " + "\n  ".join(verdict.lines), flush=True)
        verdicts.append((target, verdict))
    verified = [target for target, verdict in verdicts if verdict.outcome == VERIFIED]
    files = sorted({path for target in verified for path, _ in target.files if path not in target.altered})
    print(f"audit: {len(verified)} of {len(targets)} positions of {folder} verified: "
          f"{', '.join(target.name() for target in verified) or 'none'}; files verified: {', '.join(files) or 'none'}")
    outcomes = [verdict.outcome for _, verdict in verdicts]
    if FAILED in outcomes:
        raise AuditFailed(f"{outcomes.count(FAILED)} of {len(targets)} audited positions of {folder} failed (see "
                          "above)")
    if UNVERIFIED in outcomes:
        raise AuditUnverified(f"{outcomes.count(UNVERIFIED)} of {len(targets)} audited positions of {folder} could "
                              "not be verified (see above)")
