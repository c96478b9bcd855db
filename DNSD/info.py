"""`--mode info`: what DNSD runs on, for a bug report, and the deep check of the device a run would use; a machine
whose GPU Paddle cannot use, or whose check fails, ends in one error line (exit 2), which is how
scripts/setup_env.sh checks a GPU install. `--compare RUN_A RUN_B`: what differs between two runs.

`--check-numerics`: a few training steps of a small stochastic-depth ResNet on synthetic images with the recipe's
optimiser; their digests, against those shipped in reference_bits.json, say whether this machine computes the bits
of the machines recorded there (docs/reproducing.md)."""
import hashlib
import json
import os
import sys

import numpy as np
import paddle
import paddle.nn.functional as F

from DNSD.changes import device_keys
from DNSD.config import add_config_flags, build_config, stated_values
from DNSD.errors import InputError, NumericsDiffer
from DNSD.models.resnet import CifarResNet
from DNSD.runs.folder import CONFIG
from DNSD.runs.manifest import run_differences
from DNSD.system.device import cpu_text, describe_cpu, describe_device, environment_report, select_run_device
from DNSD.system.device_check import check_device
from DNSD.system.numerics import numerics_in_effect
from DNSD.training.optimizer import build_optimizer

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_bits.json")
SEED, DEPTH, STEPS, BATCH_SIZE = 0, 14, 4, 32


def step_digests():
    """The sha256 of the loss, weights and statistics after each step: the first that differs between two machines
    says where their arithmetic parted."""
    paddle.seed(SEED)
    model = CifarResNet(DEPTH, survival_last=0.5)
    optimizer, _ = build_optimizer(build_config({}).train, model)
    rng = np.random.default_rng(SEED)
    images = paddle.to_tensor(rng.standard_normal((STEPS, BATCH_SIZE, 3, 32, 32), dtype=np.float32))
    labels = paddle.to_tensor(rng.integers(0, 10, (STEPS, BATCH_SIZE)))
    model.train()
    digests = []
    for step in range(STEPS):
        model.begin_step(SEED, 1, step, BATCH_SIZE)
        loss = F.cross_entropy(model(images[step]), labels[step])
        loss.backward()
        optimizer.step()
        optimizer.clear_grad(set_to_zero=True)
        digest = hashlib.sha256(loss.numpy().tobytes())
        for name, value in sorted(model.state_dict().items()):
            digest.update(name.encode() + value.numpy().tobytes())
        digests.append(digest.hexdigest())
    return digests


def reference(numerics):
    """The shipped reference of a CPU numerics setting: {"digests", "computed_on": [machine, ...]}, or None."""
    with open(REFERENCE) as stream:
        return json.load(stream)["references"].get(numerics)


def compare_bits(digests, known):
    """(agrees, one line): whether digests are the reference's, or from which step they differ."""
    machines = "; ".join(known["computed_on"])
    if digests == known["digests"]:
        return True, f"this machine computes the reference bits, as {machines}"
    step = next(index for index, (a, b) in enumerate(zip(digests, known["digests"])) if a != b) + 1
    return False, (f"this machine's bits differ from the reference from step {step} of {STEPS} (the reference: "
                   f"{machines}); its runs will not repeat theirs bit for bit")


def add_arguments(parser):
    parser.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="what differs between two runs' configs and manifests (environment.json), most "
                             "important first: the recipe, the data, the software, the hardware")
    parser.add_argument("--check-numerics", action="store_true",
                        help="train a small network for a few steps on synthetic images and say whether this CPU "
                             "computes the bits of the reference machines (seconds, no download); exit 4 where not")
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
    if device == "cpu":
        print(f"{'CPU numerics:':<22}{describe_numerics(numerics_in_effect())}")
    for name, what in check_device(device):
        print(f"{'check ' + name + ':':<22}ok ({what})")
    if args.check_numerics:
        check_numerics(device)


PORTABLE_FIX = {"native": "leave out --cpu-numerics native",
                "custom": "unset MKL_DEBUG_CPU_TYPE and MKL_CBWR (portable numerics set them), or use a CPU with "
                          "AVX2 and FMA"}


def describe_numerics(in_effect):
    variables = ", ".join(f"{key}={value}" for key, value in in_effect.items() if key != "cpu_numerics" and value)
    return f"{in_effect['cpu_numerics']} ({variables or 'no MKL variable set'})"


def check_numerics(device):
    if device != "cpu":
        raise InputError("--check-numerics checks the CPU's numerics; add --device cpu")
    in_effect = numerics_in_effect()
    known = reference(in_effect["cpu_numerics"])
    if known is None:
        raise InputError(f"DNSD ships the reference bits of portable and onednn CPU numerics only, and this process "
                         f"computes with {describe_numerics(in_effect)}; {PORTABLE_FIX[in_effect['cpu_numerics']]}")
    digests = step_digests()
    agrees, line = compare_bits(digests, known)
    print(f"{'check numerics:':<22}{line}")
    print(f"{'':<22}this machine: {cpu_text(describe_cpu())}, {describe_numerics(in_effect)}")
    print(f"{'':<22}digest after step {STEPS}: {digests[-1]}")
    if not agrees:
        raise NumericsDiffer("this CPU computes other bits than the reference machines (docs/reproducing.md)")
