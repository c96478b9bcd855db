"""What an audit says beyond each position's verdict: the numbers the run reports of best.pdckpt recomputed, and
its coverage: what was re-trained, what was not and why, which files are verified, and the archive it read."""
import os

from DNSD.audits.verdicts import FAILED, UNVERIFIED, VERIFIED, position_text
from DNSD.datasets import official_digest
from DNSD.files import read_json
from DNSD.runs.checkpoint import restore_model
from DNSD.runs.folder import BEST, BRANCH, LAST, SUMMARY, read_summary
from DNSD.training.best import BestCheckpoint
from DNSD.training.evaluation import evaluate

REPORT = "best.test.json"  # the test report of best.pdckpt that a finished run writes


def epochs_text(epochs):
    """'epochs 2, 4 to 9' for [2, 4, 5, 6, 7, 8, 9]."""
    runs, epochs = [], sorted(epochs)
    for epoch in epochs:
        if runs and epoch == runs[-1][1] + 1:
            runs[-1][1] = epoch
        else:
            runs.append([epoch, epoch])
    listed = ", ".join(str(first) if first == last else f"{first} to {last}" for first, last in runs)
    return ("epochs " if len(epochs) > 1 else "epoch ") + listed


def chosen_best(run):
    """(epoch, step) of the model the recorded validation errors make the best, replayed through the run's own rule
    (training/best.py) over its own epochs or evaluation points; a point's step lies within its epoch."""
    since = run.branched_at or 0
    best = BestCheckpoint(run.config.run.best_on_tie, bool(run.config.run.eval_every_iterations))
    for point in (point for point in run.points if point["epoch"] > since):
        best.at_point(point)
    for record in (record for record in run.records if record["epoch"] > since):
        best.at_epoch_end(record["epoch"], record["val_error"])
    position = best.position()
    return (position[0] + 1, position[1]) if position and position[1] else position


ACROSS_BUILDS_POINTS = 1.0  # how far (percentage points) a recomputed error may lie from the record across builds


def recompute(run, verdicts, splits):
    """Findings [(outcome, line)] on what the run reports of best.pdckpt: chosen by its recorded rule, and, where its
    position was verified, its validation and test errors evaluated again against every file that states them."""
    position, findings = run.position_of(BEST), []
    if position is None:
        return findings
    rule = chosen_best(run)
    if rule != position:
        findings.append((FAILED, f"best.pdckpt holds {position_text(position)}, but the recorded validation errors "
                                 f"make {rule and position_text(rule)} the best by the rule "
                                 f"'{run.config.run.best_on_tie}': it was not chosen by validation error"))
    verdict = dict(((target.epoch, target.step), verdict) for target, verdict in verdicts).get(position)
    path = run.path(BEST)
    if verdict is None or verdict.outcome != VERIFIED or path in run.altered:
        return findings
    state = run.checkpoint(path)
    data = splits(run, state["normalizer"])
    model = restore_model(state, path)
    errors = {split: evaluate(model, getattr(data, split), data.normalizer, run.config.train.batch_size,
                              data.classes)["error"] for split in ("val", "test")}
    record = run.records[position[0] - 1] if not position[1] else next(
        (point for point in run.points if (point["epoch"], point["step"]) == position), {})
    summary = read_summary(run.folder) or {}
    report = read_json(run.path(REPORT)) if os.path.isfile(run.path(REPORT)) else {}
    report = report if isinstance(report, dict) else {}
    stated = {"val": [("best.pdckpt's best", state["best"].get("val_error")), ("its record", record.get("val_error")),
                      (SUMMARY, summary.get("best_val_error"))],
              "test": [("its record", record.get("test_error")), (SUMMARY, summary.get("test_error")),
                       (REPORT, report.get("error"))]}
    tolerance = 0.0 if verdict.bit_identical else ACROSS_BUILDS_POINTS
    for split, sources in stated.items():
        checked = [(name, value) for name, value in sources if isinstance(value, (int, float))]
        wrong = [name for name, value in checked if abs(value - errors[split]) > tolerance]
        name = {"val": "validation", "test": "test"}[split]
        findings.append((FAILED, f"best.pdckpt's {name} error is {errors[split]:.2f} % evaluated here; "
                                 f"{', '.join(wrong)} state{'s' if len(wrong) == 1 else ''} otherwise: altered")
                        if wrong else (VERIFIED, f"best.pdckpt's {name} error {errors[split]:.2f} %, recomputed: "
                                                 f"as {', '.join(name for name, _ in checked) or 'no file'} state"))
    return findings


