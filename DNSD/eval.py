"""`dnsd eval`: a checkpoint's error and per-class accuracy on the test (or validation) split, and its report
(engine/reports.py)."""
from DNSD.config import add_config_flags, data_and_device_keys, stated_values
from DNSD.engine.figures import check_figure_path, draw_confusion, write_figure
from DNSD.engine.reports import checkpoint_report, format_report
from DNSD.engine.run_folder import checkpoint_in


def add_arguments(parser):
    parser.add_argument("--checkpoint", metavar="PATH", required=True,
                        help="a run folder (its best checkpoint) or a .pdckpt file")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="the split to test (default: test)")
    parser.add_argument("--plot-file", metavar="PATH", help="also draw the confusion matrix there (.png, .pdf, .svg)")
    add_config_flags(parser, data_and_device_keys)


def execute(args):
    if args.plot_file:
        check_figure_path(args.plot_file)  # before the evaluation, not after it
    stated = stated_values(args.config, args, args.override)
    result = checkpoint_report(checkpoint_in(args.checkpoint), args.split, stated)
    print(format_report(result, args.split, result["report"]))
    print(f"report written to {result['report']}")
    if args.plot_file:
        print(f"confusion matrix drawn in {write_figure(draw_confusion(result), args.plot_file)}")
