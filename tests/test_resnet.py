"""The CIFAR ResNet (DNSD/models/resnet.py) against PAPER.md: option-A shortcut, depth, parameters, initialisation,
and blocks that run as their stochastic depth says."""
import numpy as np
import paddle
import pytest

from DNSD.models.resnet import BasicBlock, CifarResNet
from DNSD.models.stochastic_depth import StochasticDepth


def test_option_a_shortcut_pools_two_by_two_and_appends_zero_channels():
    block = BasicBlock(2, 4, 2, StochasticDepth(1, 1.0), 0)
    x = paddle.arange(2 * 2 * 4 * 4, dtype="float32").reshape([2, 2, 4, 4])
    shortcut = block.shortcut(x).numpy()
    assert shortcut.shape == (2, 4, 2, 2)
    expected = x.numpy().reshape(2, 2, 2, 2, 2, 2).mean(axis=(3, 5))
    assert np.allclose(shortcut[:, :2], expected)
    assert not np.any(shortcut[:, 2:])
    block.eval()
    assert block(x).shape == [2, 4, 2, 2]


def test_identity_shortcut_where_shape_is_kept():
    block = BasicBlock(4, 4, 1, StochasticDepth(1, 1.0), 0)
    x = paddle.rand([1, 4, 5, 5])
    assert np.array_equal(block.shortcut(x).numpy(), x.numpy())


def expected_parameter_count(n, classes=10):
    """Counted from PAPER.md's description: bias-free 3x3 convolutions, two BN parameters per channel, a linear head."""
    count = 3 * 16 * 9 + 2 * 16
    in_channels = 16
    for width in (16, 32, 64):
        for _ in range(n):
            count += in_channels * width * 9 + width * width * 9 + 4 * width
            in_channels = width
    return count + 64 * classes + classes


def test_resnet110_has_54_blocks_and_about_1_73_million_parameters():
    model = CifarResNet(110)
    count = sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable)
    assert model.num_blocks == 54
    assert count == expected_parameter_count(18)
    assert abs(count - 1.73e6) < 0.01e6


def test_begin_step_draws_the_gates_of_seed_epoch_and_step():
    model = CifarResNet(14)
    first = model.begin_step(seed=3, epoch=2, step=5, batch_size=8)
    gates = list(model.stochastic_depth.gates)
    assert np.array_equal(first, np.array(gates, dtype=np.float64))
    model.begin_step(seed=3, epoch=2, step=6, batch_size=8)
    again = model.begin_step(seed=3, epoch=2, step=5, batch_size=8)
    assert model.stochastic_depth.gates == gates and np.array_equal(again, first)


def test_resnet_gates_select_blocks_and_all_closed_gates_leave_only_shortcuts():
    paddle.seed(0)
    model = CifarResNet(14, num_classes=10, survival_last=0.5)  # n = 2: 6 blocks
    model.train()
    for layer in model.sublayers():  # batch norm with running statistics, so that a block is the same function
        if isinstance(layer, paddle.nn.BatchNorm2D):
            layer.eval()
    images = paddle.rand([2, 3, 32, 32])
    ran = []
    for index, block in enumerate(model.blocks):
        block.residual.register_forward_post_hook(lambda layer, inputs, output, index=index: ran.append(index))
    model.stochastic_depth.gates = [True, False, True, False, False, True]
    model(images)
    assert ran == [0, 2, 5]
    ran.clear()
    model.stochastic_depth.gates = [False] * 6
    logits = model(images)
    assert ran == []
    stem = model.stem(images)
    for block in model.blocks:
        stem = block.shortcut(stem)
    expected = model.fc(paddle.flatten(model.pool(stem), 1))
    assert np.allclose(logits.numpy(), expected.numpy(), atol=1e-6)


def test_convolutions_use_kaiming_normal_with_relu_gain():
    paddle.seed(0)
    model = CifarResNet(20)
    weight = model.blocks[-1].residual[3].weight.numpy()  # 64 -> 64 channels, 3x3: fan-in 576
    assert weight.std() == pytest.approx(np.sqrt(2 / 576), rel=0.05)
    assert abs(weight.mean()) < 0.005
    assert model.blocks[0].residual[1].weight.numpy().tolist() == [1.0] * 16
