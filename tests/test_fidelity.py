"""Points of the authors' Torch code that no other test pins down (docs/fidelity.md names every point's test): the
linear layer's and batch norm's Torch defaults, ReLU after the addition, the zero fill after normalisation, Torch's
Nesterov SGD, a dropped block's weight decay and momentum, and the running variance, a known difference."""
import math

import numpy as np
import paddle
import pytest

from DNSD.datasets import Splits
from DNSD.datasets.pipeline import Dataset, Normalizer, TrainingBatches
from DNSD.models.resnet import CifarResNet
from test_trainer import tiny_trainer


def test_the_linear_layer_keeps_torchs_default_initialisation():
    paddle.seed(0)
    fc = CifarResNet(110, num_classes=100).fc
    bound = 1 / math.sqrt(64)  # Torch's nn.Linear(64, classes): U(-1/sqrt(64), 1/sqrt(64)) for weight and bias
    for values in (fc.weight.numpy(), fc.bias.numpy()):
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.9 * bound
    assert fc.weight.numpy().std() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform, not normal


def test_batch_norm_has_torchs_momentum_and_epsilon():
    model = CifarResNet(20)
    norms = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.BatchNorm2D)]
    assert len(norms) == 1 + 2 * 9
    # Torch's momentum 0.1 weighs the new batch; Paddle's momentum weighs the running value.
    assert {(layer._momentum, layer._epsilon) for layer in norms} == {(0.9, 1e-5)}


def test_a_block_adds_the_residual_to_the_shortcut_then_applies_relu():
    paddle.seed(0)
    model = CifarResNet(8)
    model.eval()
    block = model.blocks[0]
    x = paddle.randn([2, 16, 8, 8])
    residual = block.branch(x) * float(model.stochastic_depth.probabilities[0])
    expected = paddle.nn.functional.relu(block.shortcut(x) + residual).numpy()
    assert (block.shortcut(x) + residual).numpy().min() < 0  # so the test can tell ReLU before from after
    assert np.array_equal(block(x).numpy(), expected)


def test_the_shift_fills_with_zeros_after_normalisation_so_with_the_mean_image():
    pixels = np.full((64, 3, 32, 32), 200, np.uint8)
    normalizer = Normalizer(np.full((3, 32, 32), 100.0), 50.0)  # 200 -> 2.0; a fill before normalising -> -2.0
    data = Splits(Dataset(pixels, np.zeros(64, np.int64)), None, None, normalizer)
    images = np.concatenate([batch for batch, _ in TrainingBatches(data, 64, True, seed=0, epoch=1)])
    assert set(np.unique(images)) == {0.0, 2.0}
    filled = (images == 0).all(axis=(1, 2, 3))
    assert not filled.any() and (images == 0).any(axis=(1, 2, 3)).mean() > 0.5


def test_one_step_is_torchs_nesterov_sgd_with_weight_decay_and_a_dropped_block_still_gets_both():
    """optim.sgd with nesterov, dampening 0 and weightDecay: g = dL/dw + wd * w; v = m * v + g; w -= lr * (g + m * v),
    for every parameter, a dropped block's too (its dL/dw is 0)."""
    trainer = tiny_trainer()
    model, train = trainer.model, trainer.config.train
    drawn = model.begin_step

    def block_0_dropped_from_step_2(*args, **kwargs):
        activity = drawn(*args, **kwargs)
        model.stochastic_depth.gates = [trainer.step == 0, True, True]
        return activity

    model.begin_step = block_0_dropped_from_step_2
    weight, norm = model.blocks[0].residual[0].weight, model.blocks[0].residual[1]
    images = paddle.to_tensor(trainer.data.normalizer(trainer.data.train.images[:4]))
    labels = paddle.to_tensor(trainer.data.train.labels[:4])
    w0 = weight.numpy().astype(np.float64)
    trainer.train_step(images, labels, batch_size=4)
    w1 = weight.numpy().astype(np.float64)
    velocity = (w0 - w1) / (train.lr * (1 + train.momentum))  # the first step's g, which is also its v
    statistics = norm._mean.numpy().copy(), norm._variance.numpy().copy()
    trainer.train_step(images, labels, batch_size=4)
    g = train.weight_decay * w1
    velocity = train.momentum * velocity + g
    assert np.allclose(weight.numpy(), w1 - train.lr * (g + train.momentum * velocity), rtol=0, atol=1e-7)
    assert not np.array_equal(weight.numpy(), w1)
    # Dropped, the block computed nothing: its batch norm's running statistics are as they were.
    assert np.array_equal(norm._mean.numpy(), statistics[0]) and np.array_equal(norm._variance.numpy(), statistics[1])


def test_batch_norm_keeps_the_biased_running_variance_a_known_difference():
    """Torch's running variance takes the unbiased batch variance (over m - 1), Paddle's the biased one (over m):
    smaller by m / (m - 1), at least 8,192 / 8,191 for CIFAR's batches, once the statistics have settled."""
    norm = paddle.nn.BatchNorm2D(1)
    norm.train()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(4, 1, 2, 2)).astype(np.float32))
    norm(x)
    biased = x.numpy().var()
    assert norm._variance.numpy()[0] == pytest.approx(0.9 * 1.0 + 0.1 * biased, rel=1e-5)
