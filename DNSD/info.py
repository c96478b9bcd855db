"""`--mode info`: what DNSD runs on, for a bug report, and the deep check of the device a run would use; a machine
whose GPU Paddle cannot use, or whose check fails, ends in one error line (exit 2), which is how
scripts/setup_env.sh checks a GPU install. `--compare RUN_A RUN_B`: what differs between two runs."""
import os
import sys

from DNSD.changes import device_keys
from DNSD.config import add_config_flags, build_config, stated_values
from DNSD.errors import InputError
from DNSD.runs.folder import CONFIG
from DNSD.runs.manifest import run_differences
from DNSD.system.device import describe_device, environment_report, select_run_device
from DNSD.system.device_check import check_device


def add_arguments(parser):
    parser.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="what differs between two runs' configs and manifests (environment.json), most "
                             "important first: the recipe, the data, the software, the hardware")
    add_config_flags(parser, device_keys)


def compare(first, second):
    for folder in (first, second):
        if not os.path.isfile(os.path.join(folder, CONFIG)):
            raise InputError(f"{folder} holds no run ({CONFIG}); pass the output folders of two training runs")
    rows = run_differences(first, second)
    if not rows:
        print(f"{first} and {second}: the same config and environment")
        return
    print(f"{first} and {second} differ in {len(rows)} values, most important first ({first}'s -> {second}'s):")
    for kind, key, value_a, value_b in rows:
        print(f"  {kind:<10}{key}: {value_a!r} -> {value_b!r}")


def execute(args):
    if args.compare:
        return compare(*args.compare)
    config = build_config(stated_values(args.config, args, args.override))
    for label, value in environment_report():
        print(f"{label + ':':<22}{value}")
    sys.stdout.flush()
    device = select_run_device(config.run)
    print(f"{'device (' + config.run.device + '):':<22}{describe_device(device)}")
    for name, what in check_device(device):
        print(f"{'check ' + name + ':':<22}ok ({what})")
