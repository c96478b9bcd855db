"""The one exception type for a user's mistake: the CLI prints its message as one line and exits with code 2."""


class InputError(Exception):
    """Bad input from the user (a flag, a config file, an archive, a checkpoint, a folder).

    The message names the problem and the fix in one line; no traceback is shown for it.
    """

    exit_code = 2
