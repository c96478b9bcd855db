"""Measure DNSD's speed on this machine: training steps with and without stochastic depth, the data pipeline,
evaluation throughput and peak memory. Medians and spreads over repeats, after warm-up; results as JSON.

    python scripts/benchmark.py                              # shallow defaults: a few minutes on a CPU
    python scripts/benchmark.py --depth 110 --steps 3        # the paper's network
    python scripts/benchmark.py --compare-cpu-settings       # each CPU setting in its own process
    python scripts/benchmark.py --sections svhn              # reading SVHN: peak memory and time, official sizes
    python scripts/benchmark.py --sections inference --depth 110   # each engine on an exported model
    python scripts/benchmark.py --sections audit --data-file cifar-10-mini.tar.gz   # dnsd audit against an epoch
    python scripts/benchmark.py --sections convolution --depth 110   # Paddle's and DNSD's CPU operators, PyTorch eager
"""
import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from DNSD.config import build_config  # noqa: E402
from DNSD.datasets import Splits  # noqa: E402
from DNSD.datasets.pipeline import Dataset, Normalizer, TrainingBatches, prefetched  # noqa: E402
from DNSD.models import build_model  # noqa: E402
from DNSD.models.operators import use_cpu_operators  # noqa: E402
from DNSD.schema import ModelConfig, fields_by_key  # noqa: E402
from DNSD.system.device import select_device, thread_count  # noqa: E402
from DNSD.system.numerics import PORTABLE_ENVIRONMENT, numerics_in_effect  # noqa: E402
from DNSD.training.loop import Trainer  # noqa: E402
from DNSD.training.meters import READ_EVERY  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=20, help="ResNet depth 6n+2 (default 20; the paper: 110)")
    parser.add_argument("--batch-size", type=int, default=128, help="mini-batch size (default 128)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per repeat (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each measurement (default 3)")
    parser.add_argument("--data-batches", type=int, default=40, help="batches per data-pipeline repeat (default 40)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto", help="device (default auto)")
    threads, numerics = (fields_by_key()[f"run.{key}"][0] for key in ("cpu_threads", "cpu_numerics"))
    parser.add_argument("--cpu-threads", type=int, default=threads.default,
                        help=f"CPU threads for Paddle, 0: every core (default {threads.default}, DNSD's default)")
    parser.add_argument("--cpu-numerics", choices=numerics.metadata["choices"], default=numerics.default,
                        help=f"run.cpu_numerics (default {numerics.default}, DNSD's default)")
    parser.add_argument("--prefetch", type=int, default=2, help="batches the loader prepares ahead (default 2)")
    parser.add_argument("--sections", default="train,data,eval",
                        help="comma-separated subset of train, data, eval, host, svhn, inference, audit, convolution "
                             "(default: train,data,eval); train also times the gradient magnitudes a step records; "
                             "convolution: CPU and wall time per stochastic-depth training step with Paddle's "
                             "operators, with DNSD's CPU operators (--cpu-numerics onednn) and, where torch is "
                             "installed, of PyTorch eager on the same network, gates and batch, their steps "
                             "interleaved; audit: a real run of --depth on --data-file keeping every checkpoint, the "
                             "time of dnsd audit of its last epoch against the run's epoch, and the per-epoch weight "
                             "digest's share of an epoch; inference: an exported model's images per second with each "
                             "engine (dygraph, Paddle Inference with and without oneDNN, ONNX Runtime), each but "
                             "dygraph in a process of its own, same model, batch and threads; host: the host's cost "
                             "of a ResNet-110 step, on 2 images of 8x8 pixels on the CPU; svhn: the peak memory and "
                             "time of reading SVHN and splitting it as a run does, from synthetic files of the "
                             "official sizes")
    parser.add_argument("--data-file", help="audit section: the CIFAR-10 archive of the run it trains and audits")
    parser.add_argument("--val-size", type=int, default=500, help="audit section: validation images (default 500)")
    parser.add_argument("--svhn-scale", type=float, default=1.0,
                        help="svhn section: the synthetic files' share of the official sizes (73,257 train, 531,131 "
                             "extra, 26,032 test images; default 1: 1.9 GB of files in a temporary folder)")
    parser.add_argument("--host-variants", default="eager",
                        help="host section: comma-separated implementations to compare: eager (DNSD's step), "
                             "compiled-branches (each residual branch through paddle.jit.to_static) (default eager)")
    parser.add_argument("--compare-cpu-settings", action="store_true",
                        help="time training steps under each CPU setting (threads, MKL's AVX2 code, oneDNN), each "
                             "in a fresh process")
    parser.add_argument("--profile", action="store_true",
                        help="print Paddle's profile of a few constant-depth training steps (time per operator)")
    parser.add_argument("--output", default="benchmark-results.json", help="results file (default %(default)s)")
    parser.add_argument("--engine-timeout", type=int, default=3600,
                        help="seconds the inference section waits for an engine's process; one that hangs (Paddle "
                             "Inference with oneDNN has crashed and hung on these machines) is reported as failed")
    parser.add_argument("--time-engine", nargs=3, metavar=("ENGINE", "ONEDNN", "FOLDER"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def summarise(samples):
    """Median and spread of a list of measurements."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "samples": samples}


def training_step(args, survival_last, amp="off"):
    """The real training step, Trainer.train_step (the step's gates, forward, backward, SGD, its all-reduce and
    bookkeeping, which read the loss back from the device), of a fresh model on a fixed random batch."""
    paddle.seed(0)
    config = build_config({"model.depth": args.depth, "model.survival_last": survival_last,
                           "train.batch_size": args.batch_size, "train.amp": amp})
    model = build_model(config.model, num_classes=10)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(args.batch_size, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.batch_size)
    batch = Dataset(pixels, labels)
    trainer = Trainer(config, os.devnull, Splits(batch, batch, batch, Normalizer.fit(pixels)), model)
    model.train()
    images, labels = paddle.to_tensor(trainer.data.normalizer(pixels)), paddle.to_tensor(labels)

    return trainer_step(trainer, images, labels, args.batch_size), trainer, model.num_blocks


def trainer_step(trainer, images, labels, batch_size):
    """A step as the training loop takes it: Trainer.train_step, and the read of the device's results every
    READ_EVERY steps."""
    def step():
        trainer.train_step(images, labels, batch_size)
        if trainer.step % READ_EVERY == 0:
            trainer.read_steps()

    return step


def time_gradient_magnitudes(args, calls=50):
    """Seconds a training step spends on the gradient magnitudes it records (the paper's Figure 7): the reductions of
    the watched tensors' gradients, which train_step runs after the backward pass, timed on a real step's tensors."""
    step, trainer, _ = training_step(args, 0.5)
    for _ in range(max(1, args.warmup)):
        step()
    samples = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(calls):
            paddle.stack([parameter.grad.abs().mean() for _, parameter in trainer.watched]).numpy()
        samples.append((time.perf_counter() - started) / calls)
    return {**summarise(samples), "tensors": [name for name, _ in trainer.watched]}


def time_training_steps(args):
    """Seconds per step at constant depth and with stochastic depth; their repeats alternate, so that a drift in
    the machine's speed affects both alike."""
    runs = {"constant_depth": training_step(args, 1.0), "stochastic_depth": training_step(args, 0.5)}
    samples = {name: [] for name in runs}
    for step, _, _ in runs.values():
        for _ in range(args.warmup):
            step()
    for _ in range(args.repeats):
        for name, (step, _, _) in runs.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            samples[name].append((time.perf_counter() - started) / args.steps)
    for _, trainer, _ in runs.values():
        trainer.read_steps()  # the steps since the last read, into the meter
    return {name: {**summarise(samples[name]), "blocks": blocks,
                   "mean_active_blocks": trainer.meter.active_blocks / trainer.meter.steps}
            for name, (_, trainer, blocks) in runs.items()}


HOST_DEPTH, HOST_BATCH, HOST_PIXELS = 110, 2, 8  # compute made negligible: what is left is the host's work


class PhaseTimer:
    """Seconds spent in the forward pass, the backward pass and the optimiser (its step and the zeroing of the
    gradients) of a Trainer's real step, measured by wrapping those calls."""

    PHASES = ("forward", "backward", "optimiser")

    def __init__(self, trainer):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.wrap(trainer.network, "forward", "forward")
        self.wrap(trainer.optimizer, "step", "optimiser")
        self.wrap(trainer.optimizer, "clear_grad", "optimiser")
        self.backward = paddle.Tensor.backward

    def wrap(self, owner, attribute, phase):
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - started
        setattr(owner, attribute, timed)

    def __enter__(self):
        real, seconds = self.backward, self.seconds

        def timed_backward(tensor, *args, **kwargs):
            started = time.perf_counter()
            try:
                return real(tensor, *args, **kwargs)
            finally:
                seconds["backward"] += time.perf_counter() - started
        paddle.Tensor.backward = timed_backward
        return self

    def __exit__(self, *exc):
        paddle.Tensor.backward = self.backward


def host_step(survival_last, variant):
    """A Trainer of ResNet-110 and its real step on a fixed batch of 2 images of 8x8 pixels."""
    paddle.seed(0)
    config = build_config({"model.depth": HOST_DEPTH, "model.survival_last": survival_last,
                           "train.batch_size": HOST_BATCH})
    model = build_model(config.model, num_classes=10)
    if variant == "compiled-branches":
        for block in model.blocks:
            block.branch = paddle.jit.to_static(block.branch, full_graph=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(HOST_BATCH, 3, 32, 32), dtype=np.uint8)
    batch = Dataset(pixels, rng.integers(0, 10, size=HOST_BATCH))
    trainer = Trainer(config, os.devnull, Splits(batch, batch, batch, Normalizer.fit(pixels)), model)
    model.train()
    images = paddle.to_tensor(rng.normal(size=(HOST_BATCH, 3, HOST_PIXELS, HOST_PIXELS)).astype(np.float32))
    labels = paddle.to_tensor(batch.labels)
    return trainer, trainer_step(trainer, images, labels, HOST_BATCH)


def time_host_cost(args):
    """Median milliseconds per step and per phase, for each variant, with and without stochastic depth; the repeats
    of the variants alternate, so that a drift in the machine's speed affects all alike."""
    runs = {}
    for variant in args.host_variants.split(","):
        for name, survival_last in (("stochastic depth", 0.5), ("constant depth", 1.0)):
            trainer, step = host_step(survival_last, variant)
            runs[f"{variant}, {name}"] = (trainer, step, PhaseTimer(trainer))
    samples = {key: {"step": [], **{phase: [] for phase in PhaseTimer.PHASES}} for key in runs}
    for _, step, _ in runs.values():
        for _ in range(args.warmup):
            step()
    for _ in range(args.repeats):
        for key, (_, step, timer) in runs.items():
            timer.seconds = dict.fromkeys(PhaseTimer.PHASES, 0.0)
            with timer:
                started = time.perf_counter()
                for _ in range(args.steps):
                    step()
                elapsed = time.perf_counter() - started
            samples[key]["step"].append(1000 * elapsed / args.steps)
            for phase, seconds in timer.seconds.items():
                samples[key][phase].append(1000 * seconds / args.steps)
    results = {}
    for key, measured in samples.items():
        result = {part: statistics.median(values) for part, values in measured.items()}
        result["rest"] = result["step"] - sum(result[phase] for phase in PhaseTimer.PHASES)
        result["step_samples"] = measured["step"]
        results[key] = result
        print(f"host cost {key}: {result['step']:.1f} ms/step (forward {result['forward']:.1f}, backward "
              f"{result['backward']:.1f}, optimiser {result['optimiser']:.1f}, rest {result['rest']:.1f})",
              file=sys.stderr, flush=True)
    return results


def time_evaluation(args):
    paddle.seed(0)
    model = build_model(ModelConfig(depth=args.depth), num_classes=10)
    model.eval()
    images = paddle.to_tensor(np.random.default_rng(0).normal(size=(args.batch_size, 3, 32, 32)).astype(np.float32))
    samples = []
    with paddle.no_grad():
        for _ in range(args.warmup):
            model(images).numpy()
        for _ in range(args.repeats):
            started = time.perf_counter()
            for _ in range(args.steps):
                model(images).numpy()
            samples.append(args.steps * args.batch_size / (time.perf_counter() - started))
    return summarise(samples)


def images_per_second(run, args, count):
    """Median images per second of run() on count images, over --repeats of --steps calls, after --warmup."""
    for _ in range(args.warmup):
        run()
    samples = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(args.steps):
            run()
        samples.append(args.steps * count / (time.perf_counter() - started))
    return summarise(samples)


def time_engine(args, gpu):
    """In a process of its own (the inference section): one engine on the exported model; prints JSON."""
    from DNSD.inference.runtimes import RUNNERS

    name, onednn, folder = args.time_engine
    runner = RUNNERS[name](os.path.join(folder, "model"), thread_count(args.cpu_threads), gpu, json.loads(onednn))
    images, expected = np.load(os.path.join(folder, "images.npy")), np.load(os.path.join(folder, "expected.npy"))
    speed = images_per_second(lambda: runner(images), args, len(images))
    print(json.dumps({**speed, "largest_difference": float(np.abs(runner(images) - expected).max())}))


def time_inference(args):
    """dygraph (a checkpoint's evaluation path), Paddle Inference with and without oneDNN, and ONNX Runtime on one
    exported ResNet, same batch and threads; an engine that crashes is reported as such."""
    from DNSD.inference.export import InferenceModel, to_onnx
    from DNSD.training.evaluation import probabilities

    paddle.seed(0)
    model = build_model(ModelConfig(depth=args.depth), num_classes=10)
    model.eval()
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size, 32, 32, 3), dtype=np.uint8)
    normalizer = Normalizer.fit(images.transpose(0, 3, 1, 2))
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        inference = InferenceModel(model, normalizer)
        inference.eval()
        paddle.jit.save(inference, os.path.join(folder, "model"),
                        input_spec=[paddle.static.InputSpec([None, 32, 32, 3], "uint8", "images")])
        to_onnx(os.path.join(folder, "model"))

        def dygraph():
            return probabilities(model, images.transpose(0, 3, 1, 2), len(images), normalizer)

        np.save(os.path.join(folder, "images.npy"), images)
        np.save(os.path.join(folder, "expected.npy"), dygraph())
        results["dygraph"] = {**images_per_second(dygraph, args, len(images)), "largest_difference": 0.0}
        for label, engine, onednn in (("paddle-inference", "paddle-inference", False),
                                      ("paddle-inference-onednn", "paddle-inference", True),
                                      ("onnxruntime", "onnxruntime", None)):
            command = [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--time-engine", engine,
                       json.dumps(onednn), folder, *(f"--{key.replace('_', '-')}={getattr(args, key)}" for key in
                         ("steps", "warmup", "repeats", "cpu_threads", "device"))]
            try:
                child = subprocess.run(command, capture_output=True, text=True, timeout=args.engine_timeout)
            except subprocess.TimeoutExpired:
                results[label] = {"failed": f"no answer within {args.engine_timeout} s"}
                continue
            lines = child.stdout.strip().splitlines()
            results[label] = json.loads(lines[-1]) if child.returncode == 0 else {
                "failed": ((child.stderr.strip().splitlines() or [""])[-1] or f"exit code {child.returncode}")[:200]}
    for label, measured in results.items():
        if "failed" in measured:
            print(f"inference {label}: failed ({measured['failed']})", file=sys.stderr)
            continue
        ratio = measured["median"] / results["dygraph"]["median"]
        print(f"inference {label}: {measured['median']:.1f} images/s ({ratio:.2f} x dygraph), largest difference "
              f"from dygraph {measured['largest_difference']:.1e}", file=sys.stderr)
    return results


def time_convolutions(args):
    """CPU and wall seconds per training step (medians over repeats of --steps steps) of the same stochastic-depth
    ResNet with Paddle's operators, DNSD's CPU operators and PyTorch eager, each taking its steps in turn."""
    threads = thread_count(args.cpu_threads)
    steps = {}
    for name in ("paddle", "onednn"):
        use_cpu_operators(name == "onednn", threads)
        steps[name], trainer, _ = training_step(args, 0.5)
    try:
        import torch_peer
    except ImportError:  # PyTorch is optional: pip install torch (the CPU build)
        torch_peer = None
    if torch_peer:
        pixels = trainer.data.train.images
        steps["pytorch"] = torch_peer.training_step(args.depth, trainer.model.stochastic_depth.probabilities,
                                                    trainer.data.normalizer(pixels), trainer.data.train.labels, threads)
    samples = {name: {"cpu": [], "wall": []} for name in steps}
    for repeat in range(args.warmup + args.repeats):
        for name, step in steps.items():
            use_cpu_operators(name == "onednn", threads)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.steps):
                step()
            if repeat >= args.warmup:
                samples[name]["cpu"].append((time.process_time() - cpu) / args.steps)
                samples[name]["wall"].append((time.perf_counter() - wall) / args.steps)
    use_cpu_operators(False)
    results = {name: {clock: summarise(values) for clock, values in clocks.items()} for name, clocks in samples.items()}
    ratios = {f"{clock}: {name}/{peer}": results[name][clock]["median"] / results[peer][clock]["median"]
              for clock in ("cpu", "wall") for name in ("paddle", "onednn") for peer in ("paddle", "pytorch")
              if peer in results and name != peer}
    return {"threads": threads, "survival_last": 0.5, **results, "ratios": ratios}


