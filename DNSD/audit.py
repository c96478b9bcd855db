"""`dnsd audit RUN_DIR`: check a run's files against its chain of custody, re-train positions of it from its kept
checkpoints in a temporary folder, recompute what it reports, and say what was covered (audits/); the run folder is
only read."""
import secrets

from DNSD.audits.audit import audit
from DNSD.changes import data_and_device_keys
from DNSD.config import add_config_flags, stated_values


def add_arguments(parser):
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a training run")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--epoch", type=int, metavar="K",
                       help="the epoch to re-train (default: the run's first epoch and the one best.pdckpt holds, "
                            "whose start must be kept: a checkpoint of epoch K-1, or the initialisation for epoch 1)")
    which.add_argument("--all", action="store_true",
                       help="every epoch whose start is kept, and best.pdckpt and last.pdckpt where saved within an "
                            "epoch, one after another")
    which.add_argument("--sample", type=int, metavar="N", help="N of the auditable epochs, drawn at random")
    parser.add_argument("--sample-seed", type=int, metavar="S",
                        help="the seed of --sample's draw, to repeat an audit (default: a new one, printed)")
    add_config_flags(parser, data_and_device_keys)


def execute(args):
    seed = args.sample_seed if args.sample_seed is not None else secrets.randbelow(2**32)
    audit(args.run_dir, args.epoch, args.all, stated_values(args.config, args, args.override), args.sample, seed)
