"""The checkpoint file: one file holding the weights and everything needed to rebuild, evaluate or continue a run,
in a form that loading can trust.

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

from DNSD.errors import InputError, one_line
from DNSD.files import atomic_write
from DNSD.untrusted import NUMPY_ARRAYS, DataUnpickler

FORMAT = "dnsd-checkpoint/2"
PICKLED_FORMAT = "dnsd-checkpoint/1"  # paddle.save's pickle, before checkpoints carried a digest
MAX_BYTES = 512 << 20  # ResNet-1202's checkpoint, the largest DNSD writes, is about 160 MB
ARRAY_KINDS = "biuf"  # bool, signed and unsigned integers, floats: what tensors hold; never objects
MAX_STATE_BYTES = 64 << 20  # state.json: the config and a few numbers per epoch
HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


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
        raise InputError(f"checkpoint {path} does not exist; pass the folder of a training run, or a .pdckpt in it")
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
        arrays = [_read_array(data) for _, data in members[1:-1]]
        state = _decode(json.loads(members[0][1]), arrays)
    except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as error:
        raise InputError(f"{damaged} ({type(error).__name__}: {one_line(error, 120)})") from None
    return state


def _read_array(data):
    """A .npy member as an array, its header's shape and type checked against the bytes that follow before anything
    is allocated: a header may declare any shape, and numpy would allocate it first."""
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version not in HEADERS:
        raise ValueError(f".npy format {version}")
    shape, fortran_order, dtype = HEADERS[version](stream)
    if dtype.kind not in ARRAY_KINDS or dtype.hasobject:
        raise ValueError("an array that is not numbers")
    count = 1
    for extent in shape:
        count *= extent
    if count * dtype.itemsize != len(data) - stream.tell():
        raise ValueError(f"an array whose header declares shape {shape}, which its bytes do not hold")
    array = np.frombuffer(data, dtype, count, stream.tell()).reshape(shape, order="F" if fortran_order else "C")
    return array.copy()


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