def synthetic_images(count):
    return np.random.default_rng(0).integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)


def batches_per_second(make_loader, args):
    """Batches per second over the first args.data_batches batches of a fresh loader, args.repeats times."""
    samples = []
    for repeat in range(args.repeats):
        loader = make_loader(repeat)
        started = time.perf_counter()
        for index, _ in enumerate(loader, start=1):
            if index == args.data_batches:
                break
        samples.append(args.data_batches / (time.perf_counter() - started))
    return summarise(samples)


def time_dnsd_pipeline(args, images):
    """Batches per second of what DNSD's training reads: whole batches gathered, normalised and augmented with
    numpy in a prefetching thread, delivered as tensors."""
    train = Dataset(images, np.zeros(len(images), dtype=np.int64))
    data = Splits(train, train, train, Normalizer.fit(images))
    return batches_per_second(
        lambda repeat: prefetched(TrainingBatches(data, args.batch_size, True, seed=0, epoch=repeat + 1),
                                  args.prefetch), args)


def time_transforms_pipeline(args, images):
    """Batches per second of the common way: per-image paddle.vision.transforms on PIL images (as
    paddle.vision.datasets.Cifar10 gives them) in a single-process paddle.io.DataLoader."""
    from paddle.io import DataLoader
    from paddle.io import Dataset as PaddleDataset
    from paddle.vision import transforms
    from PIL import Image

    normalizer = Normalizer.fit(images, "channel")
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(mean=(normalizer.mean / 255).ravel().tolist(),
                             std=(normalizer.state()["std"] / 255).ravel().tolist()),
    ])
    hwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))

    class Images(PaddleDataset):
        def __getitem__(self, index):
            return transform(Image.fromarray(hwc[index])), np.int64(0)

        def __len__(self):
            return len(hwc)

    return batches_per_second(
        lambda repeat: DataLoader(Images(), batch_size=args.batch_size, shuffle=True, num_workers=0), args)


