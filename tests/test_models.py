"""The networks of DNSD/models (model.arch): the registry, per-sample drop path, the other networks and the folding
of each network for inference."""
import glob
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from DNSD.architectures import ARCHITECTURES
from DNSD.config import config_from_dict, load_yaml
from DNSD.datasets.pipeline import Normalizer
from DNSD.models import NETWORKS, build_model
from DNSD.models.diracnet import DiracNet, dirac_delta, ncrelu
from DNSD.models.stochastic_depth import StochasticDepth, sample_gates
from DNSD.models.vanillanet import VanillaNet
from DNSD.runs.checkpoint import read_state, restore_model
from DNSD.schema import ModelConfig
from helpers import ROOT, dnsd, read_json, read_jsonl
from test_resnet import expected_parameter_count

RUNS = {
    "resnet, per-sample drop path": ["--depth", "8", "--drop-mode", "sample", "--residual-scaling", "train"],
    "diracnet": ["--arch", "diracnet", "--depth", "10"],
    "vanillanet": ["--arch", "vanillanet", "--depth", "4", "--deep-training-epochs", "1"],
}


def images(count=4, seed=0):
    return paddle.to_tensor(np.random.default_rng(seed).normal(size=(count, 3, 32, 32)).astype("float32"))


def settle_batch_norm(model, steps=20):
    """Training-mode passes, so that the running statistics are those of real activations, not 0 and 1."""
    model.train()
    with paddle.no_grad():
        for step in range(steps):
            model(images(8, seed=step))
    model.eval()


@pytest.mark.parametrize("name", list(RUNS))
@pytest.mark.slow
def test_every_architecture_trains_evaluates_and_exports(name, tiny_archive, tmp_path):
    run_dir = str(tmp_path / "run")
    result = dnsd("--data-file", tiny_archive, "--output-dir", run_dir, "--epochs", "2", "--batch-size", "32",
                  "--val-size", "40", *RUNS[name])
    assert result.returncode == 0, result.stderr
    records = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    assert records[-1]["train_loss"] < records[0]["train_loss"] * 1.5 and np.isfinite(records[-1]["train_loss"])
    checkpoint = os.path.join(run_dir, "best.pdckpt")
    summary = read_json(os.path.join(run_dir, "summary.json"))
    evaluation = dnsd("--mode", "eval", "--checkpoint", checkpoint)
    assert evaluation.returncode == 0, evaluation.stderr
    assert f"test error {summary['test_error']:.2f} %" in evaluation.stdout
    # The last checkpoint: VanillaNet's activations are linear by then (1 deep-training epoch), so it merges.
    last = os.path.join(run_dir, "last.pdckpt")
    prefix = str(tmp_path / "exported" / "model")
    assert dnsd("--mode", "export", "--checkpoint", last, "--export-prefix", prefix).returncode == 0
    assert read_json(f"{prefix}-info.json")["folded"] == (name != "resnet, per-sample drop path")
    exported = paddle.jit.load(prefix)  # as a user of Paddle alone loads it
    exported.eval()
    state = read_state(last)
    model = restore_model(state, last)
    model.eval()
    pixels = np.random.default_rng(1).integers(0, 256, (3, 3, 32, 32)).astype("uint8")
    expected = F.softmax(model(paddle.to_tensor(Normalizer.from_state(state["normalizer"])(pixels))), axis=1).numpy()
    probabilities = exported(paddle.to_tensor(pixels.transpose(0, 2, 3, 1))).numpy()
    assert np.abs(probabilities - expected).max() <= 1e-4


class KeysRead:
    """A ModelConfig that records which keys are read."""

    def __init__(self, config):
        self.config, self.read = config, set()

    def __getattr__(self, key):
        self.read.add(key)
        return getattr(self.config, key)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_each_network_reads_exactly_the_keys_its_architecture_declares(arch):
    depth = next(d for d in range(3, 200) if ARCHITECTURES[arch].fits(d))
    config = KeysRead(ModelConfig(arch=arch, depth=depth))
    NETWORKS[arch].from_config(config, 10)
    assert config.read - {"arch"} == {"depth", *ARCHITECTURES[arch].keys}


def test_every_declared_architecture_has_a_network():
    assert set(NETWORKS) == set(ARCHITECTURES)


@pytest.mark.slow
def test_resnet_1202_builds_and_takes_a_training_step_on_the_cpu():
    model = build_model(ModelConfig(depth=1202), 10)
    assert model.num_blocks == 600
    assert sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable) == expected_parameter_count(200)
    optimizer = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    before = model.fc.weight.numpy().copy()
    model.begin_step(seed=0, epoch=1, step=0, batch_size=2)
    loss = F.cross_entropy(model(images(2)), paddle.to_tensor([3, 7]))
    loss.backward()
    optimizer.step()
    assert np.isfinite(loss.item()) and not np.array_equal(model.fc.weight.numpy(), before)


def test_per_sample_gates_have_one_draw_per_block_and_example():
    probabilities = np.array([1.0, 0.75, 0.5])
    gates = sample_gates(probabilities, np.random.default_rng(0), batch_size=20000)
    assert gates.shape == (3, 20000)
    assert np.allclose(gates.mean(axis=1), probabilities, atol=0.01)
    assert 0 < gates[2].sum() < 20000  # examples of one step differ


