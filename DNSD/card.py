"""`dnsd card FOLDER`: MODEL_CARD.md beside a run, a --seeds folder or a sweep's folder, with its curves figure
(reporting/card.py)."""
from DNSD.reporting.card import write_card


def add_arguments(parser):
    parser.add_argument("folder", metavar="FOLDER", help="a run folder, a --seeds folder or a sweep's folder")


def execute(args):
    print(f"wrote {write_card(args.folder)}")