SVHN_SIZES = {"train": 73257, "extra": 531131, "test": 26032}
SVHN_READ = """
import json, resource, sys, time
from DNSD.datasets import load_data
from DNSD.randomness import generator
from DNSD.schema import DataConfig
started = time.perf_counter()
data = load_data(DataConfig(dataset="svhn", data_file=sys.argv[1], val_size=int(sys.argv[2]), augment=False),
                 generator(0, "split"))
print(json.dumps({"seconds": time.perf_counter() - started, "train_images": len(data.train),
                  "val_images": len(data.val), "test_images": len(data.test),
                  "train_mib": data.train.images.nbytes / 2**20, "dtype": str(data.train.images.dtype),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure_svhn_reading(args):
    """Seconds and peak memory of reading SVHN (train + extra + test) and splitting it as a run does, in a process of
    its own, from synthetic files in the official layout written to a temporary folder."""
    import tempfile

    import scipy.io

    sizes = {part: max(100, round(count * args.svhn_scale)) for part, count in SVHN_SIZES.items()}
    val_size = 30 * max(1, round(200 * args.svhn_scale))  # 400 + 200 of each digit at the official sizes
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for part, count in sizes.items():
            scipy.io.savemat(os.path.join(folder, f"{part}_32x32.mat"),
                             {"X": rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8),
                              "y": (np.arange(count) % 10 + 1).astype(np.uint8).reshape(-1, 1)})
        files_mib = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)) / 2**20
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        output = subprocess.run([sys.executable, "-c", SVHN_READ, folder, str(val_size)], capture_output=True,
                                text=True, check=True, cwd=root).stdout
    result = {**json.loads(output.strip().splitlines()[-1]), "files_mib": files_mib, "sizes": sizes}
    print(f"svhn: read {sum(sizes.values()):,} images ({files_mib:.0f} MiB of files) in {result['seconds']:.1f} s, "
          f"peak {result['peak_rss_mib']:.0f} MiB, training images kept as {result['dtype']} "
          f"({result['train_mib']:.0f} MiB)", file=sys.stderr, flush=True)
    return result


def time_audit(args, epochs=2):
    """A run of ResNet-depth on args.data_file that keeps every checkpoint, then dnsd audit of its last epoch, each
    in a process of its own; the weight digest that every epoch records, timed on the run's model."""
    from DNSD.runs.checkpoint import read_state, restore_model
    from DNSD.training.ranks import weights_digest

    if not args.data_file or not os.path.isfile(args.data_file):
        sys.exit("benchmark: the audit section trains on a CIFAR-10 archive: give it with --data-file")
    dnsd = [sys.executable, "-m", "DNSD"]
    settings = ["--device", args.device, "--cpu-threads", str(args.cpu_threads)]
    with tempfile.TemporaryDirectory() as folder:
        run_dir = os.path.join(folder, "run")
        subprocess.run([*dnsd, "train", "--data-file", args.data_file, "--val-size", str(args.val_size), "--depth",
                        str(args.depth), "--batch-size", str(args.batch_size), "--epochs", str(epochs),
                        "--keep-every", "1", "--output-dir", run_dir, *settings], check=True, capture_output=True)
        with open(os.path.join(run_dir, "metrics.jsonl")) as file:
            records = [json.loads(line) for line in file]
        audits = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            # One epoch re-trained: the audit exits 2 where it does not cover best.pdckpt, which is not timed here.
            result = subprocess.run([*dnsd, "audit", run_dir, "--epoch", str(epochs), *settings],
                                    capture_output=True, text=True)
            wall = time.perf_counter() - started
            found = re.search(r"re-trained in ([0-9.]+) s", result.stdout)
            if not found:
                sys.exit(f"benchmark: the audit re-trained nothing: {result.stderr.strip()[-300:]}")
            retrained = float(found.group(1))
            audits.append({"wall_seconds": wall, "retrained_epoch_seconds": retrained})
            print(f"audit: epoch re-trained in {retrained:.1f} s (the run's: {records[-1]['epoch_seconds']:.1f} s), "
                  f"the command {wall:.1f} s", file=sys.stderr, flush=True)
        path = os.path.join(run_dir, "last.pdckpt")
        model = restore_model(read_state(path), path)
    digests = []
    for _ in range(args.repeats * 5):
        started = time.perf_counter()
        weights_digest(model)
        digests.append(time.perf_counter() - started)
    epoch = statistics.median(record["epoch_seconds"] for record in records)
    return {"run_epoch_seconds": [record["epoch_seconds"] for record in records], "audits": audits,
            "retrained_epoch_seconds": summarise([audit["retrained_epoch_seconds"] for audit in audits]),
            "audit_wall_seconds": summarise([audit["wall_seconds"] for audit in audits]),
            "digest_seconds": summarise(digests), "digest_share_of_epoch": statistics.median(digests) / epoch}


