"""`dnsd summary`: runs tabulated as the paper's table, mean ± std over seeds, and --compare (reporting/tables.py)."""
from DNSD.reporting.tables import write_summary


def add_arguments(parser):
    parser.add_argument("--runs", nargs="+", metavar="RUN_DIR", required=True,
                        help="run folders, --seeds folders or folders of runs at any depth, e.g. runs")
    parser.add_argument("--summary-file", metavar="PATH.md",
                        help="the Markdown table to write, the CSV beside it (default: summary.md in the folder that "
                             "holds the runs)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="add B's test error minus A's with a 95 %% confidence interval (Welch's t-test); A and B "
                             "are configurations or row numbers")


def execute(args):
    table, path = write_summary(args.runs, args.summary_file, args.compare)
    print(f"{table}written to {path} and {path[:-len('.md')]}.csv")
