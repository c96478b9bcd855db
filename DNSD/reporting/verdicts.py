"""What an audit concludes from a re-trained position of a run: bit-identical, or (another build or device)
consistent with the recipe within the rounding noise measured by re-training it a second time from weights moved by
one unit in the last place."""
import dataclasses

import numpy as np

VERIFIED, UNVERIFIED, FAILED = "verified", "cannot be verified", "failed"
# How far beyond the measured rounding noise an honest run of other numerics may lie, per statistic: above the largest
# ratio measured over honest cross-numerics runs, below what a 10 % learning-rate change gives (BENCHMARKS.md).
TOLERANCES = {"step losses": 30.0, "weights": 3.0}
# Relative differences below this are not told apart from none: a step's loss is a float32 sum, a weight a float32.
NOISE_FLOOR = 1e-6


@dataclasses.dataclass
class Retrained:
    """A position re-trained by the audit."""

    start: dict  # the weights it started from, by name
    weights: dict  # the weights it ended with
    losses: list  # the epoch's step losses, or None (a position within an epoch)
    seconds: float
    identity: dict  # the data's


@dataclasses.dataclass
class Verdict:
    outcome: str
    lines: list


def relative_difference(array, reference):
    if not reference.size:
        return 0.0
    reference = reference.astype(np.float64)
    scale = max(float(np.abs(reference).max()), np.finfo(np.float32).tiny)
    return float(np.abs(array.astype(np.float64) - reference).max()) / scale


def first_difference(weights, reference):
    """(name, largest relative difference) of the first tensor in which two sets of weights differ, or None."""
    for name, array in weights.items():
        if array.tobytes() != reference[name].tobytes():
            return name, relative_difference(array, reference[name])
    return None


def group_differences(weights, reference):
    """{group: largest relative difference} per top-level part of the network (stem, stages, fc, ...)."""
    groups = {}
    for name, array in weights.items():
        group = name.split(".")[0]
        groups[group] = max(groups.get(group, 0.0), relative_difference(array, reference[name]))
    return groups


def weight_ratios(recorded, first, second):
    """{group: the recorded weights' largest relative difference from the first re-training, in units of the second
    re-training's}."""
    distance, noise = group_differences(recorded, first.weights), group_differences(second.weights, first.weights)
    return {group: distance[group] / max(noise[group], NOISE_FLOOR) for group in distance}


def loss_ratio(recorded, first, second):
    """(largest ratio, its step) of the recorded step losses' distance from the first re-training, step by step, in
    units of the rounding noise so far (the two re-trainings' largest distance up to that step): rounding
    differences start at the last digit and grow, a changed recipe differs from the first update on."""
    worst, where, envelope = 0.0, 1, 0.0
    for step, (mine, theirs, noisy) in enumerate(zip(recorded, first, second), 1):
        envelope = max(envelope, abs(noisy - theirs), NOISE_FLOOR * abs(theirs))
        ratio = abs(mine - theirs) / envelope
        if ratio > worst:
            worst, where = ratio, step
    return worst, where


def across_builds(recorded_weights, recorded_losses, first, second):
    """The verdict on a position re-trained twice (first, and second from perturbed weights) where the run's
    numerics differ from this machine's, from its recorded weights and step losses (either may be None)."""
    found = {}  # statistic: (ratio, where)
    ratios = weight_ratios(recorded_weights, first, second) if recorded_weights is not None else {}
    if ratios:
        group = max(ratios, key=ratios.get)
        found["weights"] = (ratios[group], group)
    if recorded_losses and first.losses and len(recorded_losses) == len(first.losses):
        ratio, step = loss_ratio(recorded_losses, first.losses, second.losses)
        found["step losses"] = (ratio, f"step {step}")
    if not found:
        return Verdict(UNVERIFIED, ["nothing to compare across builds: no checkpoint of it is kept and its record "
                                    "holds no step losses (recorded since DNSD 1.3.0)"])
    lines = [f"{statistic}: {ratio:.3g}x the rounding noise at most ({where}; tolerated {TOLERANCES[statistic]:g}x)"
             for statistic, (ratio, where) in found.items()]
    beyond = [f"{statistic} are {ratio:.1f}x beyond the noise ({where})" for statistic, (ratio, where) in found.items()
              if ratio > TOLERANCES[statistic]]
    if beyond:
        return Verdict(FAILED, [f"inconsistent with its recipe: {'; '.join(beyond)}", *lines])
    return Verdict(VERIFIED, ["consistent with its recipe across builds, within the rounding noise measured here",
                              *lines])
