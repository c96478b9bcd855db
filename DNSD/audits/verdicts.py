"""What an audit concludes from a re-trained position of a run. Bit for bit wherever the auditor's machine can
reproduce it; elsewhere (a GPU run, native CPU numerics) within the rounding noise measured by re-training it again
from weights moved by one unit in the last place, tensor by tensor and prediction by prediction."""
import dataclasses

import numpy as np

VERIFIED, UNVERIFIED, FAILED = "verified", "cannot be verified", "failed"
# How far beyond the measured rounding noise an honest run of other numerics may lie, per statistic: above the largest
# ratio of the honest cross-numerics pairs and below the changes that scripts/audit_power.py measures (BENCHMARKS.md).
TOLERANCES = {"step losses": 30.0, "tensors": 4.0, "predictions": 3.0}
POWER = ("not bit for bit: calibrated on CPUs (BENCHMARKS.md), it caught learning rate x0.97 and x1.03, momentum "
         "0.85, p_L +-0.05, another seed, 10 % of the images swapped and planted momentum at any learning rate, weight "
         "decay x0.5 and x1.5 and an edit that moves one prediction only at a low one")


@dataclasses.dataclass
class Retrained:
    """A position re-trained by the audit."""

    tensors: dict  # every tensor of its end state (chain.state_tensors)
    fields: dict  # what any numerics compute alike of its end state (chain.exact_fields)
    link: str  # the chain's digest at its end state (chain.py)
    record: dict  # the epoch's record as the re-training wrote it, or None (a position within an epoch)
    seconds: float
    identity: dict  # the data's
    predictions: np.ndarray = None  # its classes of the validation images, where compared across builds

    @property
    def weights(self):
        """The weights and batch-norm statistics it ended with, by name."""
        return {name[len("model:"):]: array for name, array in self.tensors.items() if name.startswith("model:")}

    @property
    def losses(self):
        return self.record and self.record.get("step_losses")


def position_text(position):
    """'epoch 3' for (3, 0), 'epoch 3, step 12' for a position within an epoch."""
    return f"epoch {position[0]}" + (f", step {position[1]}" if position[1] else "")


@dataclasses.dataclass
class Verdict:
    outcome: str
    lines: list
    bit_identical: bool = False  # the re-training ended in the recorded state: its numbers must match exactly


def first_difference(weights, reference):
    """(name, largest relative difference) of the first tensor in which two sets of weights differ, or None."""
    for name, array in weights.items():
        if array.tobytes() != reference[name].tobytes():
            scale = max(float(np.abs(reference[name]).max(initial=0.0)), np.finfo(np.float32).tiny)
            return name, float(np.abs(array.astype(np.float64) - reference[name]).max(initial=0.0)) / scale
    return None


def distance(array, reference):
    return float(np.linalg.norm(array.astype(np.float64) - reference.astype(np.float64)))


def tensor_ratio(recorded, first, noise):
    """(largest ratio, its tensor): each tensor of the state (weights, batch-norm statistics, the optimiser's
    accumulators, the normaliser) at its distance from the first re-training, in units of its own rounding noise
    (the largest distance of a perturbed re-training), no smaller than float32's resolution of the tensor."""
    ratios = {}
    for name, array in first.tensors.items():
        if array.dtype.kind != "f":
            continue
        if name not in recorded or recorded[name].shape != array.shape:
            return float("inf"), name
        floor = float(np.finfo(np.float32).eps) * max(float(np.linalg.norm(array.astype(np.float64))), 1e-30)
        spread = max([distance(run.tensors[name], array) for run in noise] + [floor])
        ratios[name] = distance(recorded[name], array) / spread
    name = max(ratios, key=ratios.get)
    return ratios[name], name


def loss_ratio(recorded, first, noise):
    """(largest ratio, its step) of the recorded step losses' distance from the first re-training, step by step, in
    units of the rounding noise so far: rounding differences start at the last digit and grow, a changed recipe
    differs from the first update on."""
    worst, where, envelope = 0.0, 1, 0.0
    for step, (mine, theirs, *noisy) in enumerate(zip(recorded, first.losses, *(run.losses for run in noise)), 1):
        floor = float(np.finfo(np.float32).eps) * abs(theirs)
        envelope = max(envelope, floor, *(abs(value - theirs) for value in noisy))
        ratio = abs(mine - theirs) / envelope if envelope else 0.0
        if ratio > worst:
            worst, where = ratio, step
    return worst, where


def prediction_ratio(recorded, first, noise):
    """(ratio, counts): the validation images whose class the recorded model predicts otherwise than the first
    re-training, in units of the most a perturbed re-training does (at least one image)."""
    found = int((recorded != first.predictions).sum())
    spread = max([int((run.predictions != first.predictions).sum()) for run in noise] + [1])
    return found / spread, f"{found} of {len(recorded)} validation images, noise {spread}"


def across_builds(recorded, recorded_predictions, recorded_losses, first, noise):
    """The verdict on a position where bit-identity cannot be had here, from the recorded end state (a kept
    checkpoint's: its tensors and exact fields, chain.py) with its predictions, and the recorded step losses, against
    the first re-training in units of the noise of the perturbed ones."""
    if recorded is None:
        return Verdict(UNVERIFIED, ["no checkpoint of it is kept: its step losses alone cannot verify a model across "
                                    "builds"])
    tensors, fields = recorded
    changed = [key for key in first.fields if fields.get(key) != first.fields[key]]
    if changed:
        return Verdict(FAILED, [f"its {changed[0]} is {fields.get(changed[0])!r}, the re-training's "
                                f"{first.fields[changed[0]]!r}: no numerics compute that otherwise"])
    found = {"tensors": tensor_ratio(tensors, first, noise),
             "predictions": prediction_ratio(recorded_predictions, first, noise)}
    if recorded_losses and first.losses and len(recorded_losses) == len(first.losses):
        ratio, step = loss_ratio(recorded_losses, first, noise)
        found["step losses"] = (ratio, f"step {step}")
    lines = [f"{statistic}: {ratio:.3g}x the rounding noise at most ({where}; tolerated {TOLERANCES[statistic]:g}x)"
             for statistic, (ratio, where) in found.items()]
    beyond = [f"{statistic} are {ratio:.1f}x beyond the noise ({where})" for statistic, (ratio, where) in found.items()
              if ratio > TOLERANCES[statistic]]
    if beyond:
        return Verdict(FAILED, [f"inconsistent with its recipe: {'; '.join(beyond)}", *lines])
    return Verdict(VERIFIED, [f"consistent with its recipe within the rounding noise measured here ({len(noise)} "
                              f"perturbed re-trainings); {POWER}", *lines])


# A record's fields that the re-training computes again: all but its times and the session that wrote it.
COMPUTED = ("train_loss", "train_error", "mean_active_blocks", "val_error", "lr", "test_error", "gradients",
            "step_losses", "weights_sha256", "state_sha256")


def record_differences(recorded, retrained):
    """The fields of an epoch's record that the re-training computed otherwise (the record was altered)."""
    return [key for key in COMPUTED if key in retrained and key in recorded and recorded[key] != retrained[key]]