@pytest.mark.parametrize("scaling", ["train", "test"])
def test_per_sample_drop_path_averages_to_the_evaluation_output(scaling):
    paddle.seed(0)
    branch = nn.Conv2D(4, 4, 3, padding=1)
    x, shortcut = paddle.rand([6, 4, 5, 5]), paddle.rand([6, 4, 5, 5])
    survival, draws = 0.7, 4000
    owner = StochasticDepth(1, survival, "uniform", drop_mode="sample", residual_scaling=scaling)
    rng = np.random.default_rng(1)
    total = np.zeros(x.shape, np.float64)
    with paddle.no_grad():
        for _ in range(draws):
            owner.begin_step(rng, batch_size=6)
            total += owner(0, shortcut, branch, x, training=True).numpy()
        evaluation = owner(0, shortcut, branch, x, training=False).numpy()
    residual = np.abs(evaluation - shortcut.numpy()).max()
    assert np.abs(total / draws - evaluation).max() < 0.05 * residual


def test_drop_mode_sample_is_chosen_by_the_config_and_gates_each_example():
    model = build_model(ModelConfig(depth=14, drop_mode="sample"), 10)
    assert model.stochastic_depth.per_example
    assert not build_model(ModelConfig(depth=14), 10).stochastic_depth.per_example
    for layer in model.sublayers():  # batch norm with running statistics: the examples of a batch stay apart
        if isinstance(layer, nn.BatchNorm2D):
            layer.eval()
    ran = []
    computed = model.blocks[0].branch
    model.blocks[0].branch = lambda x: ran.append(x.shape[0]) or computed(x)
    gates = np.zeros((6, 3), dtype=np.float32)
    gates[0, 1] = 1  # block 0 kept for example 1 only
    model.stochastic_depth.gates = paddle.to_tensor(gates)
    logits = model(images(3))
    assert ran == [3]  # every example goes through the branch, unlike a closed per-batch gate
    model.stochastic_depth.gates = paddle.zeros([6, 3])
    shortcut_only = model(images(3)).numpy()
    assert np.allclose(logits.numpy()[[0, 2]], shortcut_only[[0, 2]], atol=1e-6)
    assert not np.allclose(logits.numpy()[1], shortcut_only[1], atol=1e-6)


def test_ncrelu_and_the_dirac_delta_pass_the_input_through():
    x = images(2)[:, :, :8, :8]
    for out_channels, in_channels in ((3, 6), (6, 6)):
        delta = paddle.to_tensor(dirac_delta(out_channels, in_channels, 3))
        source = ncrelu(x) if out_channels == 3 else paddle.concat([x, x], axis=1)
        passed = F.conv2d(source, delta, padding=1).numpy()
        assert np.allclose(passed[:, :3], x.numpy(), atol=1e-6)


def test_folded_diracnet_is_plain_convolutions_and_gives_the_same_logits():
    paddle.seed(0)
    model = DiracNet(16, 1)
    settle_batch_norm(model)
    expected = model(images()).numpy()
    folded = model.folded()
    names = [name for name, _ in folded.named_parameters()]
    assert not any(name.endswith(("alpha", "beta")) for name in names)
    assert not any(isinstance(layer, nn.BatchNorm2D) for layer in folded.sublayers())
    assert np.allclose(folded(images()).numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_vanillanet_merges_its_pairs_once_the_activations_are_linear():
    paddle.seed(0)
    model = VanillaNet(5, 1, deep_training_epochs=4)
    settle_batch_norm(model)
    model.begin_epoch(3)  # slope 0.5: the pairs are not linear yet and cannot merge
    assert model.folded() is model
    model.begin_epoch(5)
    model.eval()
    expected = model(images()).numpy()
    merged = model.folded()
    convolutions = [layer for layer in merged.sublayers() if isinstance(layer, nn.Conv2D)]
    # stem, 3 layers and the classifier: one convolution each, plus one depthwise per series activation
    assert len(convolutions) == 5 + 4
    assert not any(isinstance(layer, nn.BatchNorm2D) for layer in merged.sublayers())
    assert np.allclose(merged(images()).numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_vanillanet_activation_anneals_from_relu_to_identity():
    model = VanillaNet(3, 1, deep_training_epochs=4)
    slopes = []
    for epoch in (1, 3, 5, 9):
        model.begin_epoch(epoch)
        slopes.append(model.slope.item())
    assert slopes == [0.0, 0.5, 1.0, 1.0]


@pytest.mark.slow
def test_every_shipped_config_builds_its_network():
    names = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))):
        config = config_from_dict(load_yaml(path), where=f" in {path}")
        names[os.path.basename(path)] = build_model(config.model, 10).name()
    assert names["resnet1202_sd.yaml"].startswith("ResNet-1202 (600 blocks")
    assert names["diracnet34_2.yaml"] == "DiracNet-34-2"
    assert names["vanillanet5_cifar.yaml"].startswith("VanillaNet-5")
    for depth in (20, 32, 44, 56):
        assert names[f"resnet{depth}.yaml"].startswith(f"ResNet-{depth} ")

