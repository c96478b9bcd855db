"""The acceptance run of a GPU install (bash scripts/check_gpu.sh): the deep device check, a ResNet-110 step at each
precision with its speed, the batches the device trains on, deterministic runs, an exact resume and, with two GPUs, a
two-process run. One line per
check, `check_gpu: N of M checks passed`, and the results as JSON for a bug report. --device cpu runs what needs no
GPU."""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the synthetic archive the test suite writes

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from benchmark import training_step  # noqa: E402
from cifar_archive import synthetic_batches, write_archive  # noqa: E402
from DNSD.config import build_config  # noqa: E402
from DNSD.datasets import load_splits  # noqa: E402
from DNSD.datasets.pipeline import TrainingBatches  # noqa: E402
from DNSD.models import build_model  # noqa: E402
from DNSD.runs.checkpoint import read_state, restore_model  # noqa: E402
from DNSD.system.device import select_device  # noqa: E402
from DNSD.training.loop import Trainer  # noqa: E402
from DNSD.training.ranks import weights_digest  # noqa: E402


class Failed(Exception):
    """A check that did not pass, with what it saw."""


def dnsd(*args, launcher=()):
    command = [sys.executable, *(launcher or ["-m", "DNSD"]), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)


def succeeded(result):
    if result.returncode != 0:
        raise Failed((result.stderr or result.stdout).strip().splitlines()[-1] if (result.stderr or result.stdout)
                     else f"exit code {result.returncode}")
    return result


def digest(run_dir):
    path = os.path.join(run_dir, "last.pdckpt")
    return weights_digest(restore_model(read_state(path), path))


def check_info(context):
    result = dnsd("--mode", "info", "--device", context.device)
    context.results["info"] = result.stdout.splitlines()
    succeeded(result)
    return f"{sum(line.startswith('check ') for line in result.stdout.splitlines())} parts of the device checked"


def check_step(context, precision):
    select_device(context.device)
    amp = "off" if precision == "float32" else precision
    step, trainer, _ = training_step(argparse.Namespace(depth=110, batch_size=128), 0.5, amp)
    step()  # the first step builds the kernels
    started = time.perf_counter()
    for _ in range(context.steps):
        step()
    trainer.read_steps()  # stops the run, as training would, on a non-finite loss
    seconds = (time.perf_counter() - started) / context.steps
    context.results.setdefault("steps_per_second", {})[precision] = 1 / seconds
    return f"loss {trainer.meter.loss:.3f}, {1 / seconds:.2f} steps/s at batch 128"


def check_batches(context):
    """An epoch as training runs it, pinned batches copied asynchronously: the device's copy of each batch, taken
    behind its copy in the device's queue, must equal the host's (a pinned batch freed before its copy ran could
    be overwritten by the next)."""
    select_device(context.device)
    config = build_config({"data.data_file": context.archive, "data.val_size": 40, "model.depth": 8,
                           "train.batch_size": 16, "data.pin_memory": True, "run.seed": 7})
    data = load_splits(config)
    trainer = Trainer(config, os.devnull, data, build_model(config.model, data.num_classes))
    trainer.estimated = True  # no estimate line among the checks' lines
    seen, train_step = [], trainer.train_step
    trainer.train_step = lambda images, *args: seen.append(images.clone()) or train_step(images, *args)
    trainer.train_epoch([], None)
    expected = TrainingBatches(data, 16, config.data.augment, 7, 1)
    differ = [index for index, images in enumerate(seen) if not np.array_equal(images.numpy(), expected[index][0])]
    if differ or len(seen) != len(expected):
        raise Failed(f"{len(differ)} of {len(seen)} batches on the device differ from the host's: steps {differ[:5]}")
    return f"the device's {len(seen)} batches of an epoch equal the host's"


def run_arguments(context, run_dir, *extra):
    return ["--data-file", context.archive, "--output-dir", run_dir, "--device", context.device,
            "--depth", str(context.depth), "--epochs", "2", "--batch-size", "32", "--val-size", "40", "--seed", "7",
            *extra]


def check_deterministic(context):
    digests = []
    for run_dir in (context.folder("deterministic-1"), context.folder("deterministic-2")):
        succeeded(dnsd(*run_arguments(context, run_dir, "--deterministic")))
        digests.append(digest(run_dir))
    if digests[0] != digests[1]:
        raise Failed(f"two runs from seed 7 ended with different weights ({digests[0][:12]}, {digests[1][:12]})")
    context.reference = digests[0]
    return f"two runs from seed 7 ended with weights sha256 {digests[0][:12]}"


