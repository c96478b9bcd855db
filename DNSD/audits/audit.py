"""dnsd audit: re-train positions of a run (an epoch's end, or a checkpoint saved within an epoch) from the
checkpoints they started from, with the run's own config; judge each bit for bit wherever this machine can reproduce
it, else within the measured rounding noise; recompute what the run reports of best.pdckpt; say what was covered."""
import dataclasses

import numpy as np

from DNSD.audits.coverage import coverage, recompute
from DNSD.audits.retraining import predictions, retrain, splits
from DNSD.audits.run import choose, open_run, plan, positions
from DNSD.audits.verdicts import (
    FAILED,
    UNVERIFIED,
    VERIFIED,
    Verdict,
    across_builds,
    first_difference,
    record_differences,
)
from DNSD.errors import AuditFailed, AuditUnverified
from DNSD.runs.chain import exact_fields, position_link, state_tensors
from DNSD.runs.folder import MANIFEST, METRICS
from DNSD.runs.manifest import describe_environment, manifest_differences, numerics
from DNSD.system.device import select_run_device
from DNSD.system.numerics import MACHINE_FREE_NUMERICS
from DNSD.training.meters import counted
from DNSD.training.ranks import weights_digest

SHOWN_DIFFERENCES = 12  # manifest differences printed; the rest are counted
NOISE_RUNS = 2  # perturbed re-trainings across builds: one unit in the last place up, and one down


def expected(run, target):
    """The chain's digest the run records at the target: its record's, else (a checkpoint within an epoch that no
    evaluation point records) an intact checkpoint's own; None for a run from before DNSD 1.6.0."""
    if not target.step:
        return target.record.get("state_sha256")
    return (target.record or {}).get("state_sha256") or next(
        (position_link(state) for path, state in target.files if path not in run.altered), None)


def bit_identical(run, target, first):
    """Whether the re-training ends in the state the run records at the target (its weights, before DNSD 1.6.0)."""
    sealed = expected(run, target)
    if sealed is not None:
        return first.link == sealed
    if not target.step:
        return weights_digest(first.weights) == target.record["weights_sha256"]
    intact = [state for path, state in target.files if path not in run.altered]
    return bool(intact) and first_difference(first.weights, intact[0]["model"]) is None


def strict(entry, current):
    """Whether this machine must reproduce the run bit for bit: the same numerics (onednn's: on any x86-64 CPU with
    AVX2, of the same Paddle build), or portable CPU numerics on both (on Paddle 2.6 and 3.x alike) in as many
    processes."""
    portable = [item["device"]["kind"] == "cpu" and item["settings"].get("cpu_numerics") == "portable"
                for item in (entry, current)]
    as_many_processes = entry["settings"]["world_size"] == current["settings"]["world_size"]
    return numerics(entry) == numerics(current) or all(portable) and as_many_processes


def manifest_lines(entry, current):
    """What differs between the manifest entry of the session that trained a position and this machine's."""
    differences = [item for item in manifest_differences(entry, current) if item[0] != "command"]
    shown = [f"  {kind} {key}: {mine!r} in the run, {theirs!r} here"
             for kind, key, mine, theirs in differences[:SHOWN_DIFFERENCES]]
    if len(differences) > SHOWN_DIFFERENCES:
        shown.append(f"  (+{len(differences) - SHOWN_DIFFERENCES} more differences: dnsd info --compare)")
    return shown


