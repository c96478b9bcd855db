"""ResNet 6n+2 for 32x32 images with the option-A shortcut, its residual blocks under stochastic depth."""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from DNSD.architectures import check_depth
from DNSD.models.batch_norm import BatchNorm2D, batch_norm
from DNSD.models.network import Network
from DNSD.models.operators import blockable, conv2d, relayout
from DNSD.models.stochastic_depth import StochasticDepth
from DNSD.randomness import generator

STAGE_WIDTHS = (16, 32, 64)


def conv3x3(in_channels, out_channels, stride=1):
    # No bias: the batch norm that follows removes any constant added by the convolution.
    return nn.Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias_attr=False,
                     weight_attr=nn.initializer.KaimingNormal())


class BasicBlock(nn.Layer):
    """conv3x3 - BN - ReLU - conv3x3 - BN, added to a parameter-free shortcut, then ReLU. Where blocked, its input and
    output are in oneDNN's layout whenever DNSD's CPU operators compute it (operators.blockable)."""

    def __init__(self, in_channels, out_channels, stride, stochastic_depth, index, downsample="average",
                 blocked=False):
        super().__init__()
        self.residual = nn.Sequential(
            conv3x3(in_channels, out_channels, stride), BatchNorm2D(out_channels), nn.ReLU(),
            conv3x3(out_channels, out_channels), BatchNorm2D(out_channels),
        )
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        self.stochastic_depth, self.index = stochastic_depth, index
        self.downsample = downsample
        self.blocked = blocked

    def shortcut(self, x):
        """Option A: 2x2 average pooling (or, downsample "subsample", the top-left pixel of each 2x2 window) where the
        block downsamples, zero channels appended where it widens (both on NCHW)."""
        if self.stride == 1 and not self.extra_channels:
            return x
        x = relayout(x, blocked=False) if self.blocked else x
        if self.stride > 1 and self.downsample == "subsample":  # a 1x1 max pool: the slice's values, its gradient
            x = F.max_pool2d(x, kernel_size=1, stride=self.stride)  # twice as fast as strided_slice's on a CPU
        elif self.stride > 1:
            x = F.avg_pool2d(x, kernel_size=self.stride, stride=self.stride)
        if self.extra_channels:
            x = F.pad(x, [0, 0, 0, self.extra_channels, 0, 0, 0, 0])
        return relayout(x, blocked=True) if self.blocked else x

    def branch(self, x):
        """The residual branch: the operators of calling self.residual's layers in turn, called as functions on their
        parameters and statistics. Each layer call costs host time beyond its operator (hooks, and a warning per
        batch norm in training), which on a GPU is time the device waits for; see BENCHMARKS.md."""
        conv1, bn1, _, conv2, bn2 = self.residual
        blocked = self.blocked
        x = conv2d(x, conv1.weight, stride=self.stride, blocked_in=blocked, blocked_out=blocked)
        x = batch_norm(x, bn1, relu=True, blocked_in=blocked, blocked_out=blocked)
        x = conv2d(x, conv2.weight, blocked_in=blocked, blocked_out=blocked)
        return batch_norm(x, bn2, blocked_in=blocked, blocked_out=blocked)

    def forward(self, x):
        return F.relu(self.stochastic_depth(self.index, self.shortcut(x), self.branch, x, self.training))


class CifarResNet(Network):
    """The ResNet of He et al. (2016) for CIFAR: a 3x3 stem, three stages of n blocks, global pooling, a linear layer.
    Its StochasticDepth draws the gates of each training step (begin_step) and its blocks ask it for their output."""

    def __init__(self, depth=110, num_classes=10, survival_last=0.5, survival_mode="linear", residual_scaling="test",
                 drop_mode="batch", bn_weight_init="ones", shortcut_downsample="average"):
        super().__init__()
        check_depth("resnet", depth)
        self.depth = depth
        blocks_per_stage = (depth - 2) // 6
        self.stochastic_depth = StochasticDepth(3 * blocks_per_stage, survival_last, survival_mode, drop_mode,
                                                residual_scaling)
        self.stem = nn.Sequential(conv3x3(3, STAGE_WIDTHS[0]), BatchNorm2D(STAGE_WIDTHS[0]), nn.ReLU())
        # Between its stem and its pooling, every activation stays in oneDNN's layout under DNSD's CPU operators.
        self.blocked = all(blockable(width) for width in STAGE_WIDTHS)
        blocks = []
        in_channels = STAGE_WIDTHS[0]
        for stage, width in enumerate(STAGE_WIDTHS):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride, self.stochastic_depth, len(blocks),
                                         shortcut_downsample, self.blocked))
                in_channels = width
        self.blocks = nn.LayerList(blocks)
        self.pool = nn.AdaptiveAvgPool2D(1)
        # Torch's default initialisation of nn.Linear, which the authors' code kept.
        bound = 1 / math.sqrt(in_channels)
        uniform = nn.initializer.Uniform(-bound, bound)
        self.fc = nn.Linear(in_channels, num_classes, weight_attr=uniform,
                            bias_attr=paddle.ParamAttr(initializer=uniform))
        if bn_weight_init == "uniform":
            # Torch 7's SpatialBatchNormalization draws its weights from U[0, 1); the authors never reset them.
            for layer in self.sublayers():
                if isinstance(layer, nn.BatchNorm2D):
                    layer.weight.set_value(paddle.uniform(layer.weight.shape, min=0.0, max=1.0))

    @classmethod
    def from_config(cls, model_config, num_classes):
        return cls(model_config.depth, num_classes, model_config.survival_last, model_config.survival_mode,
                   model_config.residual_scaling, model_config.drop_mode, model_config.bn_weight_init,
                   model_config.shortcut_downsample)

    @property
    def num_blocks(self):
        return len(self.blocks)

    @staticmethod
    def title(model_config):
        return f"ResNet-{model_config.depth}"

    def name(self):
        return (f"ResNet-{self.depth} ({self.num_blocks} blocks, expected active "
                f"{self.stochastic_depth.probabilities.sum():.2f})")

    def first_convolutions(self):
        per_stage = self.num_blocks // len(STAGE_WIDTHS)
        stages = {f"stage{stage + 1}": self.blocks[stage * per_stage].residual[0] for stage in range(len(STAGE_WIDTHS))}
        return {"stem": self.stem[0], **stages}

    def begin_step(self, seed, epoch, step, batch_size, part=slice(None)):
        return self.stochastic_depth.begin_step(generator(seed, "gates", epoch, step), batch_size, part)

    def forward(self, images):
        conv, bn, _ = self.stem
        blocked = self.blocked
        x = batch_norm(conv2d(images, conv.weight, blocked_out=blocked), bn, relu=True, blocked_in=blocked,
                       blocked_out=blocked)
        for block in self.blocks:
            x = block(x)
        x = relayout(x, blocked=False) if blocked else x
        return self.fc(paddle.flatten(self.pool(x), 1))