def check_resume(context):
    if context.reference is None:
        raise Failed("it compares with the deterministic runs, which failed")
    run_dir = context.folder("resumed")
    command = [sys.executable, "-m", "DNSD", *run_arguments(context, run_dir, "--deterministic",
                                                           "--checkpoint-every-iterations", "1")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not os.path.exists(os.path.join(run_dir, "last.pdckpt")) and process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise Failed("no checkpoint within 10 minutes")
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    if process.wait(timeout=600) == 0:
        raise Failed("the run ended before it could be stopped")
    succeeded(dnsd("--resume", run_dir))
    if digest(run_dir) != context.reference:
        raise Failed("the resumed run's weights differ from the uninterrupted run's")
    return "stopped by SIGINT, resumed, the uninterrupted run's weights"


def check_two_ranks(context):
    log_dir, run_dir = context.folder("launch-log"), context.folder("two-ranks")
    devices = ["--devices", "0,1"] if context.device == "gpu" else ["--nproc_per_node", "2"]
    succeeded(dnsd(*run_arguments(context, run_dir), launcher=["-m", "paddle.distributed.launch", *devices,
                                                               "--log_dir", log_dir, os.path.join("DNSD", "main.py")]))
    ends = [re.findall(r"ends with weights sha256 (\w+)", Path(log_dir, f"workerlog.{rank}").read_text())
            for rank in range(2)]
    if ends[0] != ends[1] or ends[0] != [digest(run_dir)]:
        raise Failed(f"the ranks ended with different weights: {ends}")
    return "both ranks drew the same gates and ended with rank 0's weights"


class Context:
    def __init__(self, device, steps, work):
        self.device, self.steps, self.work, self.results = device, steps, work, {}
        self.depth = 110 if device == "gpu" else 8
        self.archive = write_archive(os.path.join(work, "cifar.tar.gz"), synthetic_batches(64, learnable=True))
        self.reference = None

    def folder(self, name):
        return os.path.join(self.work, name)


def checks(device, gpus):
    """(name, function or the reason it does not run here)."""
    needs_gpu = "skipped: needs a GPU"
    bfloat16 = needs_gpu if device == "cpu" else "skipped: needs compute capability 8.0" if (
        paddle.device.cuda.get_device_capability()[0] < 8) else (lambda c: check_step(c, "bfloat16"))
    return [("device check", check_info),
            ("ResNet-110 step, float32", lambda c: check_step(c, "float32")),
            ("ResNet-110 step, float16", (lambda c: check_step(c, "float16")) if device == "gpu" else needs_gpu),
            ("ResNet-110 step, bfloat16", bfloat16),
            ("batches on the device", check_batches),
            ("deterministic runs", check_deterministic),
            ("exact resume", check_resume),
            ("two processes", check_two_ranks if device == "cpu" or gpus >= 2 else "skipped: needs two GPUs")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu", help="the device to check (default gpu)")
    parser.add_argument("--output", default="check_gpu.json", help="the results file (default %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="timed ResNet-110 steps per precision (default 3)")
    args = parser.parse_args(argv)
    gpus = paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0
    passed, total, rows = 0, 0, []
    with tempfile.TemporaryDirectory() as work:
        context = Context(args.device, args.steps, work)
        for name, check in checks(args.device, gpus):
            started = time.monotonic()
            if isinstance(check, str):
                outcome, detail = "skip", check
            else:
                total += 1
                try:
                    outcome, detail = "ok", check(context)
                    passed += 1
                except Exception as error:  # a failed check is a result to report, whatever raised it
                    outcome, detail = "FAILED", " ".join(str(error).split()) or type(error).__name__
            rows.append({"check": name, "outcome": outcome, "detail": detail,
                         "seconds": round(time.monotonic() - started, 1)})
            print(f"{outcome}: {name}: {detail}", flush=True)
    print(f"check_gpu: {passed} of {total} checks passed")
    with open(args.output, "w") as stream:
        json.dump({"device": args.device, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "passed": passed,
                   "total": total, "checks": rows, **context.results}, stream, indent=1)
    print(f"check_gpu: results written to {args.output}")
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
