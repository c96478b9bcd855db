"""Checkpoints: one file holding the weights and everything needed to rebuild, evaluate or continue a run."""
import json
import os
import tempfile

import paddle

from DNSD.architectures import build_model
from DNSD.config import config_from_dict
from DNSD.errors import InputError

FORMAT = "dnsd-checkpoint/1"


def _file_mode():
    """The permissions open() gives a new file (0o666 less the umask); mkstemp's own are 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write(path, write):
    """Call write(temporary_path), flush the file to disk, then rename it onto path: a reader, or a run killed at
    any moment, sees the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    os.close(descriptor)
    try:
        write(temporary)
        os.chmod(temporary, FILE_MODE)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_checkpoint(path, state):
    """Write state (config, weights, optimiser and scheduler state, metrics) as one checkpoint file."""
    atomic_write(path, lambda temporary: paddle.save({"format": FORMAT, **state}, temporary))


def write_text(path, text):
    atomic_write(path, lambda temporary: _write_file(temporary, text))


def _write_file(path, text):
    with open(path, "w") as stream:
        stream.write(text)


def write_json(path, record):
    write_text(path, json.dumps(record, indent=2) + "\n")


def load_checkpoint(path):
    """The state saved by save_checkpoint, with its config validated."""
    if not os.path.isfile(path):
        raise InputError(f"checkpoint {path} does not exist; pass --checkpoint RUN_DIR/best.pdckpt of a training run")
    try:
        state = paddle.load(path)
    except Exception as error:
        raise InputError(f"cannot load checkpoint {path} ({type(error).__name__}); the file is damaged or not a "
                         "DNSD checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path} is not a DNSD checkpoint (format {FORMAT}); pass a .pdckpt written by this tool")
    state["config"] = config_from_dict(state["config"], where=f" stored in {path}")
    return state


def restore_model(state, path):
    """The network described by the checkpoint's config, with its weights."""
    config = state["config"]
    model = build_model(config.model, state["num_classes"])
    expected = model.state_dict()
    weights = state["model"]
    mismatched = sorted(set(expected) ^ set(weights)) or [
        name for name in expected if list(expected[name].shape) != list(weights[name].shape)]
    if mismatched:
        raise InputError(f"checkpoint {path} does not fit a {model.name()} with {state['num_classes']} classes "
                         f"(first mismatch: {mismatched[0]}); it was written by another model")
    model.set_state_dict(weights)
    return model
