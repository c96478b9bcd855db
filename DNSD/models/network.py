"""What training, evaluation and export need of a network, whatever its architecture."""
import numpy as np
import paddle.nn as nn


class Network(nn.Layer):
    """A classifier of 32x32 images: forward(images) returns class logits. Besides, the engine tells it where
    training is (begin_epoch, begin_step) and asks for its name and its inference form (folded)."""

    @classmethod
    def from_config(cls, model_config, num_classes):
        """The network of a ModelConfig, built from the keys its architecture declares (architectures.py)."""
        raise NotImplementedError

    @staticmethod
    def title(model_config):
        """The network's short name, before it is built, e.g. ResNet-110: it names the default run folder."""
        raise NotImplementedError

    def name(self):
        """What the network is called in papers and in the console, e.g. ResNet-110."""
        raise NotImplementedError

    def begin_epoch(self, epoch):
        """Called before each training epoch (1-based), for schedules that live in the network."""

    def begin_step(self, seed, epoch, step, batch_size, part=slice(None)):
        """Called before each training step (epoch 1-based, step 0-based), of which this process computes
        `part`; returns each block's activity in the step (0 to 1), the same on every rank, or an empty array."""
        return np.zeros(0)

    def first_convolutions(self):
        """{label: layer} of the convolutions whose gradients training records each epoch (the paper's Figure 7):
        here the network's first, "stem"; a network with stages adds the first of each."""
        return {"stem": next(layer for layer in self.sublayers() if isinstance(layer, nn.Conv2D))}

    def folded(self):
        """The same function with its training-time parametrisation folded into plain layers, for inference."""
        return self


def fold_batch_norm(weight, batch_norm, bias=None):
    """(weight, bias) as numpy arrays of a convolution (bias None: none) followed by batch_norm in evaluation mode,
    as one convolution: the normalisation becomes a scale of each output channel and a shift."""
    bias = np.zeros(weight.shape[0]) if bias is None else bias
    scale = batch_norm.weight.numpy() / np.sqrt(batch_norm._variance.numpy() + batch_norm._epsilon)
    shift = batch_norm.bias.numpy() - batch_norm._mean.numpy() * scale
    return weight * scale.reshape(-1, *([1] * (weight.ndim - 1))), bias * scale + shift


def conv_with(weight, bias, **options):
    """A Conv2D holding the given numpy weight (out, in / groups, k, k) and bias."""
    out_channels, in_per_group, kernel, _ = weight.shape
    conv = nn.Conv2D(in_per_group * options.get("groups", 1), out_channels, kernel, **options)
    conv.weight.set_value(weight.astype("float32"))
    conv.bias.set_value(bias.astype("float32"))
    return conv
