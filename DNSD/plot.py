"""`dnsd plot`: the curves of runs, or the paper's Figure 3, as a PNG, PDF or SVG file (engine/figures.py)."""
from DNSD.engine.figures import plot_runs


def add_arguments(parser):
    parser.add_argument("--runs", nargs="+", metavar="RUN_DIR", required=True,
                        help="run folders, --seeds folders or folders of runs at any depth, e.g. runs")
    parser.add_argument("--plot-file", metavar="PATH", default="curves.png",
                        help="the figure to write, .png, .pdf or .svg, replacing one that exists "
                             "(default: %(default)s)")
    parser.add_argument("--figure", choices=("curves", "test-error"), default="curves",
                        help="curves: training loss, validation error and active blocks, the seeds of a configuration "
                             "in one colour; test-error: the paper's Figure 3, the mean test error per configuration "
                             "with the runs' spread as a band (default: curves)")


def execute(args):
    print(f"wrote {plot_runs(args.runs, args.plot_file, args.figure)}")
