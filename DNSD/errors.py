"""The expected ways for a command to fail: the CLI prints the message as one line and exits with the code."""


class DNSDError(Exception):
    exit_code = 1


class InputError(DNSDError):
    """Bad input from the user (a flag, a config file, an archive, a checkpoint, a folder): no traceback, exit 2."""

    exit_code = 2


class TrainingStopped(DNSDError):
    """Training ended early (a signal, a non-finite loss); the message says what was kept and what to do."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code
