"""`dnsd plot`: the curves of runs, the paper's Figure 3 or Figure 7, or a sweep's Figure 8 (either panel), as a PNG,
PDF or SVG file (reporting/figures.py)."""
from DNSD.reporting.figures import FIGURE7_TENSOR, plot_runs


def add_arguments(parser):
    parser.add_argument("--runs", nargs="+", metavar="RUN_DIR", required=True,
                        help="run folders, --seeds folders or folders of runs at any depth, e.g. runs")
    parser.add_argument("--plot-file", metavar="PATH", default="curves.png",
                        help="the figure to write, .png, .pdf or .svg, replacing one that exists "
                             "(default: %(default)s)")
    parser.add_argument("--figure", choices=("curves", "test-error", "gradients", "survival", "sweep", "heatmap"),
                        default="curves",
                        help="curves: training loss, validation error and active blocks, the seeds of a configuration "
                             "in one colour; test-error: the paper's Figure 3, the mean test error per configuration "
                             "with the runs' spread as a band; gradients: the paper's Figure 7, the mean absolute "
                             "gradient of the first convolution per epoch; survival: the paper's Figure 8, a sweep's "
                             "test error against p_L, a line per survival rule; sweep: a sweep's test error against "
                             "--x; heatmap: Figure 8's right panel, a two-key sweep's test error over --x and --y "
                             "(default: curves)")
    parser.add_argument("--x", metavar="KEY",
                        help="--figure sweep: the swept key of the x axis, e.g. survival_last; --figure heatmap: its "
                             "columns (default survival_last)")
    parser.add_argument("--y", metavar="KEY", help="--figure heatmap: the swept key of its rows (default depth)")
    parser.add_argument("--labels", nargs="+", metavar="LABEL",
                        help="--figure curves and test-error: the legend's name of each configuration, in the order "
                             "of the legend without it (default: the run folders' names)")
    parser.add_argument("--tensor", metavar="NAME", default=FIGURE7_TENSOR,
                        help="--figure gradients: the tensor drawn, as metrics.jsonl names it, e.g. stage1.weight "
                             "(default: %(default)s, the first convolution)")


def execute(args):
    print(f"wrote {plot_runs(args.runs, args.plot_file, args.figure, args.x, args.y, args.tensor, args.labels)}")
