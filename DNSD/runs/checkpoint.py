"""A checkpoint's model: its state checked field by field against its own config before anything is built from it,
then the network with its weights (the file format is checkpoint_file.py's)."""
import numpy as np

from DNSD.changes import for_checkpoint
from DNSD.config import config_from_dict
from DNSD.datasets import num_classes
from DNSD.errors import InputError
from DNSD.models import build_model
from DNSD.runs.checkpoint_file import read_checkpoint
from DNSD.runs.shapes import conforms

REQUIRED = ("config", "num_classes", "classes", "normalizer", "model", "epochs_done")
NORMALIZER_SHAPES = {"pixel": ((3, 32, 32), (1,)), "channel": ((3, 1, 1), (3, 1, 1))}


def read_state(path):
    """The state saved by save_checkpoint, with its config validated."""
    state = read_checkpoint(path)
    missing = [key for key in REQUIRED if key not in state]
    if missing or not isinstance(state["config"], dict) or not isinstance(state["model"], dict):
        raise InputError(f"{path} is not a DNSD checkpoint (no {(missing or ['config'])[0]}); pass a .pdckpt written "
                         "by this tool")
    try:
        state["config"] = config_from_dict(state["config"], where=f" stored in {path}")
    except InputError as error:
        raise InputError(error if path in str(error) else f"{path}: its stored {error}") from None
    check_state(state, path)
    return state


def check_state(state, path):
    """Each field a model is built from, against what the checkpoint's own config makes it, before anything is
    allocated: a crafted file is refused in one line naming the field, never read into a wrong or huge model."""
    config = state["config"]

    def refuse(field, problem):
        raise InputError(f"{path}: its {field} {problem}; it was not written by DNSD, or was altered: use another "
                         "checkpoint")

    classes, expected = state["num_classes"], num_classes(config.data.dataset)
    if type(classes) is not int or classes != expected:
        refuse("num_classes", f"is {classes!r}, but {config.data.dataset} has {expected} classes")
    names = state["classes"]
    if not isinstance(names, list) or len(names) != classes or not all(
            isinstance(name, str) and 0 < len(name) <= 100 for name in names):
        refuse("classes", f"are not {classes} class names")
    done = state["epochs_done"]
    if type(done) is not int or not 0 <= done <= config.train.epochs:
        refuse("epochs_done", f"is {done!r}, not a number of epochs from 0 to {config.train.epochs}")
    normalizer, shapes = state["normalizer"], NORMALIZER_SHAPES[config.data.normalization]
    if not isinstance(normalizer, dict) or sorted(normalizer) != ["mean", "std"] or any(
            not isinstance(normalizer[key], np.ndarray) or normalizer[key].dtype.kind != "f" or
            normalizer[key].shape != shape for key, shape in zip(("mean", "std"), shapes)):
        refuse("normaliser", f"is not a {config.data.normalization} mean and std of shapes {shapes[0]} and {shapes[1]}")
    if not (np.isfinite(normalizer["mean"]).all() and np.isfinite(normalizer["std"]).all()
            and (normalizer["std"] > 0).all()):
        refuse("normaliser", "holds values that are not finite, or a std that is not positive")
    data = state.get("data")
    if data is not None and not (isinstance(data, dict) and isinstance(data.get("file"), str) and
                                 type(data.get("bytes")) is int and isinstance(data.get("sha256"), str) and
                                 len(data["sha256"]) == 64):
        refuse("data", "is not the identity of an archive (file, bytes, sha256)")
    weights = state["model"]
    if not all(isinstance(value, np.ndarray) for value in weights.values()):
        refuse("weights", "are not all arrays")
    broken = [name for name, value in weights.items() if value.dtype.kind == "f" and not np.isfinite(value).all()]
    if broken:
        refuse("weights", f"hold values that are not finite (first: {broken[0]})")


TOTALS = ("loss_sum", "correct", "active_blocks", "steps", "seen", "seconds")