def judge(run, target, first, device, current):
    """The verdict on a re-trained target: bit for bit where this machine can reproduce it, else within the noise
    of perturbed re-trainings; a missing manifest or a claim the step losses refute never loosens the test."""
    intact = [(path, state) for path, state in target.files if path not in run.altered]
    identical = bit_identical(run, target, first)
    altered = []
    for path, state in target.files:
        if path in run.altered:
            # Where the re-training confirms the record, the first tensor in which the file departs from it.
            found = identical and first_difference(first.weights, state["model"])
            altered.append(f"{path} was altered after it was written: {run.altered[path]}" + (
                f"; tensor {found[0]} differs from the re-trained weights, which match the record" if found else ""))
    if identical:
        changed = record_differences(target.record, first.record) if first.record else []
        altered += [f"{run.path(METRICS)} line {target.epoch}'s {key} is not what the re-training computes: the "
                    "record was altered" for key in changed]
        held = ", ".join(path for path, _ in intact)
        verb = "holds" if len(intact) == 1 else "hold"
        line = f"bit-identical to the run: state sha256 {first.link[:16]}..." + (f", as {held} {verb}" if held else "")
        if first.record:
            line += f"; re-trained in {first.seconds:.1f} s, {target.record['epoch_seconds']:.1f} s in the run"
        return Verdict(FAILED if altered else VERIFIED, [line, *altered], bit_identical=True)
    reference = intact[0] if intact else None
    found = first_difference(first.weights, reference[1]["model"]) if reference else None
    where = f"first tensor that differs: {found[0]} (largest relative difference {found[1]:.3g}, against " \
            f"{reference[0]})" if found else "its weights match, its other state (optimiser, counters) differs" \
        if reference else f"no checkpoint of {target.name()} is kept to name the tensor"
    losses = (target.record or {}).get("step_losses")
    if losses and first.losses == losses:
        return Verdict(FAILED, ["its step losses are reproduced here bit for bit, so it was trained on these "
                                f"numerics, yet it ends elsewhere; {where}", *altered])
    if target.entry is None:
        why = run.manifest_problem or f"the run has no {MANIFEST} (trained before DNSD 1.1.0 wrote one)"
        return Verdict(UNVERIFIED, [f"not bit-identical, and {why}: nothing says what trained it, so no looser "
                                    f"test applies; {where}", *altered])
    shown = manifest_lines(target.entry, current)
    if strict(target.entry, current):
        return Verdict(FAILED, [f"differs from the run on numerics this machine reproduces bit for bit; {where}",
                                *shown, *altered])
    noise = [retrain(run, target, device, nudge) for nudge in (np.inf, -np.inf)[:NOISE_RUNS]]
    data = splits(run, target.start and target.start[1]["normalizer"])
    for retrained in (first, *noise):  # only across builds: a bit-identical verdict needs no predictions
        retrained.predictions = predictions(run, data, retrained.weights)
    verdict = across_builds(reference and (state_tensors(reference[1]), exact_fields(reference[1])),
                            reference and predictions(run, data, reference[1]["model"]), losses, first, noise)
    verdict.lines += shown
    if altered:
        verdict.outcome, verdict.lines = FAILED, [*verdict.lines, *altered]
    return verdict


def cost_line(run, targets):
    """What the audit re-trains, and how long that took the run: once, or 1 + NOISE_RUNS times where this machine
    cannot reproduce the run bit for bit."""
    seconds = sum(run.records[target.epoch - 1].get("epoch_seconds") or 0.0 for target in targets)
    names = ", ".join(target.name() for target in targets)
    return (f"DNSD: auditing {run.folder}: re-training {names} ({counted(len(targets), 'epoch')} of training, "
            f"{seconds:.0f} s as the run trained them; {1 + NOISE_RUNS} times that where this machine "
            "cannot reproduce the run bit for bit)")


def replaying(settings, targets):
    """The run's device settings to re-train the targets with. Where they leave the CPU numerics to auto (onednn where
    DNSD's CPU operators build, portable elsewhere), the class the targets' sessions recorded, which any CPU with AVX2
    reproduces bit for bit, not the one this machine would pick."""
    recorded = {target.entry["settings"].get("cpu_numerics") for target in targets if target.entry}
    if settings.cpu_numerics != "auto" or len(recorded) != 1 or not recorded <= set(MACHINE_FREE_NUMERICS):
        return settings
    return dataclasses.replace(settings, cpu_numerics=recorded.pop())


def audit(folder, epoch=None, every=False, stated=None, sample=None, sample_seed=None):
    """Audit the chosen positions of the run in folder; raises AuditFailed (exit 4) where one does not follow from
    the run's recipe or a file was altered, AuditUnverified (exit 2) where one, or best.pdckpt, was not verified."""
    run = open_run(folder, stated or {})
    targets = [plan(run, position) for position in choose(run, epoch, every, sample, sample_seed)]
    device = select_run_device(replaying(run.config.run, targets))
    print(cost_line(run, targets), flush=True)
    verdicts, current = [], None
    for target in targets:
        first = retrain(run, target, device)
        current = current or describe_environment(device, run.config.run, first.identity, 1)
        verdict = judge(run, target, first, device, current)
        print(f"audit: {target.name()}: {verdict.outcome}: " + "\n  ".join(verdict.lines), flush=True)
        verdicts.append((target, verdict))
    findings = recompute(run, verdicts, splits)
    failed, unverified = coverage(run, verdicts, findings, positions(run))
    if failed:
        raise AuditFailed(f"{failed} of the audit's findings on {folder} failed (see above)")
    if unverified:
        raise AuditUnverified(f"{unverified}; see the coverage above")
