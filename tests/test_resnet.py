"""The CIFAR ResNet (DNSD/models/resnet.py) against PAPER.md: option-A shortcut, depth, parameters, initialisation,
and blocks that run as their stochastic depth says."""
import numpy as np
import paddle
import pytest

from DNSD.models.resnet import BasicBlock, CifarResNet
from DNSD.models.stochastic_depth import StochasticDepth
from DNSD.schema import Config


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
        def branch(x, index=index, computed=block.branch):
            ran.append(index)
            return computed(x)
        block.branch = branch
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


def test_the_authors_batch_norm_weights_start_uniform_in_zero_one():
    paddle.seed(0)
    model = CifarResNet(110, bn_weight_init="uniform")
    weights = np.concatenate([layer.weight.numpy() for layer in model.sublayers()
                              if isinstance(layer, paddle.nn.BatchNorm2D)])
    assert len(weights) == 16 + 54 * (2 * 16 + 2 * 32 + 2 * 64) // 3  # every batch norm's channels: 4,048
    assert weights.min() >= 0 and weights.max() < 1
    # U[0, 1): mean 1/2 and variance 1/12, within 5 standard errors for 4,048 draws.
    assert abs(weights.mean() - 0.5) < 5 * np.sqrt(1 / 12 / len(weights))
    assert abs(weights.var() - 1 / 12) < 0.01
    biases = np.concatenate([layer.bias.numpy() for layer in model.sublayers()
                             if isinstance(layer, paddle.nn.BatchNorm2D)])
    assert not biases.any()
    paddle.seed(0)
    assert np.array_equal(CifarResNet(110, bn_weight_init="uniform").blocks[3].residual[1].weight.numpy(),
                          model.blocks[3].residual[1].weight.numpy())  # drawn from the run's seed


def test_the_2016_shortcut_keeps_the_top_left_pixel_of_each_window():
    block = BasicBlock(2, 4, 2, StochasticDepth(1, 1.0), 0, downsample="subsample")
    x = paddle.arange(2 * 2 * 4 * 4, dtype="float32").reshape([2, 2, 4, 4])
    shortcut = block.shortcut(x).numpy()
    # By hand: rows 0 and 2, columns 0 and 2 of each channel, then two zero channels.
    assert np.array_equal(shortcut[:, :2], x.numpy()[:, :, [0, 2]][:, :, :, [0, 2]])
    assert shortcut[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert not np.any(shortcut[:, 2:])
    x.stop_gradient = False
    [gradient] = paddle.grad(block.shortcut(x).sum(), [x])
    kept = np.zeros((4, 4), dtype=np.float32)
    kept[::2, ::2] = 1  # the gradient reaches the kept pixels alone
    assert np.array_equal(gradient.numpy(), np.broadcast_to(kept, (2, 2, 4, 4)))


def test_the_papers_configs_are_the_2016_model_and_the_2017_configs_differ_in_the_model_alone():
    """The authors' code: every 2016 commit, the one behind 5.25 % included, used U[0, 1) weights and the
    subsampling shortcut."""
    from DNSD.config import shipped_config

    for name in ("resnet110_sd", "resnet110_baseline", "resnet1202_sd", "resnet110_sd_cifar100", "resnet152_sd_svhn",
                 "resnet152_baseline_svhn", "figure8_cifar10"):
        model = shipped_config(name).model
        assert (model.bn_weight_init, model.shortcut_downsample) == ("uniform", "subsample")
    for name in ("resnet110_sd", "resnet110_baseline"):
        paper, later = shipped_config(name).to_dict(), shipped_config(f"{name}_2017").to_dict()
        assert (later["model"]["bn_weight_init"], later["model"]["shortcut_downsample"]) == ("ones", "average")
        assert {**later["model"], "bn_weight_init": "uniform", "shortcut_downsample": "subsample"} == paper["model"]
        assert {key: value for key, value in later.items() if key != "model"} == \
            {key: value for key, value in paper.items() if key != "model"}


def test_a_stored_config_without_the_2016_keys_was_trained_on_the_model_of_its_time():
    from DNSD.config import config_from_dict

    stored = Config().to_dict()
    del stored["model"]["bn_weight_init"], stored["model"]["shortcut_downsample"], stored["train"]["sync_batch_norm"]
    config = config_from_dict(stored)
    assert (config.model.bn_weight_init, config.model.shortcut_downsample) == ("ones", "average")
    assert config.train.sync_batch_norm is False  # a data-parallel run before 1.5.0 used each rank's statistics
    stored["model"].update(arch="diracnet", depth=34)  # keys of ResNets alone: another network keeps the defaults
    assert config_from_dict(stored).model.arch == "diracnet" and not config_from_dict(stored).train.sync_batch_norm


@pytest.mark.parametrize("stride", [1, 2])
def test_the_branch_computes_what_calling_its_layers_computes(stride):
    """BasicBlock.branch calls conv2d and batch_norm as functions on the layers' parameters: the output, the
    gradients and the batch-norm statistics must be those of calling self.residual's layers, bit for bit, in
    training and in evaluation."""
    paddle.seed(3)
    block = BasicBlock(16, 32 if stride == 2 else 16, stride, StochasticDepth(1, 1.0), 0)
    twin = BasicBlock(16, 32 if stride == 2 else 16, stride, StochasticDepth(1, 1.0), 0)
    twin.set_state_dict(block.state_dict())
    images = paddle.to_tensor(np.random.default_rng(0).normal(size=(4, 16, 8, 8)).astype(np.float32))
    for training in (True, False):
        block.train() if training else block.eval()
        twin.train() if training else twin.eval()
        ours, theirs = block.branch(images), twin.residual(images)
        assert np.array_equal(ours.numpy(), theirs.numpy())
        if training:
            ours.sum().backward()
            theirs.sum().backward()
            for (name, parameter), other in zip(block.named_parameters(), twin.parameters()):
                if parameter.stop_gradient:  # the running statistics: parameters that take no gradient
                    assert parameter.grad is None and other.grad is None, name
                else:
                    assert np.array_equal(parameter.grad.numpy(), other.grad.numpy()), name
    for (name, value), other in zip(block.state_dict().items(), twin.state_dict().values()):
        assert np.array_equal(value.numpy(), other.numpy()), name  # the running statistics moved alike
    assert not np.array_equal(block.state_dict()["residual.1._mean"].numpy(), np.zeros(block.residual[1]._mean.shape))
