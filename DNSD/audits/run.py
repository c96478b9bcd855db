"""The run an audit reads: its records, manifest and checkpoints, each checkpoint checked against the chain of
custody the records seal (runs/chain.py) before anything is trained, and the positions it can re-train."""
import dataclasses
import math
import os
import random
import re

from DNSD.audits.verdicts import position_text
from DNSD.changes import for_checkpoint, recipe
from DNSD.config import config_from_dict, load_yaml
from DNSD.errors import AuditFailed, InputError
from DNSD.files import read_json
from DNSD.runs.chain import GENESIS, branch_origin, position_link
from DNSD.runs.checkpoint import read_state
from DNSD.runs.folder import (
    BEST,
    BRANCH,
    BRANCH_START,
    CONFIG,
    KEPT,
    LAST,
    MANIFEST,
    METRICS,
    branched_at,
    nearest_run,
    read_evaluation_points,
    read_records,
    sweep_folders,
)
from DNSD.runs.manifest import entry_for, read_manifest
from DNSD.training.optimizer import rate_at
from DNSD.training.ranks import weights_digest


@dataclasses.dataclass
class AuditedRun:
    folder: str
    config: object
    records: list  # metrics.jsonl, epoch K at index K - 1
    points: list  # points.jsonl (run.eval_every_iterations), or []
    manifest: list  # environment.json's entries, or None for a run trained before DNSD wrote one
    kept: dict  # epoch: the paths of the checkpoints that hold the model at that epoch's end
    within: list  # (path, epoch, step) of best.pdckpt and last.pdckpt where saved within an epoch
    branch: dict  # branch.json, or None
    origin: str  # what the chain of the run's own first epoch builds on
    manifest_problem: str  # why environment.json cannot say what trained the run, or None
    states: dict = dataclasses.field(default_factory=dict)  # the checkpoints read so far, by path
    altered: dict = dataclasses.field(default_factory=dict)  # path: why it does not hold what the records seal
    data: dict = dataclasses.field(default_factory=dict)  # the splits read, by normaliser

    @property
    def branched_at(self):
        return self.branch and self.branch["epochs_done"]

    @property
    def sealed(self):
        """Whether the records seal each epoch's whole state (DNSD 1.6.0 on), not its weights alone."""
        return all("state_sha256" in record for record in self.records[self.branched_at or 0:])

    def path(self, name):
        return os.path.join(self.folder, name)

    def position_of(self, name):
        """(epoch, step) of the model a checkpoint of the folder holds (step 0: the epoch's end), or None."""
        path = self.path(name)
        found = [(epoch, step) for where, epoch, step in self.within if where == path] + \
            [(done, 0) for done, paths in self.kept.items() if path in paths]
        return found[0] if found else None

    def previous(self, epoch):
        """The link the chain of an epoch of this run builds on (GENESIS after a record from before DNSD 1.6.0: an old
        run resumed by 1.6.0 starts its chain there)."""
        first = (self.branched_at or 0) + 1
        return self.origin if epoch == first else self.records[epoch - 2].get("state_sha256") or GENESIS

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
    start: tuple  # (path, state) of the checkpoint it starts from, or None: the seed's initialisation
    files: list  # (path, state) of the checkpoints that hold the model at this position
    record: dict  # metrics.jsonl's line of the epoch, or the evaluation point at the step, or None
    entry: dict  # the manifest entry of the session that trained it, or None

    def name(self):
        return position_text((self.epoch, self.step))


def open_run(folder, stated):
    """The run in folder with its records, manifest and checkpoints, each checkpoint checked against the records;
    InputError for anything else."""
    if not os.path.isfile(os.path.join(folder, CONFIG)):
        if sweep_folders([folder]):
            raise InputError(f"{folder} holds several runs; audit one of them, e.g. {os.path.join(folder, 'seed-0')}")
        nearest = not os.path.exists(folder) and nearest_run(folder)
        raise InputError(f"{folder} holds no run ({CONFIG}); " + (f"the nearest run folder is {nearest}" if nearest
                                                                  else "pass the output folder of a training run"))
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
    branch = read_json(os.path.join(folder, BRANCH)) if branched_at(folder) else None
    if branch is not None and branch["epochs_done"] > len(records):
        raise InputError(f"{os.path.join(folder, BRANCH)} is damaged; restore it from a copy of the run folder")
    try:  # a missing or altered manifest never loosens the test: it leaves bit-identity alone to verify
        manifest, problem = read_manifest(folder), None
    except InputError as error:
        manifest, problem = None, str(error)
    if manifest is None and problem is None and any("environment_sha256" in record for record in records):
        problem = f"{os.path.join(folder, MANIFEST)} is missing, though {METRICS} names its sessions"
    run = AuditedRun(folder, config, records, read_evaluation_points(folder), manifest, {}, [], branch,
                     branch_origin(branch) if branch else GENESIS, problem)
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
    check_files(run)
    return run


