"""Writing files so that a reader, or a process killed at any moment, sees a whole old file or a whole new one."""
import hashlib
import json
import os
import tempfile

from DNSD.errors import InputError

TEMPORARY_PREFIX = ".tmp-"  # DNSD's own temporary files, which a killed process may leave and a new run removes


def _file_mode():
    """The permissions open() gives a new file (0o666 less the umask); mkstemp's own are 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write(path, write):
    """Call write(temporary_path), flush the file to disk, then rename it onto path: a reader, or a run killed at
    any moment, sees the old file or the new one, never half of one. A path that is not a file (a device such as
    /dev/stdout, a FIFO, a socket) or that is a symbolic link is refused: the rename would replace it."""
    refuse_link(path)
    if os.path.exists(path) and not os.path.isfile(path):
        kind = "a folder" if os.path.isdir(path) else "not a regular file (a device, FIFO or socket)"
        raise InputError(f"{path} is {kind}; DNSD writes a new file in its place only where a file is: name one")
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=folder)
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


def refuse_link(path):
    """InputError where path is a symbolic link: DNSD writes no file through one, nor replaces one."""
    if os.path.islink(path):
        raise InputError(f"{path} is a symbolic link; DNSD never writes through one: remove it, or copy in the "
                         "file it points to")


def append_line(path, line):
    """Add a line to a file, never through a symbolic link (refused)."""
    refuse_link(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    with os.fdopen(descriptor, "a", encoding="utf-8", errors="backslashreplace") as stream:
        stream.write(line)


def write_text(path, text):
    atomic_write(path, lambda temporary: _write_file(temporary, text))


def _write_file(path, text):
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)


MAX_JSON_BYTES = 16 << 20  # DNSD's JSON files are kilobytes; one larger was not written by DNSD


def read_json(path, limit=MAX_JSON_BYTES):
    """What a JSON file holds, or None where it is not JSON of at most limit bytes (damaged, or not DNSD's);
    OSError where it cannot be read."""
    with open(path, "rb") as stream:
        raw = stream.read(limit + 1)
    try:
        return json.loads(raw) if len(raw) <= limit else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def write_json(path, record):
    write_text(path, json.dumps(record, indent=2) + "\n")


def file_digest(path, algorithm="md5"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_folder(*parts):
    """A path in DNSD's cache (~/.cache/dnsd, or under XDG_CACHE_HOME)."""
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dnsd", *parts)
