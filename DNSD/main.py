"""The command line: `--mode train` trains or resumes (train.py), `--mode eval` tests a checkpoint (eval.py),
`--mode export` writes it as an inference model (export.py), `--mode plot` draws runs' curves (plot.py), `--mode info`
says what DNSD runs on (device.py).

Works as `dnsd` (installed), `python DNSD/main.py`, `python main.py` inside DNSD/, and `python -m DNSD`.
"""
import argparse
import os
import sys
import warnings

if __package__ in (None, ""):
    # Run as a script: the folder on sys.path is DNSD/ itself; put the repository root there so `DNSD` imports.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from DNSD.config import add_config_flags, build_config, shipped_configs, stated_values
from DNSD.errors import DNSDError, InputError

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
    parser.add_argument("--mode", choices=("train", "eval", "export", "plot", "info"), default="train",
                        help="train (or resume), eval a checkpoint, export it for inference, plot runs' curves, or "
                             "print the device, Paddle build and package versions for a bug report (default: train)")
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="YAML config file, e.g. configs/resnet110_sd.yaml, or the name of a shipped config: "
                             f"{', '.join(shipped_configs())}")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key, e.g. -o train.epochs=10 (repeatable; applied last)")
    parser.add_argument("--resume", nargs="?", const="", metavar="RUN_DIR",
                        help="train: continue the run in RUN_DIR (default: the output_dir) from its last.pdckpt")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="eval, export: the checkpoint to use (a run's best.pdckpt)")
    parser.add_argument("--export-prefix", metavar="PATH",
                        help="export: path prefix of the inference model (default: beside the checkpoint, "
                             "e.g. runs/resnet110_sd/best-inference/model)")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="eval: the split to test")
    parser.add_argument("--runs", nargs="+", metavar="RUN_DIR",
                        help="plot: the run folders to overlay, e.g. runs/resnet110_sd runs/resnet110_baseline")
    parser.add_argument("--plot-file", default="curves.png", metavar="PATH",
                        help="plot: the PNG to write, replacing one that exists (default: curves.png)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    add_config_flags(parser.add_argument_group("config keys (DNSD/config.py; every key is also -o section.key)"))
    return parser


def run(args):
    stated = stated_values(args.config, args, args.override)
    if args.mode in ("eval", "export") and not args.checkpoint:
        raise InputError(f"--mode {args.mode} needs --checkpoint PATH, e.g. --checkpoint runs/resnet110_sd/best.pdckpt")
    if args.mode == "plot":
        from DNSD.plot import plot_runs

        if stated or not args.runs:
            raise InputError("--mode plot takes --runs RUN_DIR [RUN_DIR ...] and --plot-file, no config keys")
        print(f"wrote {plot_runs(args.runs, args.plot_file)}")
        return 0
    if args.mode == "export":
        from DNSD.export import export_checkpoint

        prefix = export_checkpoint(args.checkpoint, args.export_prefix, stated)
        print(f"exported the inference model to {prefix}.* (load it with paddle.jit.load({prefix!r}))")
        return 0
    if args.mode == "eval":
        from DNSD.eval import evaluate_checkpoint, format_report, report_path

        result = evaluate_checkpoint(args.checkpoint, args.split, stated)
        print(format_report(result, args.split, report_path(args.checkpoint, args.split)))
        return 0
    config = build_config(stated)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    if args.mode == "info":
        return print_environment(config.run)
    from DNSD.train import resume, train

    if args.resume is not None:
        resume(args.resume or config.run.output_dir, stated)
    else:
        train(config)
    return 0


def print_environment(run):
    """The lines of a bug report, then the device run.device gives here: a machine that has a GPU Paddle cannot
    use fails this as training would (exit 2), which is how scripts/setup_env.sh checks a GPU install."""
    from DNSD.device import describe_device, environment_report, select_run_device

    for label, value in environment_report():
        print(f"{label + ':':<22}{value}")
    sys.stdout.flush()
    print(f"{'device (' + run.device + '):':<22}{describe_device(select_run_device(run))}")
    return 0


def main(argv=None):
    warnings.filterwarnings("ignore", message="No ccache found")
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except DNSDError as error:
        print(f"DNSD: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("DNSD: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
