"""`dnsd audit RUN_DIR`: re-train an epoch of a run from its kept checkpoint, in a temporary folder, and check that
the weights are the ones the run recorded (reporting/audit.py); the run folder is only read."""
from DNSD.changes import data_and_device_keys
from DNSD.config import add_config_flags, stated_values
from DNSD.reporting.audit import audit


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a training run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--epoch", type=int, metavar="K",
                       help="the epoch to re-train (default: the last one whose start is kept: a checkpoint of epoch "
                            "K-1, or the initialisation for epoch 1)")
    which.add_argument("--all", action="store_true", help="every epoch whose start is kept, one after another")
    add_config_flags(parser, data_and_device_keys)


def execute(args):
    audit(args.run_dir, args.epoch, args.all, stated_values(args.config, args, args.override))
