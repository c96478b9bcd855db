"""What training, evaluation and export need of a network, whatever its architecture."""
import numpy as np
import paddle.nn as nn


class Network(nn.Layer):
    """A classifier of 32x32 images: forward(images, gates=None) returns class logits.

    gates: in training, the stochastic-depth gates of the step, drawn with sample_gates from
    survival_probabilities (one per block, or one per block and example when gates_per_example); None at
    evaluation. A network without stochastic depth has no survival probabilities and gets no gates.
    """

    survival_probabilities = np.zeros(0)
    gates_per_example = False

    def name(self):
        """What the network is called in papers and in the console, e.g. ResNet-110."""
        raise NotImplementedError

    def begin_epoch(self, epoch):
        """Called before each training epoch (1-based), for schedules that live in the network."""

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
