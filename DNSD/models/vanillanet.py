"""VanillaNet (Chen et al., 2023) for 32x32 images: a shallow network without shortcuts, trained deep.

Deep training: every layer is trained as two convolutions joined by an activation relu(x) - lambda * relu(-x),
whose lambda goes from 0 (ReLU) to 1 (identity) over the first deep_training_epochs; once it is 1, the two
convolutions compose into one, and the deploy network has half the layers. Each layer ends with the
series-informed activation: ReLU, then a depthwise 7x7 convolution that mixes each activation with its
neighbours, then batch norm. For inference, the pairs are merged and every batch norm folded into a convolution.
Layout for CIFAR: a 3x3 stem at 32k channels, then depth - 2 blocks (1x1 convolutions; the first three double the
channels and halve the resolution with 2x2 max pooling, the others keep both), then a 1x1 classifier.
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from DNSD.architectures import check_depth
from DNSD.models.batch_norm import BatchNorm2D
from DNSD.models.network import Network, conv_with, fold_batch_norm

BASE_WIDTH = 32
DOWNSAMPLINGS = 3  # 32x32 -> 4x4
ACTIVATION_REACH = 3  # the series-informed activation mixes neighbours up to 3 pixels away (7x7)


def conv_bn(in_channels, out_channels, kernel_size):
    return nn.Sequential(nn.Conv2D(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                   weight_attr=nn.initializer.TruncatedNormal(std=0.02),
                                   bias_attr=nn.initializer.Constant(0.0)),
                         BatchNorm2D(out_channels, epsilon=1e-6))


def folded_conv_bn(layer):
    """(weight, bias) of a conv_bn in evaluation mode as one convolution."""
    conv, batch_norm = layer[0], layer[1]
    return fold_batch_norm(conv.weight.numpy(), batch_norm, conv.bias.numpy())


def compose(first, second):
    """(weight, bias) of the convolution `second` (1x1) applied after `first` (any kernel), with nothing between."""
    (weight_1, bias_1), (weight_2, bias_2) = first, second
    mix = weight_2[:, :, 0, 0]
    return np.einsum("om,mihw->oihw", mix, weight_1), mix @ bias_1 + bias_2


def annealed_relu(x, slope):
    """relu(x) - slope * relu(-x): ReLU at slope 0, the identity at slope 1 (a leaky ReLU with a tensor slope)."""
    return F.relu(x) - slope * F.relu(-x)


def pool_and_activate(x, downsample, activation):
    """The end of every layer, in training and deploy form alike."""
    return activation(F.max_pool2d(x, 2) if downsample else x)


class SeriesActivation(nn.Layer):
    """ReLU, a depthwise (2 * reach + 1)^2 convolution, batch norm."""

    def __init__(self, channels):
        super().__init__()
        size = 2 * ACTIVATION_REACH + 1
        self.weight = self.create_parameter([channels, 1, size, size],
                                            default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        self.bn = BatchNorm2D(channels, epsilon=1e-6)

    def forward(self, x):
        return self.bn(F.conv2d(F.relu(x), self.weight, padding=ACTIVATION_REACH, groups=self.weight.shape[0]))

    def folded(self):
        weight, bias = fold_batch_norm(self.weight.numpy(), self.bn)
        return nn.Sequential(nn.ReLU(), conv_with(weight, bias, padding=ACTIVATION_REACH, groups=weight.shape[0]))


class VanillaLayer(nn.Layer):
    """Two convolutions with batch norm joined by the annealed activation, pooling, the series activation."""

    def __init__(self, in_channels, out_channels, kernel_size=1, downsample=False):
        super().__init__()
        # The stem's 3x3 convolution widens; a 1x1 layer keeps its width until the second convolution.
        middle = out_channels if kernel_size > 1 else in_channels
        self.first = conv_bn(in_channels, middle, kernel_size)
        self.second = conv_bn(middle, out_channels, 1)
        self.downsample = downsample
        self.activation = SeriesActivation(out_channels)

    def forward(self, x, slope):
        return pool_and_activate(self.second(annealed_relu(self.first(x), slope)), self.downsample, self.activation)

    def merged(self):
        """The deploy layer: the two convolutions as one, batch norms folded (valid once the slope is 1)."""
        weight, bias = compose(folded_conv_bn(self.first), folded_conv_bn(self.second))
        return DeployLayer(conv_with(weight, bias, padding=weight.shape[-1] // 2), self.downsample,
                           self.activation.folded())


class DeployLayer(nn.Layer):
    def __init__(self, conv, downsample, activation):
        super().__init__()
        self.conv, self.downsample, self.activation = conv, downsample, activation

    def forward(self, x, slope=None):
        return pool_and_activate(self.conv(x), self.downsample, self.activation)


class VanillaNet(Network):
    def __init__(self, depth=5, width=4, num_classes=10, deep_training_epochs=100):
        super().__init__()
        check_depth("vanillanet", depth)
        self.depth, self.width, self.deep_training_epochs = depth, width, deep_training_epochs
        channels = BASE_WIDTH * width
        self.stem = VanillaLayer(3, channels, kernel_size=3)
        layers = []
        for index in range(depth - 2):
            out_channels = channels * 2 if index < DOWNSAMPLINGS else channels
            layers.append(VanillaLayer(channels, out_channels, downsample=index < DOWNSAMPLINGS))
            channels = out_channels
        self.layers = nn.LayerList(layers)
        self.classifier_first = conv_bn(channels, num_classes, 1)
        self.classifier_second = nn.Conv2D(num_classes, num_classes, 1,
                                           weight_attr=nn.initializer.TruncatedNormal(std=0.02),
                                           bias_attr=nn.initializer.Constant(0.0))
        # The annealed activations' slope: a buffer, so that checkpoints keep it and evaluation uses the trained one.
        self.register_buffer("slope", paddle.zeros([1]))

    @classmethod
    def from_config(cls, model_config, num_classes):
        return cls(model_config.depth, model_config.width, num_classes, model_config.deep_training_epochs)

    @staticmethod
    def title(model_config):
        return f"VanillaNet-{model_config.depth}" + (f"-{model_config.width}" if model_config.width > 1 else "")

    def name(self):
        return f"VanillaNet-{self.depth} (width {self.width})"

    def begin_epoch(self, epoch):
        """The slope of training epoch `epoch` (1-based): 0 in the first, rising linearly to 1."""
        self.slope.set_value(np.array([min(1.0, (epoch - 1) / self.deep_training_epochs)], np.float32))

    def forward(self, images):
        x = self.stem(images, self.slope)
        for layer in self.layers:
            x = layer(x, self.slope)
        x = F.adaptive_avg_pool2d(x, 1)
        x = self.classifier_second(annealed_relu(self.classifier_first(x), self.slope))
        return paddle.flatten(x, 1)

    def folded(self):
        """The deploy network: each layer's pair merged, every batch norm folded. Before the slope reaches 1 the
        pairs cannot merge, and the network is returned as it is."""
        if self.slope.item() < 1:
            return self
        folded = VanillaNet(self.depth, self.width, self.classifier_second.weight.shape[0], self.deep_training_epochs)
        folded.set_state_dict(self.state_dict())
        folded.stem = self.stem.merged()
        for index, layer in enumerate(self.layers):
            folded.layers[index] = layer.merged()
        weight, bias = compose(folded_conv_bn(self.classifier_first),
                               (self.classifier_second.weight.numpy(), self.classifier_second.bias.numpy()))
        folded.classifier_first = conv_with(weight, bias)
        folded.classifier_second = nn.Identity()
        folded.eval()
        return folded
