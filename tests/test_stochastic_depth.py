"""Stochastic depth (DNSD/models/stochastic_depth.py) against PAPER.md: the probabilities, the gates, and the gated
residual sum a block asks for."""
import numpy as np
import paddle
import pytest

from DNSD.models.resnet import BasicBlock, CifarResNet
from DNSD.models.stochastic_depth import StochasticDepth, sample_gates, survival_probabilities


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
    """A block whose stochastic depth has one block of this survival probability, its batch norm in eval mode (the
    branch is then the same function each call)."""
    paddle.seed(3)
    owner = StochasticDepth(1, survival_probability, "uniform", residual_scaling=scaling)
    block = BasicBlock(widths[0], widths[1], stride, owner, 0)
    block.eval()
    return block


def gated(block, x, gate, training=True):
    """The block's residual sum with its stochastic depth's gate set as a training step would."""
    owner = block.stochastic_depth
    owner.gates = None if gate is None else [gate]
    return owner(0, block.shortcut(x), block.residual, x, training)


def test_dropped_block_runs_no_convolution_and_its_parameters_get_no_gradient():
    block = block_with_eval_statistics(0.5)
    block.train()
    calls = []
    computed = block.branch
    block.branch = lambda x: calls.append(1) or computed(x)
    x = paddle.rand([2, 8, 6, 6])
    x.stop_gradient = False
    block.stochastic_depth.gates = [False]
    out = block(x)
    out.sum().backward()
    assert calls == []
    assert np.array_equal(out.numpy(), x.numpy())  # x >= 0, so ReLU(shortcut(x)) is x
    assert all(p.grad is None or not np.any(p.grad.numpy()) for p in block.parameters())
    block.stochastic_depth.gates = [True]
    block(x).sum().backward()
    assert calls == [1]
    assert any(np.any(p.grad.numpy()) for p in block.parameters())


@pytest.mark.parametrize("scaling", ["test", "train"])
def test_evaluation_output_is_the_expectation_of_training_outputs(scaling):
    p = 0.3
    block = block_with_eval_statistics(p, scaling)
    x = paddle.rand([2, 8, 6, 6])
    open_gate = gated(block, x, True).numpy()
    closed_gate = gated(block, x, False).numpy()
    evaluation = gated(block, x, None, training=False).numpy()
    assert np.allclose(evaluation, p * open_gate + (1 - p) * closed_gate, atol=1e-5)
    assert not np.allclose(evaluation, open_gate)


def test_authors_scaling_leaves_training_unscaled_and_scales_evaluation():
    p = 0.25
    block = block_with_eval_statistics(p, "test")
    x = paddle.rand([2, 8, 6, 6])
    branch = block.residual(x).numpy()
    assert np.allclose(gated(block, x, True).numpy(), x.numpy() + branch, atol=1e-6)
    assert np.allclose(gated(block, x, None, training=False).numpy(), x.numpy() + p * branch, atol=1e-6)


def test_a_training_forward_without_a_draw_is_refused():
    block = block_with_eval_statistics(0.25, "train")
    block.train()
    with pytest.raises(RuntimeError, match="begin_step"):
        block(paddle.rand([2, 8, 6, 6]))


@pytest.mark.parametrize("drop_mode", ["batch", "sample"])
def test_a_steps_gates_serve_one_forward_pass(drop_mode):
    model = CifarResNet(14, drop_mode=drop_mode)
    model.train()
    images = paddle.rand([2, 3, 32, 32])
    model.begin_step(seed=0, epoch=1, step=0, batch_size=2)
    model(images)
    assert model.stochastic_depth.gates is None
    with pytest.raises(RuntimeError, match="begin_step"):
        model(images)
    model.eval()
    assert model(images).shape == [2, 10]  # evaluation needs no gates


def test_begin_step_draws_from_the_generator_and_keeps_this_ranks_columns():
    owner = StochasticDepth(4, 0.5, drop_mode="sample")
    activity = owner.begin_step(np.random.default_rng(5), batch_size=6, part=slice(2, 4))
    expected = sample_gates(owner.probabilities, np.random.default_rng(5), 6)
    assert np.array_equal(owner.gates.numpy(), expected[:, 2:4].astype("float32"))
    assert np.array_equal(activity, expected.mean(axis=1))
    per_batch = StochasticDepth(4, 0.5)
    activity = per_batch.begin_step(np.random.default_rng(5), batch_size=6)
    assert per_batch.gates == sample_gates(per_batch.probabilities, np.random.default_rng(5)).tolist()
    assert np.array_equal(activity, np.array(per_batch.gates, dtype=np.float64))
