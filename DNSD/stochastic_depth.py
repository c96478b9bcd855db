"""Stochastic depth (Huang et al., 2016), independent of the network that uses it.

Block l of L survives a training step with probability p_l. In the paper's mode ("batch") one draw decides for the
whole mini-batch, and a block that does not survive is its shortcut alone: its residual branch is not computed at
all. In "sample" mode (timm's drop_path, torchvision's StochasticDepth "row") each example gets its own draw, so
every branch is computed and multiplied by its examples' gates. At evaluation every branch runs, and the scaling
makes a block's output the expectation of its training output.
"""
import numpy as np

SURVIVAL_MODES = ("linear", "uniform")


def survival_probabilities(num_blocks, survival_last, mode="linear"):
    """p_l for l = 1..L: linear decay p_l = 1 - (l / L) * (1 - p_L) (the paper's default), or p_l = p_L for all."""
    if mode == "uniform":
        return np.full(num_blocks, survival_last, dtype=np.float64)
    if mode == "linear":
        depth_fraction = np.arange(1, num_blocks + 1, dtype=np.float64) / num_blocks
        return 1.0 - depth_fraction * (1.0 - survival_last)
    raise ValueError(f"survival mode {mode!r} is not one of {SURVIVAL_MODES}")


def sample_gates(probabilities, rng, batch_size=None):
    """Bernoulli draws on the host from a numpy Generator: one per block (shape (L,)), shared by the mini-batch, or
    with batch_size one per block and example (shape (L, batch_size)).

    Drawing all gates before the forward pass keeps device-to-host synchronisation out of it.
    """
    shape = (len(probabilities),) if batch_size is None else (len(probabilities), batch_size)
    return rng.random(shape) < np.reshape(probabilities, (-1,) + (1,) * (len(shape) - 1))


def add_residual(shortcut, residual_branch, x, survival_probability, gate=None, scaling="test"):
    """shortcut + residual_branch(x) under stochastic depth.

    gate None (evaluation): the branch always runs.
    gate True or False (training, one gate for the batch): a closed gate skips the branch, so it costs no compute
    and its parameters get no gradient.
    gate a float tensor of 0s and 1s, one per example (training, per-sample drop path): the branch runs and each
    example's residual is multiplied by its gate.
    scaling "test" (the authors): the residual is multiplied by p_l at evaluation and left alone in training.
    scaling "train" ("inverted", as in timm's drop_path): divided by p_l in training, left alone at evaluation.
    Both give an evaluation output equal to the expected training output.
    """
    if gate is not None and not isinstance(gate, (bool, np.bool_)):
        residual = residual_branch(x) * gate.reshape([-1, 1, 1, 1])
    elif gate is not None and not gate:
        return shortcut
    else:
        residual = residual_branch(x)
    if survival_probability < 1:
        if gate is None and scaling == "test":
            residual = residual * survival_probability
        elif gate is not None and scaling == "train":
            residual = residual / survival_probability
    return shortcut + residual
