"""DiracNet (Zagoruyko and Komodakis, 2017) for 32x32 images: a plain network without skip connections.

Each convolution is parametrised as alpha * delta + beta * normalize(W), where delta passes its input through, and
is fed by NCReLU, which keeps the negative part of its input so that delta can pass all of it. The identity that a
ResNet adds by a shortcut is thus inside the weight, and folds into an ordinary convolution for inference.
Layout as in the authors' CIFAR code: a 3x3 stem, three groups of 2n blocks at 16k, 32k and 64k channels with 2x2
max pooling between them, global average pooling and a linear layer; depth 6n+4, width k (DiracNet-34-2: n = 5,
k = 2).
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from DNSD.architectures import check_depth
from DNSD.models.batch_norm import BatchNorm2D
from DNSD.models.network import Network, conv_with, fold_batch_norm
from DNSD.models.operators import conv2d

GROUP_WIDTHS = (16, 32, 64)


def ncrelu(x):
    """concat(relu(x), min(x, 0)) over channels: twice the channels, nothing of x lost."""
    return paddle.concat([F.relu(x), -F.relu(-x)], axis=1)


def dirac_delta(out_channels, in_channels, kernel_size):
    """The weight of a convolution that passes its input through. With in = 2 * out (after NCReLU), output channel
    c adds input channels c and c + out, which gives x back from ncrelu(x); with out = in it is the identity."""
    size = min(out_channels, in_channels)
    delta = np.zeros((size, size, kernel_size, kernel_size), np.float32)
    delta[np.arange(size), np.arange(size), kernel_size // 2, kernel_size // 2] = 1
    return np.tile(delta, (max(out_channels // in_channels, 1), max(in_channels // out_channels, 1), 1, 1))


class DiracConv(nn.Layer):
    """A 3x3 convolution with weight alpha * delta + beta * W / |W| (each output filter normalised), stride 1."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = self.create_parameter([out_channels, in_channels, 3, 3],
                                            default_initializer=nn.initializer.Normal(std=0.1))
        # The authors' initial values: the block starts close to the identity.
        self.alpha = self.create_parameter([1], default_initializer=nn.initializer.Constant(5.0))
        self.beta = self.create_parameter([1], default_initializer=nn.initializer.Constant(1e-3))
        self.register_buffer("delta", paddle.to_tensor(dirac_delta(out_channels, in_channels, 3)), persistable=False)

    def effective_weight(self):
        filters = F.normalize(self.weight.reshape([self.weight.shape[0], -1]), axis=1).reshape(self.weight.shape)
        return self.alpha * self.delta + self.beta * filters

    def forward(self, x):
        return conv2d(x, self.effective_weight())


class DiracBlock(nn.Layer):
    """NCReLU, Dirac-parametrised convolution, batch norm."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = DiracConv(2 * in_channels, out_channels)
        self.bn = BatchNorm2D(out_channels)

    def forward(self, x):
        return self.bn(self.conv(ncrelu(x)))

    def folded(self):
        weight, bias = fold_batch_norm(self.conv.effective_weight().numpy(), self.bn)
        return FoldedBlock(conv_with(weight, bias, padding=1))


class FoldedBlock(nn.Layer):
    """A DiracBlock for inference: NCReLU and one ordinary convolution."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(ncrelu(x))


class DiracNet(Network):
    def __init__(self, depth=34, width=2, num_classes=10):
        super().__init__()
        check_depth("diracnet", depth)
        self.depth, self.width = depth, width
        widths = [base * width for base in GROUP_WIDTHS]
        self.stem = nn.Sequential(
            nn.Conv2D(3, widths[0], 3, padding=1, bias_attr=False, weight_attr=nn.initializer.KaimingNormal()),
            BatchNorm2D(widths[0]), nn.ReLU())
        blocks_per_group = 2 * ((depth - 4) // 6)
        channels, groups = widths[0], []
        for group_width in widths:
            groups.append(nn.LayerList([DiracBlock(channels if index == 0 else group_width, group_width)
                                        for index in range(blocks_per_group)]))
            channels = group_width
        self.groups = nn.LayerList(groups)
        self.pool = nn.AdaptiveAvgPool2D(1)
        # As the authors' code: Kaiming normal weights, zero bias.
        self.fc = nn.Linear(channels, num_classes, weight_attr=nn.initializer.KaimingNormal(),
                            bias_attr=nn.initializer.Constant(0.0))

    @classmethod
    def from_config(cls, model_config, num_classes):
        return cls(model_config.depth, model_config.width, num_classes)

    @staticmethod
    def title(model_config):
        return f"DiracNet-{model_config.depth}-{model_config.width}"

    def name(self):
        return f"DiracNet-{self.depth}-{self.width}"

    def forward(self, images):
        x = self.stem(images)
        for index, group in enumerate(self.groups):
            if index:
                x = F.max_pool2d(x, 2)
            for block in group:
                x = block(x)
        return self.fc(paddle.flatten(self.pool(x), 1))

    def folded(self):
        """Every Dirac parametrisation and batch norm folded into plain convolutions with bias (use in eval mode)."""
        folded = DiracNet(self.depth, self.width, self.fc.weight.shape[1])
        folded.set_state_dict(self.state_dict())
        conv, batch_norm = self.stem[0], self.stem[1]
        weight, bias = fold_batch_norm(conv.weight.numpy(), batch_norm)
        folded.stem = nn.Sequential(conv_with(weight, bias, padding=1), nn.ReLU())
        for group, source in zip(folded.groups, self.groups):
            for index, block in enumerate(source):
                group[index] = block.folded()
        folded.eval()
        return folded