def coverage(run, verdicts, findings, auditable):
    """Print what the audit covered and what it did not, and the files altered that no position read; returns (the
    number of failures, why the audit cannot pass, or None): it passes only where best.pdckpt is covered."""
    done = {(target.epoch, target.step): verdict.outcome for target, verdict in verdicts}
    startable = {epoch for epoch, step in auditable if not step}
    left = [epoch for epoch in range((run.branched_at or 0) + 1, len(run.records) + 1) if (epoch, 0) not in done]
    kept, lost = [epoch for epoch in left if epoch in startable], [epoch for epoch in left if epoch not in startable]
    lines = ["re-trained: " + ", ".join(f"{position_text(position)} ({outcome})"
                                        for position, outcome in sorted(done.items()))]
    if kept:
        lines.append(f"not re-trained, their starts kept (--all re-trains them): {epochs_text(kept)}")
    if lost:
        lines.append(f"not re-trainable, no checkpoint of the epoch before kept: {epochs_text(lost)}")
    if run.branched_at:
        lines.append(f"not audited here: epochs 1 to {run.branched_at}, trained by the run this one branched from "
                     f"({BRANCH}); audit that run")
    if run.manifest_problem:
        lines.append(f"manifest: {run.manifest_problem}; only what re-trains bit for bit can be verified")
    if not run.sealed:
        lines.append("the records seal each epoch's weights only (DNSD before 1.6.0): optimiser state, normaliser, "
                     "class names and counters are not verified")
    covered = {}
    for name in (BEST, LAST):
        position = run.position_of(name)
        if position is not None:
            covered[name] = done.get(position) == VERIFIED and run.path(name) not in run.altered
            lines.append(f"{name} ({position_text(position)}): {'verified' if covered[name] else 'not verified'}")
    lines += [line for _, line in findings] + [archive_line(run)]
    read = {path for target, _ in verdicts for path, _ in target.files}
    unread = [f"{path} was altered after it was written: {why}" for path, why in run.altered.items()
              if path not in read]
    print(f"audit: coverage of {run.folder}:\n" + "\n".join(f"  {line}" for line in lines + unread), flush=True)
    outcomes = [*done.values(), *(outcome for outcome, _ in findings)]
    failed = outcomes.count(FAILED) + len(unread)
    if covered.get(BEST) is False:
        return failed, f"{BEST}, the file users load, is not covered by what was verified"
    if UNVERIFIED in outcomes:
        return failed, f"{outcomes.count(UNVERIFIED)} audited positions of {run.folder} could not be verified"
    if not run.sealed:
        return failed, f"{run.folder} records no state digests (DNSD before 1.6.0): its state beyond the weights is " \
                       "not verified"
    return failed, None


def archive_line(run):
    """The archive the audit read, and whether it is the data set's official one."""
    identity = next(iter(run.data.values())).identity if run.data else None
    if identity is None:
        return "archive: none read"
    official = official_digest(run.config.data.dataset)
    verdict = "" if official is None else f", the official {official[0]} archive" if identity["sha256"] == \
        official[1] else f", not the official {official[0]} archive (sha256 {official[1][:12]}...)"
    return f"archive: {os.path.basename(identity['file'])}, sha256 {identity['sha256']}{verdict}"
