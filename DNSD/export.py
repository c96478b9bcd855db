"""`--mode export`: a checkpoint as a static inference model (paddle.jit.save) that takes raw pixel values."""
import os
import shutil
import tempfile

import paddle
import paddle.nn as nn

from DNSD.config import add_config_flags, device_keys, stated_values
from DNSD.datasets.pipeline import Normalizer
from DNSD.engine.checkpoint import open_checkpoint, restore_model
from DNSD.engine.device import select_run_device
from DNSD.engine.run_folder import check_writable, checkpoint_in
from DNSD.files import TEMPORARY_PREFIX, file_digest, write_json


class InferenceModel(nn.Layer):
    """The training run's normalisation followed by the network in its inference form (a ResNet at full depth, each
    residual scaled by its survival probability; DiracNet and VanillaNet folded): float32 pixel values in [0, 255],
    shape (N, 3, 32, 32), in; class logits out."""

    def __init__(self, model, normalizer):
        super().__init__()
        self.model = model
        self.register_buffer("mean", paddle.to_tensor(normalizer.mean))
        self.register_buffer("inverse_std", paddle.to_tensor(normalizer.inverse_std))

    def forward(self, images):
        return self.model((images - self.mean) * self.inverse_std)


def export_path(checkpoint_path):
    """Where a checkpoint's inference model goes by default: runs/x/best.pdckpt -> runs/x/best-inference/model."""
    return os.path.join(f"{os.path.splitext(checkpoint_path)[0]}-inference", "model")


def export_checkpoint(checkpoint_path, prefix=None, stated=None):
    """Write the inference model of a checkpoint with paddle.jit.save, and its class names in PREFIX-info.json."""
    state, config = open_checkpoint(checkpoint_path, stated, "dnsd export")
    select_run_device(config.run)
    model = restore_model(state, checkpoint_path)
    model.eval()
    prefix = prefix or export_path(checkpoint_path)
    check_writable(os.path.dirname(os.path.abspath(prefix)))
    network = model.folded()
    inference = InferenceModel(network, Normalizer.from_state(state["normalizer"]))
    inference.eval()
    folder, name = os.path.split(os.path.abspath(prefix))
    # Written in a folder of its own, then moved in, the info file last: it names the digest of every file it
    # describes, so that a model half replaced by an interrupted export is refused when loaded.
    staging = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, dir=folder)
    try:
        paddle.jit.save(inference, os.path.join(staging, name),
                        input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32", "images")])
        files = sorted(os.listdir(staging))
        # Not {prefix}.json (Paddle 3's program) nor {prefix}.*.json, which paddle.jit.load 3.3.1 mistakes for it.
        write_json(os.path.join(staging, f"{name}-info.json"), {
            "input": "float32 pixel values in [0, 255], shape (N, 3, 32, 32), RGB planes", "output": "class logits",
            "classes": list(state["classes"]), "network": model.name(), "folded": network is not model,
            "checkpoint": os.path.abspath(checkpoint_path), "epoch": state["epochs_done"],
            "files": {file[len(name):]: file_digest(os.path.join(staging, file), "sha256") for file in files}})
        for file in files + [f"{name}-info.json"]:
            os.replace(os.path.join(staging, file), os.path.join(folder, file))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return prefix


def add_arguments(parser):
    parser.add_argument("--checkpoint", metavar="PATH", required=True,
                        help="a run folder (its best checkpoint) or a .pdckpt file")
    parser.add_argument("--export-prefix", metavar="PATH",
                        help="path prefix of the inference model (default: beside the checkpoint, e.g. "
                             "RUN_DIR/best-inference/model)")
    add_config_flags(parser, device_keys)


def execute(args):
    stated = stated_values(args.config, args, args.override)
    prefix = export_checkpoint(checkpoint_in(args.checkpoint), args.export_prefix, stated)
    print(f"exported the inference model to {prefix}.* (load it with paddle.jit.load({prefix!r}))")
