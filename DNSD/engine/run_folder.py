"""The rules of a run folder: one live run per folder, what DNSD writes there, and what a new run may replace.

A training, a resume or a branch holds an exclusive lock (flock) on RUN_DIR/.lock for as long as it runs; a second
one on the same folder stops at once, naming the holder. The kernel drops the lock when its process ends, however it
ends, so a killed run never blocks the next. The lock file itself is never removed: a process that locked a removed
file and one that locks its replacement would both believe they hold the folder.
"""
import contextlib
import fcntl
import fnmatch
import json
import os
import shutil
import socket
import tempfile
import time

from DNSD.errors import InputError
from DNSD.files import FILE_MODE, TEMPORARY_PREFIX, write_text

# The files of a run folder.
LOCK = ".lock"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"  # one JSON record per finished epoch
SUMMARY = "summary.json"
BRANCH = "branch.json"
SEEDS = "seeds.json"  # in a multi-seed folder: the seeds and the config of its runs seed-K/
ERROR_LOG = "error.log"
VISUALDL = "vdl"
BEST = "best.pdckpt"  # the checkpoint of the epoch with the lowest validation error
LAST = "last.pdckpt"  # the checkpoint a resume continues from
# Everything DNSD writes into a run folder, as fnmatch patterns: --overwrite removes these and nothing else.
WRITTEN = (CONFIG, METRICS, SUMMARY, BRANCH, ERROR_LOG, VISUALDL, BEST, LAST, "best.*.json", "last.*.json",
           "best-inference", "last-inference", f"{TEMPORARY_PREFIX}*")
# What makes a folder hold a run that a new one would replace.
RUN_MARKS = (CONFIG, METRICS, BEST, LAST)


def lock(run_dir):
    """Create run_dir if needed and lock it for this process's life; returns the open lock file's descriptor."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        descriptor = os.open(os.path.join(run_dir, LOCK), os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as error:
        raise InputError(f"cannot write to output folder {run_dir} ({error.strerror}); choose another "
                         "--output-dir") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(descriptor)
        os.close(descriptor)
        raise InputError(f"{run_dir} is in use by a running DNSD training ({holder}); wait for it to end or stop it, "
                         "or choose another --output-dir") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return descriptor


@contextlib.contextmanager
def run_lock(run_dir, take=True):
    """Hold the lock of run_dir for the block (take=False: hold nothing, as data-parallel ranks other than 0 do)."""
    descriptor = lock(run_dir) if take else None
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


def written_files(run_dir):
    """The paths of what DNSD wrote in run_dir (the lock aside)."""
    names = os.listdir(run_dir) if os.path.isdir(run_dir) else []
    return [os.path.join(run_dir, name) for name in sorted(names)
            if any(fnmatch.fnmatch(name, pattern) for pattern in WRITTEN)]


def holds_run(run_dir):
    """The first file that shows run_dir holds a run, or None."""
    marks = [name for name in RUN_MARKS if os.path.exists(os.path.join(run_dir, name))]
    return marks[0] if marks else None


def refuse_existing_run(run_dir, overwrite):
    """A new run may not take a folder that holds one, unless overwrite."""
    mark = holds_run(run_dir)
    if mark and not overwrite:
        raise InputError(f"{run_dir} already holds a run ({mark}); continue it with --resume {run_dir}, replace it "
                         "with --overwrite, or choose another --output-dir")


def remove(paths):
    for path in paths:
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def remove_temporaries(run_dir):
    """Temporary files of DNSD's own writes that a killed process left behind (call while holding the lock)."""
    remove(path for path in written_files(run_dir) if os.path.basename(path).startswith(TEMPORARY_PREFIX))


def check_writable(folder):
    """Fail early, with one line, where folder cannot take a new file (it is created if missing)."""
    try:
        os.makedirs(folder, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=folder)
        os.close(descriptor)
        os.remove(probe)
    except OSError as error:
        raise InputError(f"cannot write to folder {folder} ({error.strerror}); choose another folder or fix its "
                         "permissions") from None


def append_record(run_dir, record):
    """Add an epoch's record to the run's metrics.jsonl."""
    with open(os.path.join(run_dir, METRICS), "a") as stream:
        stream.write(json.dumps(record) + "\n")


def write_records(run_dir, records):
    """Replace metrics.jsonl by these records (a resume drops the lines of work it is about to redo)."""
    write_text(os.path.join(run_dir, METRICS), "".join(json.dumps(record) + "\n" for record in records))


def read_records(run_dir, fields):
    """The epoch records of a run (finished or not) that metrics.jsonl holds, each with at least these fields."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.isfile(path):
        raise InputError(f"{run_dir} holds no {METRICS}; pass the output folder of a training run")
    records = []
    with open(path) as stream:
        for number, line in enumerate(stream, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if not isinstance(record, dict) or not {"epoch", *fields} <= set(record):
                    raise InputError(f"{path} line {number} is not an epoch record; the file was edited or damaged")
                records.append(record)
    if not records:
        raise InputError(f"{path} holds no epoch yet; plot the run after its first epoch")
    return records
