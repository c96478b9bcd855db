"""The command line: `dnsd MODE [flags]`, the same as `dnsd --mode MODE [flags]`. Each mode is implemented, and
its flags declared (add_arguments), in the module MODES names; `dnsd --help` lists the modes, `dnsd MODE --help`
one mode's flags.

Works as `dnsd` (installed), `python DNSD/main.py`, `python main.py` inside DNSD/, and `python -m DNSD`.
"""
import argparse
import contextlib
import difflib
import importlib
import os
import sys
import tempfile
import time
import traceback

if __package__ in (None, ""):
    # Run as a script: the folder on sys.path is DNSD/ itself; put the repository root there so `DNSD` imports.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from DNSD import __version__, invocation
from DNSD.errors import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, DNSDError, describe_os_error, one_line
from DNSD.files import append_line
from DNSD.runs.folder import ERROR_LOG
from DNSD.system.console import quiet_libraries

EXIT_INTERRUPTED = 130
MODES = {  # mode: (the module that implements it, what it does)
    "train": ("DNSD.train", "train with the paper's recipe, or resume, branch, run several seeds or a sweep"),
    "eval": ("DNSD.eval", "test a checkpoint or exported model: error, top-5, per-class accuracy, confusion matrix"),
    "predict": ("DNSD.predict", "classify PNG or JPEG files with a checkpoint or an exported model, as CSV"),
    "export": ("DNSD.export", "write a checkpoint for ONNX Runtime and Paddle Inference, checked against it"),
    "plot": ("DNSD.plot", "draw runs' curves, the paper's Figures 3 and 7, or a sweep's Figure 8 (both panels)"),
    "summary": ("DNSD.summary", "tabulate runs as the paper's table: test error mean ± std over seeds"),
    "audit": ("DNSD.audit", "re-train an epoch of a run and verify it against the run's record"),
    "card": ("DNSD.card", "write a run's (or a seeds or sweep folder's) MODEL_CARD.md"),
    "info": ("DNSD.info", "say what DNSD runs on and check its device deeply, or --compare two runs"),
}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line naming the problem, instead of argparse's usage block."""
        self.exit(2, f"DNSD: error: {message} (see {self.prog} --help)\n")


VERBOSE = "let through the libraries' own logs and warnings (Paddle's, Matplotlib's), which DNSD otherwise silences"


def shared_flags(parser):
    parser.add_argument("--verbose", action="store_true", help=VERBOSE)


def top_help():
    lines = ["usage: dnsd MODE [flags]   (or dnsd --mode MODE [flags]; MODE defaults to train)", "",
             "Deep Networks with Stochastic Depth (Huang et al., 2016) in PaddlePaddle.", "", "modes:"]
    lines += [f"  {mode:<9}{summary}" for mode, (_, summary) in MODES.items()]
    lines += ["", "flags of every mode:", "  -h, --help  this text; dnsd MODE --help lists MODE's flags",
              f"  --verbose   {VERBOSE}"]
    return "\n".join(lines) + "\n"


def mode_parser(mode):
    """The parser of one mode: the mode's own flags, declared by its module."""
    module = importlib.import_module(MODES[mode][0])
    parser = Parser(prog=f"dnsd {mode}", allow_abbrev=False, description=MODES[mode][1].capitalize() + ".")
    parser.add_argument("--mode", choices=[mode], help=argparse.SUPPRESS)
    shared_flags(parser)
    module.add_arguments(parser)
    return parser, module


def split_mode(argv):
    """(the mode, the arguments for its parser, whether the mode was named)."""
    if argv and argv[0] in MODES:
        return argv[0], argv[1:], True
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--mode")
    named = pre.parse_known_args(argv)[0].mode
    if named is not None and named not in MODES:
        Parser(prog="dnsd").error(f"--mode {named}: choose one of {', '.join(MODES)}")
    return named or "train", argv, named is not None


def unknown_flags(mode, parser, extra):
    """One line for the first flag this mode does not have: whose it is, or what was meant."""
    flag = next((item.split("=", 1)[0] for item in extra if item.startswith("-")), None)
    if flag is None:
        return f"unexpected arguments: {' '.join(extra)}"
    owners = [other for other in MODES if other != mode and flag in mode_parser(other)[0]._option_string_actions]
    owned = f"{flag} is a flag of {' and '.join('dnsd ' + o for o in owners)}"
    # A near-perfect spelling of this mode's own flag (--epoch for --epochs) is more likely meant than another mode's.
    typo = difflib.get_close_matches(flag, parser._option_string_actions, n=1, cutoff=0.9)
    if owners and not typo:
        return f"{owned}, not of dnsd {mode}"
    close = typo or difflib.get_close_matches(flag, parser._option_string_actions, n=1)
    return f"dnsd {mode} has no flag {flag}" + (f"; did you mean {close[0]}?" if close else "") + (
        f" ({owned})" if owners else "")


def parse(argv):
    """(the parsed arguments, the module of their mode); --help and errors end the process here."""
    mode, rest, named = split_mode(argv)
    if not named and any(item in ("-h", "--help") for item in argv):
        print(top_help(), end="")
        sys.exit(0)
    with quiet_libraries("--verbose" in rest):  # the modes that compute import Paddle with their module
        parser, module = mode_parser(mode)
        args, extra = parser.parse_known_args(rest)
        if extra:
            parser.error(unknown_flags(mode, parser, extra))
    return args, module


def error_log_path(args):
    """Where an internal error's traceback goes: the run folder of the command where it has one, else the temporary
    folder."""
    resume, checkpoint = getattr(args, "resume", None), getattr(args, "checkpoint", None)
    candidates = [getattr(args, "branch", None),
                  resume and (os.path.dirname(resume) if resume.endswith(".pdckpt") else resume),
                  getattr(args, "run.output_dir", None), checkpoint and os.path.dirname(checkpoint)]
    for folder in filter(None, candidates):
        if os.path.isdir(folder) and os.access(folder, os.W_OK):
            return os.path.join(folder, ERROR_LOG)
    return os.path.join(tempfile.gettempdir(), f"dnsd-error-{os.getpid()}.log")


def report_internal_error(args, error):
    """The one line of an internal error; the traceback goes to a log file. Never raises: it is the last handler."""
    path = error_log_path(args)
    try:
        append_line(path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} DNSD {__version__}: {' '.join(sys.argv)}\n"
                    f"{traceback.format_exc()}")
    except Exception:  # an unwritable or odd log path: the traceback goes to the console instead
        path = "the traceback below"
        with contextlib.suppress(Exception):
            traceback.print_exc()
    return (f"DNSD: internal error: {type(error).__name__}: {one_line(error)}; this is a bug in DNSD: please report "
            f"it with {path} and the output of dnsd info")


def main(argv=None):
    for stream in (sys.stdout, sys.stderr):  # a path or class name the locale cannot encode is escaped, not fatal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        args, module = parse(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt:  # while the modules load (Paddle's import takes seconds)
        print("DNSD: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    invocation.record(["dnsd", *(sys.argv[1:] if argv is None else argv)])
    try:
        return module.execute(args) or 0
    except DNSDError as error:
        print(f"DNSD: {error.label}: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("DNSD: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        print(f"DNSD: error: {describe_os_error(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as error:  # anything else is a bug: a short line here, the traceback in a log file
        print(report_internal_error(args, error), file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
