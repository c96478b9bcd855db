"""One live run per folder: a training, a resume or a branch holds an exclusive lock (flock) on RUN_DIR/.lock for as
long as it runs; a second one on the same folder stops at once, naming the holder. A symbolic link where the lock or
a file DNSD writes belongs is refused, so that nothing is written outside the folder. The kernel drops the lock when its
process ends, however it ends, so a killed run never blocks the next. The lock file itself is never removed: a
process that locked a removed file and one that locks its replacement would both believe they hold the folder. A
sweep's worker takes the lock to claim a run and hands it to the training process it starts."""
import contextlib
import fcntl
import os
import socket
import time

from DNSD.errors import InputError, RunInUse
from DNSD.files import FILE_MODE, refuse_link
from DNSD.runs.folder import written_files

LOCK = ".lock"

LOCK_WAIT_SECONDS = 30
# Every take of a lock waits out a probe (held(), which takes it shared for an instant), not a run in training.
PROBE_WAIT_SECONDS = 1
# A sweep's worker claims a run by taking its lock, then hands it to the training process it starts: the descriptor,
# inherited, is named by this variable, and that process's lock() adopts it instead of taking the lock again.
INHERITED_LOCK = "DNSD_RUN_LOCK_FD"


def lock(run_dir, wait=PROBE_WAIT_SECONDS):
    """Create run_dir if needed and lock it for this process's life (wait: up to so many seconds for another process
    to release it); returns the open lock file's descriptor."""
    descriptor = _inherited(run_dir)
    if descriptor is not None:
        return _sign(descriptor)
    try:
        os.makedirs(run_dir, exist_ok=True)
        refuse_link(os.path.join(run_dir, LOCK))
        descriptor = os.open(os.path.join(run_dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as error:
        raise InputError(f"cannot write to output folder {run_dir} ({error.strerror}); choose another "
                         "--output-dir") from None
    deadline = time.monotonic() + wait
    while not _take(descriptor):
        if time.monotonic() >= deadline:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise RunInUse(f"{run_dir} is in use by a running DNSD training ({holder}); wait for it to end or stop "
                           "it, or choose another --output-dir")
        time.sleep(0.01)
    try:
        for path in written_files(run_dir):
            refuse_link(path)
    except InputError:
        os.close(descriptor)
        raise
    return _sign(descriptor)


def _sign(descriptor):
    """Write who holds the lock into the lock file, for the message of whoever finds it taken."""
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return descriptor


def _inherited(run_dir):
    """The lock of run_dir that a sweep's worker took and handed to this process, or None."""
    named = os.environ.pop(INHERITED_LOCK, None)
    try:
        descriptor = int(named)
        if os.path.samestat(os.fstat(descriptor), os.stat(os.path.join(run_dir, LOCK))):
            return descriptor
    except (TypeError, ValueError, OSError):
        pass
    return None


def claim(run_dir):
    """The descriptor of run_dir's lock, taken, or None where a live process holds it."""
    try:
        return lock(run_dir)
    except RunInUse:
        return None


def _take(descriptor):
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def held(run_dir):
    """Whether a live process holds run_dir's lock (a process that died holds none)."""
    try:
        descriptor = os.open(os.path.join(run_dir, LOCK), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def run_lock(run_dir, take=True, wait=PROBE_WAIT_SECONDS):
    """Hold the lock of run_dir for the block (take=False: hold nothing, as data-parallel ranks other than 0 do)."""
    descriptor = lock(run_dir, wait) if take else None
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _holder(descriptor):
    """Who holds a lock, as it wrote in the lock file; a holder that has just taken it may not have written yet."""
    for _ in range(40):
        holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip()
        if holder:
            return holder
        time.sleep(0.05)
    return "another process"
