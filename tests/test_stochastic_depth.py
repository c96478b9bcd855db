"""Stochastic depth and the ResNet that uses it, against PAPER.md."""
import numpy as np
import paddle
import pytest

from DNSD.resnet import BasicBlock, CifarResNet
from DNSD.stochastic_depth import add_residual, sample_gates, survival_probabilities


def test_linear_decay_matches_the_paper_formula():
    probabilities = survival_probabilities(54, 0.5, "linear")
    assert len(probabilities) == 54
    assert probabilities[0] == pytest.approx(1 - 0.5 / 54)
    assert probabilities[26] == pytest.approx(1 - 27 / 54 * 0.5)
    assert probabilities[-1] == pytest.approx(0.5)
    assert np.all(np.diff(probabilities) < 0)
    # PAPER.md: 54 - 0.5 * 55 / 2 = 40.25 blocks are active on average.
    assert probabilities.sum() == pytest.approx(40.25)


def test_uniform_mode_and_constant_depth():
    assert np.allclose(survival_probabilities(9, 0.8, "uniform"), 0.8)
    assert np.all(survival_probabilities(54, 1.0, "linear") == 1.0)
    with pytest.raises(ValueError):
        survival_probabilities(9, 0.5, "exponential")


def test_gate_frequencies_match_survival_probabilities():
    probabilities = survival_probabilities(6, 0.2, "linear")
    rng = np.random.default_rng(1)
    draws = 20000
    frequencies = np.mean([sample_gates(probabilities, rng) for _ in range(draws)], axis=0)
    tolerance = 4 * np.sqrt(probabilities * (1 - probabilities) / draws)
    assert np.all(np.abs(frequencies - probabilities) <= tolerance)


def test_gates_are_one_draw_per_block_from_the_given_generator():
    probabilities = np.full(5, 0.5)
    first = sample_gates(probabilities, np.random.default_rng(7))
    again = sample_gates(probabilities, np.random.default_rng(7))
    assert first.shape == (5,) and first.dtype == bool
    assert np.array_equal(first, again)


def block_with_eval_statistics(survival_probability, scaling="test", stride=1, widths=(8, 8)):
    paddle.seed(3)
    block = BasicBlock(widths[0], widths[1], stride, survival_probability, scaling)
    block.eval()
    return block


def test_dropped_block_runs_no_convolution_and_its_parameters_get_no_gradient():
    block = block_with_eval_statistics(0.5)
    block.train()
    calls = []
    block.residual.register_forward_post_hook(lambda layer, inputs, output: calls.append(1))
    x = paddle.rand([2, 8, 6, 6])
    x.stop_gradient = False
    out = block(x, gate=False)
    out.sum().backward()
    assert calls == []
    assert np.array_equal(out.numpy(), x.numpy())  # x >= 0, so ReLU(shortcut(x)) is x
    assert all(p.grad is None or not np.any(p.grad.numpy()) for p in block.parameters())
    block(x, gate=True).sum().backward()
    assert calls == [1]
    assert any(np.any(p.grad.numpy()) for p in block.parameters())


@pytest.mark.parametrize("scaling", ["test", "train"])
def test_evaluation_output_is_the_expectation_of_training_outputs(scaling):
    p = 0.3
    block = block_with_eval_statistics(p, scaling)  # eval-mode batch norm: the branch is the same function each time
    x = paddle.rand([2, 8, 6, 6])
    shortcut = block.shortcut(x)
    open_gate = add_residual(shortcut, block.residual, x, p, gate=True, scaling=scaling).numpy()
    closed_gate = add_residual(shortcut, block.residual, x, p, gate=False, scaling=scaling).numpy()
    evaluation = add_residual(shortcut, block.residual, x, p, gate=None, scaling=scaling).numpy()
    assert np.allclose(evaluation, p * open_gate + (1 - p) * closed_gate, atol=1e-5)
    assert not np.allclose(evaluation, open_gate)


def test_authors_scaling_leaves_training_unscaled_and_scales_evaluation():
    p = 0.25
    block = block_with_eval_statistics(p, "test")
    x = paddle.rand([2, 8, 6, 6])
    shortcut = block.shortcut(x)
    branch = block.residual(x).numpy()
    trained = add_residual(shortcut, block.residual, x, p, gate=True).numpy()
    evaluated = add_residual(shortcut, block.residual, x, p, gate=None).numpy()
    assert np.allclose(trained, x.numpy() + branch, atol=1e-6)
    assert np.allclose(evaluated, x.numpy() + p * branch, atol=1e-6)


def test_option_a_shortcut_pools_two_by_two_and_appends_zero_channels():
    block = BasicBlock(2, 4, stride=2, survival_probability=1.0)
    x = paddle.arange(2 * 2 * 4 * 4, dtype="float32").reshape([2, 2, 4, 4])
    shortcut = block.shortcut(x).numpy()
    assert shortcut.shape == (2, 4, 2, 2)
    expected = x.numpy().reshape(2, 2, 2, 2, 2, 2).mean(axis=(3, 5))
    assert np.allclose(shortcut[:, :2], expected)
    assert not np.any(shortcut[:, 2:])
    assert block(x, gate=None).shape == [2, 4, 2, 2]


def test_identity_shortcut_where_shape_is_kept():
    block = BasicBlock(4, 4, stride=1, survival_probability=1.0)
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


def test_resnet_gates_select_blocks_and_all_closed_gates_leave_only_shortcuts():
    paddle.seed(0)
    model = CifarResNet(14, num_classes=10, survival_last=0.5)  # n = 2: 6 blocks
    model.eval()
    images = paddle.rand([2, 3, 32, 32])
    ran = []
    for index, block in enumerate(model.blocks):
        block.residual.register_forward_post_hook(lambda layer, inputs, output, index=index: ran.append(index))
    model(images, np.array([True, False, True, False, False, True]))
    assert ran == [0, 2, 5]
    ran.clear()
    logits = model(images, np.zeros(6, dtype=bool))
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
