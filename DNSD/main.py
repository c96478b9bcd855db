"""The command line: `--mode train` trains or resumes (train.py), `--mode eval` tests a checkpoint (eval.py),
`--mode predict` classifies image files (predict.py), `--mode export` writes an inference model (export.py),
`--mode plot` draws runs' curves (plot.py), `--mode summary` tabulates runs (summary.py), `--mode info` says what
DNSD runs on (engine/device.py).

Works as `dnsd` (installed), `python DNSD/main.py`, `python main.py` inside DNSD/, and `python -m DNSD`.
"""
import argparse
import errno
import os
import sys
import tempfile
import time
import traceback

if __package__ in (None, ""):
    # Run as a script: the folder on sys.path is DNSD/ itself; put the repository root there so `DNSD` imports.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from DNSD import __version__
from DNSD.config import add_config_flags, build_config, shipped_configs, stated_values
from DNSD.console import quiet_libraries
from DNSD.engine.run_folder import ERROR_LOG
from DNSD.errors import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, DNSDError, InputError
from DNSD.files import TEMPORARY_PREFIX

EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line naming the problem, instead of argparse's usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser():
    parser = Parser(
        prog="DNSD", allow_abbrev=False,
        description="Deep Networks with Stochastic Depth (Huang et al., 2016): train ResNet-110 with stochastic "
                    "depth on CIFAR-10 with the paper's recipe, or evaluate a checkpoint. Config precedence: "
                    "defaults < --config FILE.yaml < flags < -o section.key=value.")
    parser.add_argument("--mode", choices=("train", "eval", "predict", "export", "plot", "summary", "info"),
                        default="train",
                        help="train (or resume), eval a checkpoint, predict the classes of image files, export a "
                             "checkpoint for inference, plot runs' curves, "
                             "summarise runs as the paper's table, or print the device, Paddle build and package "
                             "versions for a bug report (default: train)")
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML config file, e.g. configs/resnet110_sd.yaml, or the name of a shipped config: "
                             f"{', '.join(shipped_configs())}")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. -o train.epochs=10 (repeatable; applied last)")
    parser.add_argument("--resume", nargs="?", const="", metavar="RUN_DIR",
                        help="train: continue the run in RUN_DIR (default: the output_dir) from its last.pdckpt, or "
                             "from the checkpoint named (RUN_DIR/best.pdckpt)")
    parser.add_argument("--branch", metavar="NEW_DIR",
                        help="train, with --resume: start a new run in NEW_DIR from that checkpoint, with changed "
                             "training keys (e.g. -o train.lr=0.01), the source run left as it is")
    parser.add_argument("--seeds", metavar="SEEDS",
                        help="train: one run per seed (0,1,2 or 0-3) into OUTPUT_DIR/seed-K, then their summary; "
                             "--resume OUTPUT_DIR continues the unfinished ones")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="eval, predict, export: the checkpoint to use (a run's best.pdckpt)")
    parser.add_argument("--images", nargs="+", metavar="FILE_OR_FOLDER",
                        help="predict: PNG or JPEG files, or folders of them (every PNG and JPEG file, sorted by name)")
    parser.add_argument("--model", metavar="PREFIX",
                        help="predict: an exported model (--mode export's prefix) instead of --checkpoint")
    parser.add_argument("--top-k", type=int, metavar="K", help="predict: classes per image in the CSV (default: 5)")
    parser.add_argument("--resize", action="store_true", default=None,
                        help="predict: convert images that are not 32x32 RGB (the whole image to 32x32, Pillow's "
                             "bilinear filter) instead of refusing them")
    parser.add_argument("--strict", action="store_true", default=None,
                        help="predict: stop at the first image that cannot be read instead of going on without it")
    parser.add_argument("--output", metavar="FILE.csv",
                        help="predict: the CSV to write, replacing one that exists (default: standard output)")
    parser.add_argument("--export-prefix", metavar="PATH",
                        help="export: path prefix of the inference model (default: beside the checkpoint, "
                             "e.g. runs/resnet110_sd/best-inference/model)")
    parser.add_argument("--split", choices=("test", "val"), help="eval: the split to test (default: test)")
    parser.add_argument("--runs", nargs="+", metavar="RUN_DIR",
                        help="plot, summary: the run folders (or folders of runs), e.g. runs/resnet110_sd "
                             "runs/resnet110_baseline")
    parser.add_argument("--summary-file", metavar="PATH.md",
                        help="summary: the Markdown table to write, the CSV beside it (default: summary.md)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="summary: add B's test error minus A's with a 95 %% confidence interval (Welch's "
                             "t-test); A and B are configurations or row numbers")
    parser.add_argument("--plot-file", metavar="PATH",
                        help="plot: the figure to write, .png, .pdf or .svg, replacing one that exists "
                             "(default: curves.png); eval: also draw the confusion matrix there")
    parser.add_argument("--figure", choices=("curves", "test-error"),
                        help="plot: curves (training loss, validation error, active blocks per run; the default) "
                             "or test-error (the paper's Figure 3: mean test error per configuration, the runs' "
                             "spread as a band)")
    parser.add_argument("--verbose", action="store_true",
                        help="let through the libraries' own logs and warnings (Paddle's, Matplotlib's), which DNSD "
                             "otherwise silences")
    parser.add_argument("--print-config", action="store_true", default=None,
                        help="train: print the resolved config as YAML and exit")
    add_config_flags(parser.add_argument_group("config keys (DNSD/config.py; every key is also -o section.key)"))
    return parser


# The modes each flag that is not a config key applies to: any other mode refuses it rather than ignore it.
MODE_FLAGS = {"resume": ("train",), "branch": ("train",), "seeds": ("train",), "print_config": ("train",),
              "checkpoint": ("eval", "predict", "export"), "images": ("predict",), "model": ("predict",),
              "top_k": ("predict",), "resize": ("predict",), "strict": ("predict",), "output": ("predict",),
              "export_prefix": ("export",), "split": ("eval",),
              "runs": ("plot", "summary"), "plot_file": ("plot", "eval"), "figure": ("plot",),
              "summary_file": ("summary",),
              "compare": ("summary",)}


def check_flags(args):
    for name, modes in MODE_FLAGS.items():
        if getattr(args, name) is not None and args.mode not in modes:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} does not apply to --mode {args.mode}; it is for --mode {' and '.join(modes)}")
    if args.branch is not None and args.resume is None:
        raise InputError("--branch NEW_DIR starts from a checkpoint: give it with --resume RUN_DIR (or a .pdckpt)")
    if args.seeds is not None and args.resume is not None:
        raise InputError("--resume OUTPUT_DIR continues the seeds its seeds.json lists; leave out --seeds")


