"""DNSD's console carries DNSD's lines only. Paddle configures Python's root logger when it is imported (Paddle 3),
which lets every library's INFO lines through (Matplotlib's first-run font cache, Paddle's downloader), and its C++
core logs through glog; both are quieted around the imports that load Paddle, unless --verbose asks for them."""
import contextlib
import importlib
import logging
import os
import sys
import tempfile
import warnings

# Warnings Paddle gives on every run that say nothing about the run.
HARMLESS_WARNINGS = ("No ccache found", "When training, we now always track global mean and variance",
                     "AmpScaler can only be enabled on", "amp_guard can only be enabled on")
QUIET_LOGGERS = ("paddle.utils.download", "matplotlib.font_manager")


@contextlib.contextmanager
def quiet_libraries(verbose=False):
    """Around the imports that may load Paddle: silence the libraries' logs and known harmless warnings, and leave the
    root logger as it was before them; with verbose, leave everything."""
    if verbose:
        yield
        return
    os.environ.setdefault("GLOG_minloglevel", "2")  # glog, read when Paddle's core loads: errors only
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def quiet_loggers():
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)

    quiet_loggers()  # before the imports, for what they log as they load (Matplotlib's first font cache)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        quiet_loggers()  # and after them, for the loggers they set up at INFO (Paddle's downloader)


def imported_without_home(name):
    """A module whose import writes into the user's home for a part DNSD does not use (VisualDL: ~/.visualdl, its
    server's settings), imported with HOME pointing at a temporary folder, removed after."""
    if name in sys.modules:
        return sys.modules[name]
    home = os.environ.get("HOME")
    with tempfile.TemporaryDirectory(prefix="dnsd-home-") as folder:
        os.environ["HOME"] = folder
        try:
            return importlib.import_module(name)
        finally:
            if home is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = home
