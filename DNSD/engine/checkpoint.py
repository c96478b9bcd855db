"""Checkpoints: one file holding the weights and everything needed to rebuild, evaluate or continue a run, in a form
that loading can trust.

A checkpoint is a zip archive of plain data: `state.json` (config, metrics, counters), one `.npy` array per tensor,
and `sha256`, the digest of all the rest. Loading it runs no code (JSON, and numpy arrays read without pickle), takes
no more memory than the file's size, and refuses a file whose digest does not match, so a damaged or altered
checkpoint is an error, never a silently different model. Checkpoints of the first format (paddle.save's pickle)
still load, through an unpickler that admits only the arrays and containers paddle.save writes.
"""
import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np
import paddle

from DNSD.config import config_from_dict, for_checkpoint
from DNSD.datasets import num_classes
from DNSD.engine.device import select_run_device
from DNSD.errors import InputError
from DNSD.files import atomic_write
from DNSD.models import build_model
from DNSD.untrusted import NUMPY_ARRAYS, DataUnpickler

FORMAT = "dnsd-checkpoint/2"
PICKLED_FORMAT = "dnsd-checkpoint/1"  # paddle.save's pickle, before checkpoints carried a digest
MAX_BYTES = 4 << 30  # ResNet-1202's checkpoint, the largest DNSD writes, is about 160 MB
ARRAY_KINDS = "biuf"  # bool, signed and unsigned integers, floats: what tensors hold; never objects
REQUIRED = ("config", "num_classes", "classes", "normalizer", "model", "epochs_done")
MAX_STATE_BYTES = 64 << 20  # state.json: the config and a few numbers per epoch
NORMALIZER_SHAPES = {"pixel": ((3, 32, 32), (1,)), "channel": ((3, 1, 1), (3, 1, 1))}


def _encode(value, arrays):
    """value as JSON data, each tensor or array replaced by {"__array__": its index in arrays}."""
    if isinstance(value, dict):
        return {str(key): _encode(item, arrays) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item, arrays) for item in value]
    if isinstance(value, paddle.Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        arrays.append(np.ascontiguousarray(value))
        return {"__array__": len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a checkpoint cannot hold a {type(value).__name__}")


def _decode(value, arrays):
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        return {key: _decode(item, arrays) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item, arrays) for item in value]
    return value


def _members(state):
    """The (name, bytes) members of a checkpoint of state, its digest last."""
    arrays = []
    document = json.dumps({"format": FORMAT, **_encode(state, arrays)}).encode()
    members = [("state.json", document)]
    for index, array in enumerate(arrays):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=False)
        members.append((f"arrays/{index}.npy", buffer.getvalue()))
    members.append(("sha256", _digest(members).encode()))
    return members


def _digest(members):
    digest = hashlib.sha256()
    for name, data in members:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def save_checkpoint(path, state):
    """Write state (config, weights, optimiser and scheduler state, metrics) as one checkpoint file."""
    members = _members(state)

    def write(temporary):
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as archive:
            for name, data in members:
                archive.writestr(name, data)

    atomic_write(path, write)


def read_checkpoint(path):
    """The state saved by save_checkpoint, as plain data and numpy arrays; InputError for anything else."""
    damaged = f"{path} is damaged or not a DNSD checkpoint"
    if not os.path.isfile(path):
        raise InputError(f"checkpoint {path} does not exist; pass --checkpoint RUN_DIR/best.pdckpt of a training run")
    size = os.path.getsize(path)
    if size > MAX_BYTES:
        raise InputError(f"{path} is {size:,} bytes, more than any DNSD checkpoint; pass a .pdckpt written by DNSD")
    with open(path, "rb") as stream:
        magic = stream.read(4)
    if magic.startswith(b"\x80"):  # a pickle's protocol opcode: the first format
        return _read_pickled(path, damaged)
    if not magic.startswith(b"PK"):
        raise InputError(f"{path} is not a DNSD checkpoint; pass a .pdckpt written by this tool")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            names = [entry.filename for entry in entries]
            expected = ["state.json", *(f"arrays/{i}.npy" for i in range(len(names) - 2)), "sha256"]
            if names != expected or any(entry.compress_type != zipfile.ZIP_STORED or entry.file_size > size
                                        for entry in entries) or entries[0].file_size > MAX_STATE_BYTES:
                raise InputError(f"{damaged} (its members are not those of {FORMAT})")
            members = [(name, archive.read(name)) for name in names]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as error:
        raise InputError(f"{damaged} ({str(error).strip() or type(error).__name__})") from None
    if members[-1][1] != _digest(members[:-1]).encode():
        raise InputError(f"{damaged}: its content does not match its sha256, so it was altered or corrupted after "
                         "it was written; use another checkpoint of the run")
    try:
        arrays = [np.lib.format.read_array(io.BytesIO(data), allow_pickle=False) for _, data in members[1:-1]]
        state = _decode(json.loads(members[0][1]), arrays)
    except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as error:
        raise InputError(f"{damaged} ({type(error).__name__})") from None
    if any(array.dtype.kind not in ARRAY_KINDS for array in arrays):
        raise InputError(f"{damaged} (it holds arrays that are not numbers)")
    return state


class _PaddlePickle(DataUnpickler):
    """paddle.save's pickle, admitting only what it writes for a dict of tensors: containers, numpy arrays and
    numbers. A tensor arrives as the pair (name, array), which becomes the array."""

    ALLOWED = NUMPY_ARRAYS | {("collections", "OrderedDict")}

    def find_class(self, module, name):
        if (module, name) == ("builtins", "tuple"):
            return _tensor_or_tuple
        return super().find_class(module, name)


def _tensor_or_tuple(items):
    items = tuple(items)
    return items[1] if len(items) == 2 and isinstance(items[0], str) and isinstance(items[1], np.ndarray) else items


def _read_pickled(path, damaged):
    try:
        with open(path, "rb") as stream:
            state = _PaddlePickle(stream).load()
    except pickle.UnpicklingError as error:
        raise InputError(f"{damaged} ({error}); nothing in it was run") from None
    except Exception as error:  # a damaged pickle fails in many ways, each harmless once no code may run
        raise InputError(f"{damaged} ({type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != PICKLED_FORMAT:
        raise InputError(f"{path} is not a DNSD checkpoint; pass a .pdckpt written by this tool")
    if any(isinstance(array, np.ndarray) and array.dtype.kind not in ARRAY_KINDS
           for array in _leaves(state)):
        raise InputError(f"{damaged} (it holds arrays that are not numbers)")
    return state


def _leaves(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def load_checkpoint(path):
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
    if type(state.get("step")) is not int or not 0 <= state["step"] <= steps_per_epoch or \
            not isinstance(totals, dict) or \
            sorted(totals) != sorted(TOTALS) or not all(type(value) in (int, float) for value in totals.values()) or \
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
    """(state, config, model) of a checkpoint, its model on the device the config asks for. stated: values the
    user gave, which may change only what keeps the model the same (data file, device); purpose names the command
    in the message that refuses another."""
    state = load_checkpoint(path)
    config = for_checkpoint(state["config"], stated or {}, purpose)
    select_run_device(config.run)
    return state, config, restore_model(state, path)
