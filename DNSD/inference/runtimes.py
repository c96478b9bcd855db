"""The engines that run an exported model (dnsd export): ONNX Runtime for PREFIX.onnx, Paddle Inference (with oneDNN
where it works) and Paddle's jit.load for the Paddle model. Every form takes uint8 RGB images (N, 32, 32, 3) and
gives class probabilities, as TrainedModel.predict does. An engine is first tried on a model in a process of its
own, on the reference images the export recorded: one that crashes or disagrees is passed over, saying so."""
import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass

import numpy as np

from DNSD.changes import setting
from DNSD.config import build_config
from DNSD.errors import InputError, one_line
from DNSD.files import cache_folder, file_digest, read_json, write_json
from DNSD.schema import Config
from DNSD.system.numerics import cpuinfo_fields
from DNSD.untrusted import regular_file

# Fastest first on this project's CPUs (BENCHMARKS.md, inference): the default is the first that runs the model.
ENGINES = ("onnxruntime", "paddle-inference", "dygraph")
TOLERANCE = 1e-4  # largest difference of a probability from the checkpoint's
MAX_MODEL_BYTES = 2 << 30  # ONNX's protobuf limit; ResNet-1202's model is about 80 MB
MAX_INFO_BYTES = 1 << 20
REFERENCE_IMAGES = 8  # drawn from a fixed seed, so that any machine can draw them again
PROBE_SECONDS = 600


def reference_images():
    return np.random.default_rng(0).integers(0, 256, (REFERENCE_IMAGES, 32, 32, 3), dtype=np.uint8)


def paddle_model_file(prefix):
    """The program of a Paddle model: PREFIX.json (Paddle 3) or PREFIX.pdmodel (Paddle 2)."""
    return next((prefix + suffix for suffix in (".json", ".pdmodel") if os.path.isfile(prefix + suffix)), None)


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, prefix, threads=1, gpu=False, onednn=None):
        # ONNX Runtime's telemetry writes a device id into the user's home (~/.cache/Microsoft) as it loads, and
        # sends usage events: off, unless the user says otherwise.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3  # errors only
        providers = ["CPUExecutionProvider"]
        if gpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(prefix + ".onnx", options, providers=providers)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images):
        return self.session.run(None, {self.input: images})[0]


class PaddleInference:
    name = "paddle-inference"

    def __init__(self, prefix, threads=1, gpu=False, onednn=False):
        from paddle import inference

        config = inference.Config(paddle_model_file(prefix), prefix + ".pdiparams")
        if gpu:
            config.enable_use_gpu(256, 0)
        else:
            config.disable_gpu()
            config.enable_mkldnn() if onednn else config.disable_mkldnn()
            config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        self.predictor = inference.create_predictor(config)
        self.onednn = onednn

    def __call__(self, images):
        handle = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        handle.reshape(images.shape)
        handle.copy_from_cpu(np.ascontiguousarray(images))
        self.predictor.run()
        return self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()


class PaddleJit:
    name = "dygraph"

    def __init__(self, prefix, threads=1, gpu=False, onednn=None):
        import paddle

        paddle.set_device("gpu" if gpu else "cpu")
        self.model = paddle.jit.load(prefix)
        self.model.eval()

    def __call__(self, images):
        import paddle

        with paddle.no_grad():
            return self.model(paddle.to_tensor(images)).numpy()


RUNNERS = {runner.name: runner for runner in (OnnxRuntime, PaddleInference, PaddleJit)}


def variants(engine):
    """(engine, oneDNN) in the order tried: Paddle Inference with oneDNN first, which is faster where it works."""
    return [(engine, True), (engine, False)] if engine == "paddle-inference" else [(engine, None)]


def run_batches(runner, images, batch_size):
    """The runner's probabilities of uint8 images (N, 32, 32, 3), batch by batch."""
    return np.concatenate([runner(images[start:start + batch_size]) for start in range(0, len(images), batch_size)]
                          or [np.zeros((0, 0), np.float32)])


