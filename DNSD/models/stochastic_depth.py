"""Stochastic depth (Huang et al., 2016): one object per network owns it, as the authors' ResidualDrop owns its
death rate and its gate, and each residual block asks it for its output, as timm's block calls drop_path.

Block l of L survives a training step with probability p_l. In the paper's mode ("batch") one draw decides for the
whole mini-batch, and a block that does not survive is its shortcut alone: its residual branch is not computed at
all. In "sample" mode (timm's drop_path, torchvision's StochasticDepth "row") each example gets its own draw, so
every branch is computed and multiplied by its examples' gates. At evaluation every branch runs, and the scaling
makes a block's output the expectation of its training output.
"""
import numpy as np
import paddle

from DNSD.schema import SURVIVAL_MODES


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


class StochasticDepth:
    """The stochastic depth of one network's blocks: their survival probabilities, the gates of the current training
    step, and the gated residual sum that block `index` asks for.

    drop_mode "batch" (the paper) or "sample" (per example); residual_scaling "test" (the authors: multiply the
    residual by p_l at evaluation) or "train" ("inverted", timm's: divide it by p_l in training). Both make the
    evaluation output the expectation of the training output.
    """

    def __init__(self, num_blocks, survival_last=0.5, survival_mode="linear", drop_mode="batch",
                 residual_scaling="test"):
        self.probabilities = survival_probabilities(num_blocks, survival_last, survival_mode)
        self.per_example = drop_mode == "sample"
        self.scaling = residual_scaling
        self.gates = None  # those of the current training step: drawn by begin_step, used by one forward pass

    def begin_step(self, rng, batch_size, part=slice(None)):
        """Draw the gates of a training step from rng, for a whole mini-batch of batch_size images, and keep those of
        this data-parallel rank's part of it (a slice). Returns the share of each block's gates that are open, the
        same on every rank."""
        if not self.per_example:
            gates = sample_gates(self.probabilities, rng)
            self.gates = gates.tolist()
            return gates.astype(np.float64)
        gates = sample_gates(self.probabilities, rng, batch_size)
        # One copy to the device for the whole step: row l holds block l's gate of each of this rank's examples.
        self.gates = paddle.to_tensor(gates[:, part].astype("float32"))
        return gates.mean(axis=1)

    def __call__(self, index, shortcut, branch, x, training):
        """shortcut + branch(x) for block `index` (0-based): gated in training, scaled at evaluation."""
        survival = float(self.probabilities[index])
        if not training:
            residual = branch(x)
            return shortcut + (residual * survival if self.scaling == "test" and survival < 1 else residual)
        if self.gates is None:
            raise RuntimeError("a training-mode forward pass needs the gates of its step: call begin_step before it")
        gate = self.gates[index]
        if index == len(self.probabilities) - 1:
            self.gates = None  # a step's gates serve its forward pass only: the next one draws its own
        if self.per_example:
            residual = branch(x) * gate.reshape([-1, 1, 1, 1])
        elif gate:
            residual = branch(x)
        else:
            return shortcut  # a dropped block: its branch is not computed and its parameters get no gradient
        return shortcut + (residual / survival if self.scaling == "train" and survival < 1 else residual)
