"""A checkpoint exported for inference: the Paddle model (paddle.jit.save) and its ONNX form (paddle2onnx), each
taking uint8 RGB images (N, 32, 32, 3) and giving class probabilities, with the run's normalisation inside. Each
form is checked against the checkpoint before anything is written; PREFIX-info.json describes them."""
import contextlib
import os
import shutil
import sys
import tempfile

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from DNSD.datasets import load_splits
from DNSD.datasets.pipeline import Normalizer
from DNSD.errors import DNSDError, InputError, one_line
from DNSD.files import TEMPORARY_PREFIX, file_digest, refuse_link, write_json
from DNSD.inference.runtimes import (
    TOLERANCE,
    OnnxRuntime,
    PaddleInference,
    paddle_model_file,
    reference_images,
    run_batches,
)
from DNSD.runs.checkpoint import open_checkpoint, restore_model
from DNSD.runs.folder import check_writable
from DNSD.system.device import select_run_device
from DNSD.training.evaluation import probabilities

FORMATS = ("both", "onnx", "paddle")
ONNX_OPSET = 13  # every operator of the networks has an ONNX Runtime kernel at 13, and TensorRT 8 reads it
CHECK_IMAGES = 64
INPUT = "uint8 RGB images, shape (N, 32, 32, 3) (height, width, channel: an image file's layout)"
OUTPUT = "class probabilities, float32 (N, classes)"


class InferenceModel(nn.Layer):
    """The run's normalisation, the network in its inference form (a ResNet at full depth, each residual scaled by
    its survival probability; DiracNet and VanillaNet folded) and a softmax."""

    def __init__(self, model, normalizer):
        super().__init__()
        self.model = model
        self.register_buffer("mean", paddle.to_tensor(normalizer.mean))
        self.register_buffer("inverse_std", paddle.to_tensor(normalizer.inverse_std))

    def forward(self, images):
        pixels = paddle.transpose(images.astype("float32"), [0, 3, 1, 2])
        return F.softmax(self.model((pixels - self.mean) * self.inverse_std), axis=1)


class ExportRefused(DNSDError):
    """An exported form does not give the checkpoint's probabilities: nothing is written."""


def export_path(checkpoint_path):
    """Where a checkpoint's inference model goes by default: runs/x/best.pdckpt -> runs/x/best-inference/model."""
    return os.path.join(f"{os.path.splitext(checkpoint_path)[0]}-inference", "model")


@contextlib.contextmanager
def silenced():
    """paddle2onnx prints its progress from C++ and from Python's logging: both kept off the console."""
    sys.stdout.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def to_onnx(prefix):
    """PREFIX.onnx from the Paddle model at PREFIX, through paddle2onnx (1.x on Paddle 2, 2.x on Paddle 3)."""
    try:
        import paddle2onnx
    except ImportError:
        raise InputError("--format onnx needs paddle2onnx and onnxruntime: bash scripts/setup_env.sh installs them "
                         "(pip install paddle2onnx onnxruntime)") from None
    try:
        with silenced():
            onnx_bytes = paddle2onnx.export(paddle_model_file(prefix), prefix + ".pdiparams", None,
                                            opset_version=ONNX_OPSET, verbose=False)
    except Exception:  # paddle2onnx logs what failed, then fails itself; its log is kept off the console
        onnx_bytes = None
    if not onnx_bytes:
        raise ExportRefused(f"paddle2onnx {paddle2onnx.__version__} could not convert the model on Paddle "
                            f"{paddle.__version__} (paddle2onnx 2.x needs Paddle 3, 1.x Paddle 2); nothing was written")
    with open(prefix + ".onnx", "wb") as stream:
        stream.write(pruned(onnx_bytes))


def pruned(onnx_bytes):
    """The model with only what computes its outputs from its inputs, by the onnx package's Extractor: paddle2onnx
    leaves nodes whose results nothing reads, whose constants ONNX Runtime then warns of, one line each."""
    import onnx.utils

    model = onnx.load_from_string(onnx_bytes)
    constants = {initializer.name for initializer in model.graph.initializer}
    inputs = [item.name for item in model.graph.input if item.name not in constants]
    return onnx.utils.Extractor(model).extract_model(inputs, [item.name for item in model.graph.output]) \
        .SerializeToString()


def onnx_runner(prefix):
    try:
        return OnnxRuntime(prefix)
    except Exception as error:  # ONNX Runtime's own exception types, by version
        raise ExportRefused(f"ONNX Runtime cannot load the converted model ({one_line(error, 300)}); nothing was "
                            "written") from None