def peak_memory_mib():
    if paddle.device.get_device().startswith("gpu"):
        return {"gpu_peak_allocated_mib": paddle.device.cuda.max_memory_allocated() / 2**20,
                "host_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    return {"host_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


CPU_SETTINGS = (  # (name, threads, CPU numerics, oneDNN)
    ("portable numerics", 1, "portable", False),
    ("native numerics", 1, "native", False),
    ("onednn numerics (DNSD's CPU operators, the default where they build)", 1, "onednn", False),
    ("every core + portable numerics", 0, "portable", False),
    ("every core + native numerics", 0, "native", False),
    ("every core + native numerics + oneDNN", 0, "native", True),
    ("every core + onednn numerics", 0, "onednn", False),
)


def compare_cpu_settings(args):
    """Training-step time under each CPU setting, each in a fresh process (MKL reads its settings once)."""
    rows = []
    for name, threads, numerics, onednn in CPU_SETTINGS:
        command = [sys.executable, os.path.abspath(__file__), "--sections", "train", "--device", "cpu",
                   "--depth", str(args.depth), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--cpu-threads", str(threads),
                   "--cpu-numerics", numerics, "--output", os.devnull]
        environment = {key: value for key, value in os.environ.items() if key not in PORTABLE_ENVIRONMENT}
        environment["FLAGS_use_mkldnn"] = "1" if onednn else "0"
        output = subprocess.run(command, capture_output=True, text=True, check=True, env=environment).stdout
        train = json.loads(output[output.index("{"):])["train"]
        rows.append({"setting": name, "constant_step_seconds": train["constant_depth"]["median"],
                     "stochastic_step_seconds": train["stochastic_depth"]["median"]})
        print(f"{name:<45} constant depth {rows[-1]['constant_step_seconds']:.3f} s/step  stochastic depth "
              f"{rows[-1]['stochastic_step_seconds']:.3f} s/step", file=sys.stderr, flush=True)
    return rows


def profile_training_steps(args):
    """Paddle's operator summary of a few training steps: where the step's time goes."""
    import tempfile

    import paddle.profiler as profiler

    step, _, _ = training_step(args, 1.0)
    for _ in range(args.warmup):
        step()
    with tempfile.TemporaryDirectory() as folder:
        recorder = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                                     on_trace_ready=profiler.export_chrome_tracing(folder))
        recorder.start()
        for _ in range(args.steps):
            step()
            recorder.step()
        recorder.stop()
        recorder.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit="ms")