def _is_record(value, keys):
    return isinstance(value, dict) and all(type(value.get(key)) in (int, float) for key in keys)


def check_resume_state(state, model, path, steps_per_epoch):
    """What a resume continues from: the step within its epoch (its last step included: a checkpoint taken after
    an epoch's steps, before the epoch ended) and the epoch's totals, the history, points and best
    result, the scheduler, and the optimiser's accumulators (momentum) against the parameters they belong to."""
    totals, history, points = state.get("totals"), state.get("history"), state.get("points", [])
    scheduler, best = state.get("scheduler"), state.get("best")
    if not isinstance(points, list) or not all(_is_record(point, ("epoch", "step", "val_error")) for point in points) \
            or not _is_record(scheduler, ("last_epoch", "last_lr")) or not _is_record(best, ("epoch",)) or \
            not 0 <= best["epoch"] <= state["epochs_done"] + 1:
        raise InputError(f"{path}: its points, best result or scheduler state are not what a DNSD run saves; it was "
                         "not written by DNSD, or was altered: use another checkpoint")
    gradients = totals.get("gradients", {}) if isinstance(totals, dict) else None  # absent before DNSD 1.1.0
    losses = totals.get("step_losses") if isinstance(totals, dict) else None  # absent before DNSD 1.3.0
    if type(state.get("step")) is not int or not 0 <= state["step"] <= steps_per_epoch or \
            not _is_record(totals, TOTALS) or sorted(set(totals) - {"gradients", "step_losses"}) != sorted(TOTALS) or \
            not isinstance(gradients, dict) or not all(type(value) is float for value in gradients.values()) or \
            losses is not None and (not conforms(losses, [(int, float)]) or len(losses) != totals["steps"]) or \
            not isinstance(history, list) or len(history) != state["epochs_done"] or \
            not all(isinstance(record, dict) for record in history) or not isinstance(state.get("optimizer"), dict):
        raise InputError(f"{path}: its step, totals, history or optimiser state are not what a DNSD run saves; it "
                         "was not written by DNSD, or was altered: use another checkpoint")
    shapes = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}
    for key, value in state["optimizer"].items():
        owner = max((name for name in shapes if key.startswith(name + "_")), key=len, default=None)
        if isinstance(value, np.ndarray) and (owner is None or value.shape != shapes[owner]
                                              or not np.isfinite(value).all()):
            raise InputError(f"{path}: its optimiser state {key} does not fit the model's parameters; it was not "
                             "written by DNSD, or was altered: use another checkpoint")


def check_same_data(state, data, path):
    """A resume must train on the data the run began with, whatever the file is called now."""
    trained_on = state.get("data")
    if trained_on and trained_on["sha256"] != data.identity["sha256"]:
        raise InputError(f"{data.identity['file']} is not the archive {path} was trained on ({trained_on['file']}, "
                         f"{trained_on['bytes']:,} bytes, sha256 {trained_on['sha256'][:12]}...); pass that archive "
                         "with --data-file")


def restore_model(state, path):
    """The network described by the checkpoint's config, with its weights."""
    config = state["config"]
    model = build_model(config.model, state["num_classes"])
    expected = model.state_dict()
    weights = state["model"]
    mismatched = sorted(set(expected) ^ set(weights)) or [
        name for name in expected
        if list(expected[name].shape) != list(weights[name].shape) or weights[name].dtype != np.float32]
    if mismatched:
        raise InputError(f"checkpoint {path} does not fit a {model.name()} with {state['num_classes']} classes "
                         f"(first mismatch: {mismatched[0]}); it was written by another model")
    model.set_state_dict(weights)
    return model


def open_checkpoint(path, stated, purpose):
    """(state, config) of a checkpoint, validated; stated: values the user gave, which may change only what keeps the
    model the same (data file, device); purpose names the command in the message that refuses another."""
    state = read_state(path)
    return state, for_checkpoint(state["config"], stated or {}, purpose)