def check_images(config, state):
    """A batch of the run's test images (uint8, N x 32 x 32 x 3), or where its data cannot be read here, random
    images; and what they are, for the info file."""
    try:
        test = load_splits(config, state["normalizer"]).test
        return test.images[:CHECK_IMAGES].transpose(0, 2, 3, 1), f"the first {CHECK_IMAGES} test images of the run"
    except InputError as problem:
        print(f"DNSD: checking the export on random images: the run's data cannot be read here ({problem})",
              file=sys.stderr)
        images = np.random.default_rng(1).integers(0, 256, (CHECK_IMAGES, 32, 32, 3), dtype=np.uint8)
        return images, f"{CHECK_IMAGES} random images (the run's data was not found)"


def check_form(runner, images, expected, what):
    difference = float(np.abs(run_batches(runner, images, CHECK_IMAGES) - expected).max())
    if not difference <= TOLERANCE:
        raise ExportRefused(f"the {what} model's probabilities differ from the checkpoint's by {difference:.2g} "
                            f"(more than {TOLERANCE:g}) on the check images; nothing was written")
    return difference


def staged_forms(inference, staged, form, images, expected):
    """Save the inference model at the staged prefix in the forms asked, each checked on images against the
    checkpoint's probabilities (expected); returns {form: largest difference}."""
    paddle.jit.save(inference, staged, input_spec=[paddle.static.InputSpec([None, 32, 32, 3], "uint8", "images")])
    differences = {}
    if form in ("both", "paddle"):
        differences["paddle"] = check_form(PaddleInference(staged), images, expected, "Paddle")
    if form in ("both", "onnx"):
        to_onnx(staged)
        differences["onnx"] = check_form(onnx_runner(staged), images, expected, "ONNX")
    if form == "onnx":  # Paddle's files served the conversion alone
        folder = os.path.dirname(staged)
        for file in os.listdir(folder):
            if not file.endswith(".onnx"):
                os.remove(os.path.join(folder, file))
    return differences


def export_checkpoint(checkpoint_path, prefix=None, stated=None, form="both"):
    """Write the inference model(s) of a checkpoint and PREFIX-info.json; returns the prefix and the largest
    difference of each form's probabilities from the checkpoint's."""
    state, config = open_checkpoint(checkpoint_path, stated, "dnsd export")
    select_run_device(config.run)
    model = restore_model(state, checkpoint_path)
    model.eval()
    if prefix is None:  # inside the run folder, which may come from elsewhere: never through a link out of it
        prefix = export_path(checkpoint_path)
        refuse_link(os.path.dirname(prefix))
    check_writable(os.path.dirname(os.path.abspath(prefix)))
    network = model.folded()
    normalizer = Normalizer.from_state(state["normalizer"])
    inference = InferenceModel(network, normalizer)
    inference.eval()
    images, checked_on = check_images(config, state)

    def truth(batch):  # the checkpoint's own evaluation path
        return probabilities(model, batch.transpose(0, 3, 1, 2), CHECK_IMAGES, normalizer)

    folder, name = os.path.split(os.path.abspath(prefix))
    # Written in a folder of its own and checked there, then moved in, the info file last: it names the digest of
    # every file it describes, so that a model half replaced by an interrupted export is refused when loaded.
    staging = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, dir=folder)
    try:
        differences = staged_forms(inference, os.path.join(staging, name), form, images, truth(images))
        files = sorted(os.listdir(staging))
        # Not {prefix}.json (Paddle 3's program) nor {prefix}.*.json, which paddle.jit.load 3.3.1 mistakes for it.
        write_json(os.path.join(staging, f"{name}-info.json"), {
            "input": INPUT, "output": OUTPUT, "classes": list(state["classes"]), "network": model.name(),
            "folded": network is not model, "checkpoint": os.path.abspath(checkpoint_path),
            "epoch": state["epochs_done"], "config": config.to_dict(), "data": state.get("data"),
            "checked": {"images": checked_on, "largest_difference": differences},
            "reference": truth(reference_images()).tolist(),
            "files": {file[len(name):]: file_digest(os.path.join(staging, file), "sha256") for file in files}})
        for file in files + [f"{name}-info.json"]:
            os.replace(os.path.join(staging, file), os.path.join(folder, file))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return prefix, differences