def checked_images(images):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        hint = ": pass images.transpose(0, 2, 3, 1)" if images.shape[1:] == (3, 32, 32) else ""
        raise ValueError(f"predict takes uint8 RGB images of shape (N, 32, 32, 3), the layout of image files "
                         f"(normalize takes the network's, (N, 3, 32, 32)), got {images.dtype} of shape "
                         f"{images.shape}{hint}")
    return images


@dataclass
class TrainedModel:
    """A checkpoint's network in evaluation mode, with what is needed to feed it: `normalize` turns uint8 images
    (N, 3, 32, 32) into the network's input, as training did."""

    model: object  # a paddle.nn.Layer
    config: Config
    classes: tuple
    normalize: object  # a datasets.pipeline.Normalizer
    epoch: int
    engine = "dygraph"

    def predict(self, images, batch_size=256):
        """The class probabilities, float32 of shape (N, len(classes)), of uint8 RGB images of shape (N, 32, 32, 3),
        the layout of numpy.asarray(PIL.Image.open(path)); normalised as the run's training images were."""
        from DNSD.training.evaluation import probabilities

        return probabilities(self.model, checked_images(images).transpose(0, 3, 1, 2), batch_size, self.normalize)


class ExportedModel:
    """An exported model (PREFIX or PREFIX.onnx) with the engine chosen to run it; predict as TrainedModel's."""

    def __init__(self, path, engine=None, threads=1, gpu=False):
        self.prefix = path[: -len(".onnx")] if path.endswith(".onnx") else path
        self.info = read_info(self.prefix, path)
        self.classes = tuple(self.info["classes"])
        self.runner = choose_runner(self.prefix, self.info, engine, path.endswith(".onnx"), threads, gpu)
        self.engine = self.runner.name

    def predict(self, images, batch_size=256):
        return run_batches(self.runner, checked_images(images), batch_size)


def open_model(checkpoint=None, path=None, engine=None, stated=None, purpose="dnsd predict"):
    """A checkpoint (run by Paddle's dygraph) or an exported model (by the engine asked for, or the fastest that
    runs it here), ready to predict; stated: the user's config values, of which only the device keys may differ."""
    from DNSD.datasets.pipeline import Normalizer
    from DNSD.runs.checkpoint import open_checkpoint, restore_model
    from DNSD.system.device import select_run_device

    stated = stated or {}
    if checkpoint:
        if engine not in (None, "dygraph"):
            raise InputError(f"--engine {engine} runs an exported model: export the checkpoint (dnsd export "
                             f"--checkpoint {checkpoint}) and pass --model PREFIX")
        state, config = open_checkpoint(checkpoint, stated, purpose)
        select_run_device(config.run)
        model = restore_model(state, checkpoint)
        model.eval()
        return TrainedModel(model, config, tuple(state["classes"]), Normalizer.from_state(state["normalizer"]),
                            state["epochs_done"])
    fixed = [key for key in stated if not setting(key)]
    if fixed:
        raise InputError(f"{fixed[0]}: an exported model is fixed; only where it runs may be chosen (--device), "
                         "leave the other config keys out")
    run = build_config(stated).run
    device = select_run_device(run)
    return ExportedModel(path, engine, run.cpu_threads or os.cpu_count() or 1, device == "gpu")


def read_info(prefix, named):
    """PREFIX-info.json, its files checked against the digests it lists."""
    path = f"{prefix}-info.json"
    if not os.path.isfile(path):
        raise InputError(f"--model {named}: no exported DNSD model there ({path} is missing); write one with dnsd "
                         "export --checkpoint RUN_DIR")
    info = read_json(regular_file(path, "--model"), MAX_INFO_BYTES)
    classes, files = (info.get("classes"), info.get("files")) if isinstance(info, dict) else (None, None)
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) for name in classes) or \
            not isinstance(files, dict) or not isinstance(info.get("reference"), list):
        raise InputError(f"{path} is not the description of a model DNSD exported; export the model again")
    outputs = {len(row) if isinstance(row, list) else None for row in info["reference"]}
    if outputs != {len(classes)}:
        raise InputError(f"--model {named} gives {', '.join(map(str, outputs))} classes, but {path} names "
                         f"{len(classes)}; export the model again")
    for suffix, digest in files.items():
        file = prefix + suffix
        if not isinstance(digest, str) or not os.path.isfile(file) or os.path.getsize(file) > MAX_MODEL_BYTES or \
                file_digest(regular_file(file, "--model"), "sha256") != digest:
            raise InputError(f"--model {named}: its files are not the ones {path} describes (an export was "
                             "interrupted, or they were changed); export the model again")
    return info