def run(args):
    check_flags(args)
    stated = stated_values(args.config, args, args.override)
    if args.mode in ("eval", "export") and not args.checkpoint:
        raise InputError(f"--mode {args.mode} needs --checkpoint PATH, e.g. --checkpoint runs/resnet110_sd/best.pdckpt")
    if args.mode == "summary":
        from DNSD.summary import write_summary

        if stated or not args.runs:
            raise InputError("--mode summary takes --runs RUN_DIR [RUN_DIR ...], no config keys")
        print(write_summary(args.runs, args.summary_file or "summary.md", args.compare), end="")
        return 0
    if args.mode == "plot":
        from DNSD.plot import plot_runs

        if stated or not args.runs:
            raise InputError("--mode plot takes --runs RUN_DIR [RUN_DIR ...] and --plot-file, no config keys")
        print(f"wrote {plot_runs(args.runs, args.plot_file or 'curves.png', args.figure or 'curves')}")
        return 0
    if args.mode == "predict":
        from DNSD.predict import predict_images

        if not args.images:
            raise InputError("--mode predict needs --images FILE_OR_FOLDER ..., and --checkpoint PATH or --model "
                             "PREFIX")
        top_k = 5 if args.top_k is None else args.top_k
        predict_images(args.images, args.checkpoint, args.model, top_k, bool(args.resize), bool(args.strict),
                       args.output, stated)
        return 0
    if args.mode == "export":
        from DNSD.export import export_checkpoint

        prefix = export_checkpoint(args.checkpoint, args.export_prefix, stated)
        print(f"exported the inference model to {prefix}.* (load it with paddle.jit.load({prefix!r}))")
        return 0
    if args.mode == "eval":
        from DNSD.eval import evaluate_checkpoint, format_report
        from DNSD.plot import check_figure_path, draw_confusion, write_figure

        split = args.split or "test"
        if args.plot_file:
            check_figure_path(args.plot_file)  # before the evaluation, not after it
        result = evaluate_checkpoint(args.checkpoint, split, stated)
        print(format_report(result, split, result["report"]))
        print(f"report written to {result['report']}")
        if args.plot_file:
            print(f"confusion matrix drawn in {write_figure(draw_confusion(result), args.plot_file)}")
        return 0
    config = build_config(stated)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if args.mode == "info":
        return print_environment(config.run)
    from DNSD.train import parse_seeds, resume, train, train_seeds

    if args.seeds is not None:
        train_seeds(config, parse_seeds(args.seeds))
    elif args.resume is not None:
        resume(args.resume or config.run.output_dir, stated, args.branch)
    else:
        train(config)
    return 0


