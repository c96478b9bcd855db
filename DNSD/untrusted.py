"""Reading files that come from elsewhere (archives, checkpoints, configs, images): pickles that can only hold data,
and paths that must be regular files or folders, so that a FIFO or a device never blocks or floods a command."""
import os
import pickle
import stat

from DNSD.errors import InputError

# What a numpy array needs to be rebuilt from a pickle, and nothing else: no function that runs code.
NUMPY_ARRAYS = frozenset({("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                          ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                          ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                          ("numpy._core.numeric", "_frombuffer")})


class DataUnpickler(pickle.Unpickler):
    """An unpickler of data only: dicts, lists, tuples, bytes, strings, numbers, and numpy arrays (ALLOWED)."""

    ALLOWED = NUMPY_ARRAYS

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):  # bytes pickled by Python 3 at protocol 2
            return _latin1_bytes
        if (module, name) in (("builtins", "bytes"), ("__builtin__", "bytes")):  # empty bytes, at protocol 2
            return _listed_bytes
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not data; a data file may not name code")


def _listed_bytes(*arguments):
    """bytes() and bytes(list of ints), never bytes(n): n zero bytes from a few bytes of pickle."""
    if not arguments or len(arguments) == 1 and isinstance(arguments[0], (list, tuple)):
        return bytes(*arguments)
    raise pickle.UnpicklingError("bytes of a given size: not what a data file holds")


def _latin1_bytes(text, encoding):
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"bytes encoded as {encoding!r}: not what a data file holds")
    return text.encode("latin1")


def regular_file(path, what):
    """path, where it is a regular file (or a link to one); InputError naming what it is otherwise."""
    _check_kind(path, what, stat.S_ISREG, "a file")
    return path


def file_or_folder(path, what):
    _check_kind(path, what, lambda mode: stat.S_ISREG(mode) or stat.S_ISDIR(mode), "a file or a folder")
    return path


def _check_kind(path, what, fits, expected):
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return  # the caller says what is missing, in its own words
    except OSError as error:
        raise InputError(f"{what} {path}: {error.strerror}") from None
    if not fits(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a file")
        raise InputError(f"{what} {path} is {kind}; name {expected}")
