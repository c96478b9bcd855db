"""ResNet 6n+2 for 32x32 images with the option-A shortcut, each residual block under stochastic depth."""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from DNSD.network import Network
from DNSD.stochastic_depth import add_residual, survival_probabilities

STAGE_WIDTHS = (16, 32, 64)


def conv3x3(in_channels, out_channels, stride=1):
    # No bias: the batch norm that follows removes any constant added by the convolution.
    return nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias_attr=False,
                     weight_attr=nn.initializer.KaimingNormal())


class BasicBlock(nn.Layer):
    """conv3x3 - BN - ReLU - conv3x3 - BN, added to a parameter-free shortcut, then ReLU."""

    def __init__(self, in_channels, out_channels, stride, survival_probability, residual_scaling="test"):
        super().__init__()
        self.residual = nn.Sequential(
            conv3x3(in_channels, out_channels, stride), nn.BatchNorm2D(out_channels), nn.ReLU(),
            conv3x3(out_channels, out_channels), nn.BatchNorm2D(out_channels),
        )
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.survival_probability = float(survival_probability)
        self.residual_scaling = residual_scaling

    def shortcut(self, x):
        """Option A: 2x2 average pooling where the block downsamples, zero channels appended where it widens."""
        if self.stride > 1:
            x = F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride)
        if self.extra_channels:
            x = F.pad(x, [0, 0, 0, self.extra_channels, 0, 0, 0, 0])
        return x

    def forward(self, x, gate=None):
        return F.relu(add_residual(self.shortcut(x), self.residual, x, self.survival_probability, gate,
                                   self.residual_scaling))


class CifarResNet(Network):
    """The ResNet of He et al. (2016) for CIFAR: a 3x3 stem, three stages of n blocks, global pooling, a linear layer.

    forward(images, gates): gates holds one bool per block (drop_mode "batch"), or one per block and example
    ("sample"), for a training step (see DNSD.stochastic_depth); gates=None runs every block, with the
    evaluation-time scaling.
    """

    def __init__(self, depth=110, num_classes=10, survival_last=0.5, survival_mode="linear", residual_scaling="test",
                 drop_mode="batch"):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 with n >= 1, got {depth}")
        self.depth = depth
        blocks_per_stage = (depth - 2) // 6
        self.survival_probabilities = survival_probabilities(3 * blocks_per_stage, survival_last, survival_mode)
        self.gates_per_example = drop_mode == "sample"
        self.stem = nn.Sequential(conv3x3(3, STAGE_WIDTHS[0]), nn.BatchNorm2D(STAGE_WIDTHS[0]), nn.ReLU())
        blocks = []
        in_channels = STAGE_WIDTHS[0]
        for stage, width in enumerate(STAGE_WIDTHS):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride, self.survival_probabilities[len(blocks)],
                                         residual_scaling))
                in_channels = width
        self.blocks = nn.LayerList(blocks)
        self.pool = nn.AdaptiveAvgPool2D(1)
        # Torch's default initialisation of nn.Linear, which the authors' code kept.
        bound = 1 / math.sqrt(in_channels)
        uniform = nn.initializer.Uniform(-bound, bound)
        self.fc = nn.Linear(in_channels, num_classes, weight_attr=uniform, bias_attr=paddle.ParamAttr(initializer=uniform))

    @property
    def num_blocks(self):
        return len(self.blocks)

    def name(self):
        return (f"ResNet-{self.depth} ({self.num_blocks} blocks, expected active "
                f"{self.survival_probabilities.sum():.2f})")

    def forward(self, images, gates=None):
        if gates is None:
            gates = [None] * self.num_blocks
        elif self.gates_per_example:
            # One copy to the device for the whole step: row l holds block l's gate of each example.
            gates = paddle.to_tensor(gates.astype("float32"))
        else:
            gates = [bool(gate) for gate in gates]
        x = self.stem(images)
        for block, gate in zip(self.blocks, gates):
            x = block(x, gate)
        return self.fc(paddle.flatten(self.pool(x), 1))
