"""The expected ways for a command to fail: the CLI prints the message as one line and exits with the code."""

EXIT_TRAINING_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_SOME_FAILED = 3  # --mode predict: some images could not be read; the others were predicted
EXIT_INTERNAL_ERROR = 70  # sysexits' EX_SOFTWARE: a bug in DNSD, not the user's mistake


class DNSDError(Exception):
    exit_code = EXIT_TRAINING_FAILED
    label = "error"  # the word after "DNSD:" on the console


class InputError(DNSDError):
    """Bad input from the user (a flag, a config file, an archive, a checkpoint, a folder): no traceback, exit 2."""

    exit_code = EXIT_USER_ERROR


class TrainingStopped(DNSDError):
    """Training ended early (a signal, a non-finite number); the message says what was kept and what to do."""

    def __init__(self, message, exit_code=EXIT_TRAINING_FAILED, label="error"):
        super().__init__(message)
        self.exit_code = exit_code
        self.label = label


class SomeImagesFailed(DNSDError):
    """--mode predict could not read some images (each named on its own line) and predicted the others."""

    exit_code = EXIT_SOME_FAILED
