"""`--mode info`: what DNSD runs on, for a bug report, and the deep check of the device a run would use; a machine
whose GPU Paddle cannot use, or whose check fails, ends in one error line (exit 2), which is how
scripts/setup_env.sh checks a GPU install."""
import sys

from DNSD.config import add_config_flags, build_config, device_keys, stated_values
from DNSD.engine.device import describe_device, environment_report, select_run_device
from DNSD.engine.device_check import check_device


def add_arguments(parser):
    add_config_flags(parser, device_keys)


def execute(args):
    config = build_config(stated_values(args.config, args, args.override))
    for label, value in environment_report():
        print(f"{label + ':':<22}{value}")
    sys.stdout.flush()
    device = select_run_device(config.run)
    print(f"{'device (' + config.run.device + '):':<22}{describe_device(device)}")
    for name, what in check_device(device):
        print(f"{'check ' + name + ':':<22}ok ({what})")
