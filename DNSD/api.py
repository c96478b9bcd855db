"""DNSD from Python: a config, a model, a trained checkpoint, its evaluation and its predictions, a call each (see
DNSD/__init__)."""
from dataclasses import dataclass

import numpy as np
import paddle

from DNSD.config import apply_values, build_config, load_yaml, set_value
from DNSD.schema import Config
from DNSD.datasets import num_classes
from DNSD.datasets.pipeline import Normalizer
from DNSD.engine.checkpoint import load_checkpoint as load_state, restore_model
from DNSD.engine.evaluation import probabilities
from DNSD.engine.reports import checkpoint_report
from DNSD.models import build_model as build_network


def load_config(path=None, overrides=None):
    """The validated Config of a YAML file (a path, or the name of a shipped config such as "resnet110_sd"; None: the
    paper's defaults) with overrides applied, given as {"section.key": value}, e.g. {"train.epochs": 10}."""
    values = apply_values({}, load_yaml(path), where=f" in {path}") if path else {}
    for key, value in (overrides or {}).items():
        set_value(values, key, value)
    return build_config(values)


def build_model(config=None):
    """The untrained network of a Config (default: the paper's ResNet-110 with stochastic depth), with as many outputs
    as its data set has classes."""
    config = config or Config()
    return build_network(config.model, num_classes(config.data.dataset))


@dataclass
class TrainedModel:
    """A checkpoint's network in evaluation mode, with what is needed to feed it: `normalize` turns uint8 images
    (N, 3, 32, 32) into the network's input, as training did."""

    model: paddle.nn.Layer
    config: Config
    classes: tuple
    normalize: Normalizer
    epoch: int

    def predict(self, images, batch_size=256):
        """The class probabilities, float32 of shape (N, len(classes)), of uint8 RGB images of shape (N, 32, 32, 3),
        the layout of numpy.asarray(PIL.Image.open(path)); normalised as the run's training images were."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"predict takes uint8 RGB images of shape (N, 32, 32, 3), got {images.dtype} of shape "
                             f"{images.shape}")
        return probabilities(self.model, images.transpose(0, 3, 1, 2), batch_size, self.normalize)


def load_checkpoint(path):
    """The model of a DNSD checkpoint (.pdckpt), in evaluation mode: every block active, each residual scaled by its
    survival probability."""
    state = load_state(path)
    model = restore_model(state, path)
    model.eval()
    return TrainedModel(model, state["config"], tuple(state["classes"]), Normalizer.from_state(state["normalizer"]),
                        state["epochs_done"])


def evaluate(checkpoint_path, split="test", data_file=None):
    """Evaluate a checkpoint on the test (or validation) split as `--mode eval` does, writing the same report beside
    it; returns {"error", "accuracy", "per_class_accuracy", "images", ...}, errors in percent."""
    return checkpoint_report(checkpoint_path, split, {"data.data_file": data_file} if data_file else {})
