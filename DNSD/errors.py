"""The expected ways for a command to fail, and how a failure reads: the CLI prints one line and exits with the
code."""
import errno
import os

EXIT_TRAINING_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_SOME_FAILED = 3  # --mode predict: some images could not be read; the others were predicted
EXIT_AUDIT_FAILED = 4  # dnsd audit: a re-trained position does not follow from the recipe, or a file was altered;
# dnsd info --check-numerics: other bits than the reference
EXIT_RUN_IN_USE = 75  # sysexits' EX_TEMPFAIL: another process holds the run folder; a sweep's worker moves on
EXIT_INTERNAL_ERROR = 70  # sysexits' EX_SOFTWARE: a bug in DNSD, not the user's mistake


class DNSDError(Exception):
    exit_code = EXIT_TRAINING_FAILED
    label = "error"  # the word after "DNSD:" on the console


class InputError(DNSDError):
    """Bad input from the user (a flag, a config file, an archive, a checkpoint, a folder): no traceback, exit 2."""

    exit_code = EXIT_USER_ERROR


class RunInUse(InputError):
    """The run folder is locked by another live process."""

    exit_code = EXIT_RUN_IN_USE


class TrainingStopped(DNSDError):
    """Training ended early (a signal, a non-finite number); the message says what was kept and what to do."""

    def __init__(self, message, exit_code=EXIT_TRAINING_FAILED, label="error"):
        super().__init__(message)
        self.exit_code = exit_code
        self.label = label


class SomeImagesFailed(DNSDError):
    """--mode predict could not read some images (each named on its own line) and predicted the others."""

    exit_code = EXIT_SOME_FAILED


class AuditFailed(DNSDError):
    """dnsd audit found what a reviewer must not accept (each finding on its own line before this one)."""

    exit_code = EXIT_AUDIT_FAILED
    label = "audit failed"


class NumericsDiffer(DNSDError):
    """dnsd info --check-numerics: this CPU computed other bits than the reference machines."""

    exit_code = EXIT_AUDIT_FAILED
    label = "numerics differ"


class AuditUnverified(InputError):
    """dnsd audit could not verify what it was asked to (each position's reason on its own line before this one)."""

    label = "audit incomplete"


# What to do about the file-system faults a command can meet, by errno.
OS_ADVICE = {
    errno.ENOSPC: "free space on that disk: the files written before are intact, and a run continues with --resume",
    errno.EDQUOT: "free space within your disk quota: the files written before are intact, and a run continues "
                  "with --resume",
    errno.EROFS: "the file system is read-only: choose a folder on a writable one",
    errno.EACCES: "choose a folder you may write, or fix its permissions",
    errno.EPERM: "choose a folder you may write, or fix its permissions",
    errno.EISDIR: "it is a folder: name a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "a folder of the path does not exist: create it or fix the path",
}


def one_line(message, limit=None):
    """A message as one console line, whatever a library put in it (cut at limit characters)."""
    return " ".join(str(message).split())[:limit]


def describe_os_error(error):
    """One line for a file-system fault: what failed, where, and what to do."""
    from DNSD.files import TEMPORARY_PREFIX  # files raises InputError: imported here, not at the top

    where = error.filename or ""
    if os.path.basename(where).startswith(TEMPORARY_PREFIX):  # DNSD's own temporary file: name its folder
        where = os.path.dirname(where)
    advice = OS_ADVICE.get(error.errno, "check the path and the disk")
    return f"{one_line(error.strerror or error)}{f': {where}' if where else ''}; {advice}"