def check_files(run):
    """Every checkpoint against the chain the records seal (run.altered names those that break it), the promised
    ones present, and a branch's start against branch.json; before anything is trained."""
    own = range((run.branched_at or 0) + 1, len(run.records) + 1)
    missing = [epoch for epoch in own if run.config.run.keep_every and epoch % run.config.run.keep_every == 0
               and not os.path.isfile(run.path(KEPT.format(epoch)))]
    if missing:
        raise AuditFailed(f"{run.path(KEPT.format(missing[0]))} is missing, which {run.path(CONFIG)} promises "
                          f"(run.keep_every {run.config.run.keep_every}): the run folder is incomplete; restore it "
                          "from a copy")
    if run.branch is not None:
        start = run.path(BRANCH_START)
        if os.path.isfile(start) and position_link(run.checkpoint(start)) != run.branch.get("state_sha256"):
            run.altered[start] = f"its state is not the one {run.path(BRANCH)} seals for the branch point"
    beyond = [path for epoch, paths in run.kept.items() for path in paths if epoch > len(run.records)] + \
        [path for path, epoch, _ in run.within if epoch - 1 > len(run.records)]
    if beyond:
        raise InputError(f"{beyond[0]} holds an epoch that {run.path(METRICS)} does not record (a crash before the "
                         "record was written, or lines were removed): resume the run, or restore the file from a copy")
    for epoch, paths in run.kept.items():
        for path in paths if epoch else ():  # epoch 0: a stop before the first step, the seed's initialisation
            state = run.checkpoint(path)
            sealed_record(run, path, state, epoch)
            if weights_digest(state["model"]) != run.records[epoch - 1]["weights_sha256"]:
                run.altered[path] = f"its weights do not match the record of epoch {epoch}"
            elif run.records[epoch - 1].get("state_sha256") not in (None, position_link(state)) or \
                    epoch in own and state.get("chain") not in (None, run.previous(epoch)):
                run.altered[path] = f"its state does not match the state_sha256 of epoch {epoch} (optimiser, " \
                                    "normaliser, class names, counters or the chain before it)"
    for path, epoch, step in run.within:
        point = next((point for point in run.points if (point["epoch"], point["step"]) == (epoch, step)), None)
        state = run.checkpoint(path)
        if epoch > 1:
            sealed_record(run, path, state, epoch - 1)
        if point and (point.get("weights_sha256") != weights_digest(state["model"]) or
                      point.get("state_sha256") not in (None, position_link(state))):
            run.altered[path] = f"its state does not match the evaluation point of epoch {epoch}, step {step}"


def sealed_record(run, path, state, epoch):
    """The record of epoch that the checkpoint sealed in its history, checked against metrics.jsonl."""
    history = state.get("history")
    sealed = history[epoch - 1] if isinstance(history, list) and len(history) >= epoch else None
    if sealed != run.records[epoch - 1]:
        raise AuditFailed(f"{run.path(METRICS)} line {epoch} and the record sealed in {path} disagree: one of them "
                          "was altered after it was written; restore the run folder from a copy")
    return sealed


def starts(run, epoch):
    """The checkpoint the epoch starts from (None: the seed's initialisation), or False where none is at hand."""
    first = (run.branched_at or 0) + 1
    if epoch < first:
        return False
    if epoch == first and run.branch is not None:
        return os.path.isfile(run.path(BRANCH_START)) and run.path(BRANCH_START)
    return None if epoch == 1 else run.kept.get(epoch - 1, [False])[0]


def positions(run):
    """Every position an audit can re-train: (epoch, 0) for each epoch recorded, (epoch, step) for each checkpoint
    saved within an epoch, whose start is at hand."""
    ends = [(epoch, 0) for epoch in range(1, len(run.records) + 1) if starts(run, epoch) is not False]
    return ends + sorted({(epoch, step) for _, epoch, step in run.within if starts(run, epoch) is not False})


def choose(run, epoch=None, every=False, sample=None, sample_seed=None):
    """The positions asked for: --all, --epoch K, --sample N of the epochs, or by default the run's first epoch (the
    chain's anchor) and the position of best.pdckpt (what users load): at most two epochs of training."""
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
        first = ((run.branched_at or 0) + 1, 0)
        return sorted({position for position in (first, run.position_of(BEST)) if position in allowed}) or allowed[-1:]
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


def plan(run, position):
    """The files of a position to re-train: its start (refused where it breaks the chain) and its checkpoints."""
    epoch, step = position
    start = starts(run, epoch)
    if start in run.altered:
        raise AuditFailed(f"{start} was altered after it was written: {run.altered[start]}; restore it from a copy, "
                          "or audit another epoch")
    if step:
        paths = [path for path, found, at in run.within if (found, at) == position]
        record = next((point for point in run.points if (point["epoch"], point["step"]) == position), None)
    else:
        paths, record = run.kept.get(epoch, []), run.records[epoch - 1]
    session = (record or {}).get("environment_sha256") or (
        run.records[epoch - 1].get("environment_sha256") if epoch <= len(run.records) else
        run.manifest and run.manifest[-1]["sha256"])
    entry = entry_for(run.manifest, session)
    if run.manifest is not None and entry is None:
        run.manifest_problem = f"{run.path(MANIFEST)} has no entry for the session that trained epoch {epoch} " \
                               f"(sha256 {str(session)[:12]}...)"
    return Target(epoch, step, start and (start, run.checkpoint(start)), [(path, run.checkpoint(path))
                                                                           for path in paths], record, entry)
