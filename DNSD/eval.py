"""`dnsd eval`: a checkpoint's error and per-class accuracy on the test (or validation) split, and its report
(reporting/reports.py)."""
from DNSD.changes import data_and_device_keys
from DNSD.config import add_config_flags, stated_values
from DNSD.errors import InputError
from DNSD.inference.runtimes import ENGINES
from DNSD.reporting.figures import check_figure_path, draw_confusion, write_figure
from DNSD.reporting.reports import checkpoint_report, model_report
from DNSD.runs.folder import checkpoint_in
from DNSD.training.evaluation import format_report


def add_arguments(parser):
    parser.add_argument("--checkpoint", metavar="PATH", help="a run folder (its best checkpoint) or a .pdckpt file")
    parser.add_argument("--model", metavar="PREFIX",
                        help="an exported model instead: dnsd export's prefix, or its PREFIX.onnx")
    parser.add_argument("--engine", choices=ENGINES,
                        help="what runs an exported model (default: the fastest that runs it correctly here)")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="the split to test (default: test)")
    parser.add_argument("--plot-file", metavar="PATH", help="also draw the confusion matrix there (.png, .pdf, .svg)")
    add_config_flags(parser, data_and_device_keys)


def execute(args):
    if args.plot_file:
        check_figure_path(args.plot_file)  # before the evaluation, not after it
    if bool(args.checkpoint) == bool(args.model):
        raise InputError("dnsd eval needs a model: --checkpoint RUN_DIR (or a .pdckpt) or --model PREFIX (or "
                         "PREFIX.onnx, from dnsd export), one of them")
    stated = stated_values(args.config, args, args.override)
    if args.model:
        result = model_report(args.model, args.split, stated, args.engine)
    else:
        result = checkpoint_report(checkpoint_in(args.checkpoint), args.split, stated)
    print(format_report(result, args.split, result["report"]))
    print(f"report written to {result['report']}")
    if args.plot_file:
        print(f"confusion matrix drawn in {write_figure(draw_confusion(result), args.plot_file)}")
