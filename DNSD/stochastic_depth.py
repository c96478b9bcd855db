"""Stochastic depth (Huang et al., 2016), independent of the network that uses it.

Block l of L survives a training step with probability p_l. When it does not, its residual branch is not computed
at all: the block is its shortcut alone. At evaluation every branch runs, scaled by p_l, so that a block's output is
the expectation of its training output.
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


def sample_gates(probabilities, rng):
    """One Bernoulli draw per block, shared by the whole mini-batch, drawn on the host from a numpy Generator.

    Drawing all gates before the forward pass keeps device-to-host synchronisation out of it.
    """
    return rng.random(len(probabilities)) < probabilities


def add_residual(shortcut, residual_branch, x, survival_probability, gate=None, scaling="test"):
    """shortcut + residual_branch(x) under stochastic depth with one gate for the whole batch.

    gate True or False (training): a closed gate skips the branch, so it costs no compute and its parameters get
    no gradient. gate None (evaluation): the branch always runs.
    scaling "test" (the authors): the residual is multiplied by p_l at evaluation and left alone in training.
    scaling "train" ("inverted", as in timm's DropPath): divided by p_l in training, left alone at evaluation.
    Both give an evaluation output equal to the expected training output. Unlike timm's drop_path, which draws a
    gate per example and still computes every branch, a per-batch gate saves the compute of every dropped block.
    """
    if gate is not None and not gate:
        return shortcut
    residual = residual_branch(x)
    if survival_probability < 1:
        if gate is None and scaling == "test":
            residual = residual * survival_probability
        elif gate is not None and scaling == "train":
            residual = residual / survival_probability
    return shortcut + residual