def available(prefix, info, onnx_only):
    """The engines that can run the model's files, fastest first."""
    has_onnx = ".onnx" in info["files"]
    has_paddle = any(suffix in info["files"] for suffix in (".json", ".pdmodel"))
    return [engine for engine in ENGINES if (engine == "onnxruntime" and has_onnx) or
            (engine != "onnxruntime" and has_paddle and not onnx_only)]


def choose_runner(prefix, info, engine, onnx_only, threads, gpu):
    """The runner of the engine asked for, or of the fastest available; an engine that fails its first try on this
    machine is passed over in one line."""
    candidates = available(prefix, info, onnx_only)
    if engine and engine not in candidates:
        raise InputError(f"--engine {engine} cannot run {prefix}{'.onnx' if onnx_only else ''}: its files run with "
                         f"{', '.join(candidates) or 'no engine'}")
    tried = []
    tries = [variant for candidate in ([engine] if engine else candidates) for variant in variants(candidate)]
    for index, (name, onednn) in enumerate(tries):
        # A remembered failure only passes an engine over: the one asked for, or the last left, is tried again.
        problem = verdict(prefix, info, name, onednn, threads, gpu, fresh=bool(engine) or index == len(tries) - 1)
        if problem is None:
            if tried:
                print(f"DNSD: {'; '.join(tried)}; running it with {describe(name, onednn)}", file=sys.stderr)
            return RUNNERS[name](prefix, threads, gpu, onednn)
        tried.append(f"{describe(name, onednn)} failed on this machine ({problem})")
    raise InputError(f"no engine can run {prefix}: {'; '.join(tried)}; export the model again with this DNSD")


def describe(name, onednn):
    return {True: f"{name} with oneDNN", False: f"{name} without oneDNN"}.get(onednn, name)


def verdict(prefix, info, name, onednn, threads, gpu, fresh=False):
    """None where the engine gives the model's reference probabilities on this machine, else why not: tried in a
    process of its own (a crash there cannot take the command down) and remembered; a remembered success is
    believed, a remembered failure only where not fresh."""
    key = hashlib.sha256(json.dumps([name, onednn, gpu, info["files"], versions(), platform.processor(),
                                     cpuinfo_fields().get("model name", "")]).encode()).hexdigest()
    cache = cache_folder("engines.json")
    try:
        remembered = read_json(cache) if os.path.isfile(cache) else {}
    except OSError:
        remembered = {}
    remembered = remembered if isinstance(remembered, dict) else {}
    if key in remembered and (remembered[key] is None or not fresh):
        return remembered[key]
    command = [sys.executable, "-m", "DNSD.inference.runtimes", prefix, name, json.dumps(onednn), str(threads),
               json.dumps(gpu)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_SECONDS)
        said = (done.stdout + done.stderr).strip().splitlines()
        problem = None if done.returncode == 0 else one_line(said[-1] if said else f"exit code {done.returncode}", 160)
    except subprocess.TimeoutExpired:
        problem = f"no answer within {PROBE_SECONDS} s"
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        write_json(cache, {**remembered, key: problem})
    except OSError:
        pass  # a read-only home: the try is made again next time
    return problem


def versions():
    from importlib import metadata

    found = {}
    for package in ("paddlepaddle", "paddlepaddle-gpu", "onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def try_engine(prefix, name, onednn, threads, gpu):
    """In the probing process: run the engine on the reference images; exit 1 where it disagrees."""
    from DNSD.system.console import quiet_libraries

    with quiet_libraries():
        runner = RUNNERS[name](prefix, threads, gpu, onednn)
    expected = np.array(read_info(prefix, prefix)["reference"], np.float32)
    difference = float(np.abs(run_batches(runner, reference_images(), REFERENCE_IMAGES) - expected).max())
    if not difference <= TOLERANCE:
        print(f"its probabilities differ from the exported model's by {difference:.2g}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(try_engine(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])))
