"""What every network offers the engine (DNSD/models/network.py), and the batch-norm folding the networks share."""
import numpy as np
import paddle
import paddle.nn as nn

from DNSD.models.network import Network, fold_batch_norm


def test_a_network_without_stochastic_depth_reports_no_block_activity():
    network = Network()
    assert network.begin_step(seed=0, epoch=1, step=0, batch_size=4).shape == (0,)
    assert network.folded() is network


def test_fold_batch_norm_gives_the_convolution_and_batch_norm_output():
    paddle.seed(0)
    conv, batch_norm = nn.Conv2D(3, 4, 3, padding=1, bias_attr=False), nn.BatchNorm2D(4)
    batch_norm.train()
    x = paddle.rand([5, 3, 6, 6])
    batch_norm(conv(x))  # running statistics that are not the initial ones
    batch_norm.eval()
    weight, bias = fold_batch_norm(conv.weight.numpy(), batch_norm)
    folded = nn.Conv2D(3, 4, 3, padding=1)
    folded.weight.set_value(weight.astype("float32"))
    folded.bias.set_value(bias.astype("float32"))
    assert np.allclose(folded(x).numpy(), batch_norm(conv(x)).numpy(), atol=1e-5)