def print_environment(run):
    """The lines of a bug report, the device run.device gives here, and the deep check of that device: a machine
    whose GPU Paddle cannot use, or whose check fails, ends in one error line (exit 2), which is how
    scripts/setup_env.sh checks a GPU install."""
    from DNSD.engine.device import describe_device, environment_report, select_run_device
    from DNSD.engine.device_check import check_device

    for label, value in environment_report():
        print(f"{label + ':':<22}{value}")
    sys.stdout.flush()
    device = select_run_device(run)
    print(f"{'device (' + run.device + '):':<22}{describe_device(device)}")
    for name, what in check_device(device):
        print(f"{'check ' + name + ':':<22}ok ({what})")
    return 0


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


def one_line(message):
    """A message as one console line, whatever a library put in it."""
    return " ".join(str(message).split())


def describe_os_error(error):
    """One line for a file-system fault: what failed, where, and what to do."""
    where = error.filename or ""
    if os.path.basename(where).startswith(TEMPORARY_PREFIX):  # DNSD's own temporary file: name its folder
        where = os.path.dirname(where)
    advice = OS_ADVICE.get(error.errno, "check the path and the disk")
    return f"{one_line(error.strerror or error)}{f': {where}' if where else ''}; {advice}"


def error_log_path(args):
    """Where an internal error's traceback goes: the run folder of the command where it has one, else the temporary
    folder."""
    candidates = [args.branch, args.resume and (os.path.dirname(args.resume) if args.resume.endswith(".pdckpt")
                                                else args.resume),
                  getattr(args, "run.output_dir", None), args.checkpoint and os.path.dirname(args.checkpoint)]
    for folder in filter(None, candidates):
        if os.path.isdir(folder) and os.access(folder, os.W_OK):
            return os.path.join(folder, ERROR_LOG)
    return os.path.join(tempfile.gettempdir(), f"dnsd-error-{os.getpid()}.log")


def report_internal_error(args, error):
    path = error_log_path(args)
    try:
        with open(path, "a") as stream:
            stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} DNSD {__version__}: {' '.join(sys.argv)}\n")
            stream.write(traceback.format_exc())
    except OSError:
        path = "the traceback below"
        traceback.print_exc()
    return (f"DNSD: internal error: {type(error).__name__}: {one_line(error)}; this is a bug in DNSD: please report "
            f"it with {path} and the output of dnsd --mode info")


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose)
    try:
        return run(args)
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