def main(argv=None):
    args = parse_args(argv)
    results = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
               "paddle": paddle.__version__, "python": platform.python_version(), "machine": platform.machine(),
               "cpu_count": os.cpu_count(), "depth": args.depth, "batch_size": args.batch_size}
    if args.time_engine:
        return time_engine(args, select_device(args.device, cpu_threads=args.cpu_threads) == "gpu")
    if args.compare_cpu_settings:
        results["cpu_settings"] = compare_cpu_settings(args)
    else:
        results["device"] = select_device(args.device, cpu_threads=args.cpu_threads, cpu_numerics=args.cpu_numerics)
        if results["device"] == "cpu":
            results["cpu_settings"] = {"threads": thread_count(args.cpu_threads), **numerics_in_effect(),
                                       "onednn": paddle.get_flags(["FLAGS_use_mkldnn"])["FLAGS_use_mkldnn"]}
        if args.profile:
            profile_training_steps(args)
            return
        sections = set(args.sections.split(","))
        if "train" in sections:
            timings = time_training_steps(args)
            constant, stochastic = timings["constant_depth"], timings["stochastic_depth"]
            results["train"] = {
                **timings,
                "measured_ratio": stochastic["median"] / constant["median"],
                "expected_ratio": stochastic["mean_active_blocks"] / stochastic["blocks"],
                "images_per_second_stochastic": args.batch_size / stochastic["median"],
                "images_per_second_constant": args.batch_size / constant["median"],
            }
            results["memory"] = peak_memory_mib()
            gradients = time_gradient_magnitudes(args)
            results["gradient_magnitudes_seconds"] = gradients
            results["gradient_magnitudes_share_of_step"] = gradients["median"] / stochastic["median"]
        if "data" in sections:
            images = synthetic_images(max(10000, args.batch_size * args.data_batches))
            ours, common = time_dnsd_pipeline(args, images), time_transforms_pipeline(args, images)
            results["data"] = {"dnsd_batches_per_second": ours, "transforms_batches_per_second": common,
                               "speedup": ours["median"] / common["median"]}
        if "eval" in sections:
            results["eval_images_per_second"] = time_evaluation(args)
        if "host" in sections:
            results["host_ms_per_step"] = time_host_cost(args)
        if "svhn" in sections:
            results["svhn_reading"] = measure_svhn_reading(args)
        if "inference" in sections:
            results["inference_images_per_second"] = time_inference(args)
        if "audit" in sections:
            results["audit"] = time_audit(args)
        if "convolution" in sections:
            results["convolution"] = time_convolutions(args)
    write_results(results, args.output)


def write_results(results, output):
    """Print the results as JSON, and write them to output (a results file) unless it is os.devnull."""
    text = json.dumps(results, indent=2)
    if output != os.devnull:
        with open(output, "w") as stream:
            stream.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
