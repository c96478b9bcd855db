"""Batch normalisation that computes the same bits on every x86-64 CPU under portable numerics (system/numerics.py
switches it on) and under onednn numerics (DNSD's own operator, batch_norm.cc), and, in a data-parallel run, statistics
of the whole mini-batch (train.sync_batch_norm).

Paddle's CPU kernel takes 1 / sqrt(variance + epsilon) in float32 with Eigen's fast square root, which starts from the
processor's reciprocal-square-root estimate, whose last bits differ between processors. In float64 the same kernel
takes an exact square root: twice float32's time (37 against 18 ms forward and backward at 128 x 16 x 32 x 32 here),
where composing batch norm from elementwise operators took 414 ms.
"""
import paddle
import paddle.distributed as dist
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer

from DNSD.models.operators import applies_to, cpu_operators, operator_threads, relayout

_portable = [False]
_synced = [False]


def use_portable_batch_norm(portable):
    """Whether CPU batch norm takes its portable form: set with the CPU numerics (system/numerics.py)."""
    _portable[0] = portable


def portable_batch_norm():
    return _portable[0]


def use_synced_batch_norm(synced):
    """Whether training batch norm takes the statistics of all ranks' images (set by the trainer of a data-parallel
    run with train.sync_batch_norm)."""
    _synced[0] = synced


class SumOverRanks(PyLayer):
    """The element-wise sum of a tensor over the ranks; its gradient is the sum of the ranks' gradients, since every
    rank's output depends on every rank's input."""

    @staticmethod
    def forward(ctx, x):
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, gradient):
        total = gradient.clone()
        dist.all_reduce(total)
        return total


def synced_batch_norm(x, layer):
    """Training batch norm on the statistics of every rank's share of the mini-batch, as one process computes them
    on the whole of it (the biased variance, as Paddle's kernel), in float64; the running statistics as Paddle's."""
    exact = x.astype("float64")
    count = paddle.full([x.shape[1]], x.shape[0] * x.shape[2] * x.shape[3], dtype="float64")
    # One all-reduce a layer: the count rides with the sums (its gradient is none).
    total, squares, count = SumOverRanks.apply(paddle.stack([exact.sum([0, 2, 3]), (exact * exact).sum([0, 2, 3]),
                                                             count]))
    mean = total / count
    variance = squares / count - mean * mean
    update_running_statistics(layer, mean, variance)
    scale = layer.weight.astype("float64") / paddle.sqrt(variance + layer._epsilon)
    shift = layer.bias.astype("float64") - mean * scale
    return (exact * scale.reshape([1, -1, 1, 1]) + shift.reshape([1, -1, 1, 1])).astype(x.dtype)


def update_running_statistics(layer, mean, variance):
    """The layer's running statistics moved towards a batch's, as Paddle's kernel moves them."""
    with paddle.no_grad():
        for running, batch in ((layer._mean, mean), (layer._variance, variance)):
            paddle.assign(running * layer._momentum + batch.astype(running.dtype) * (1 - layer._momentum), running)


def batch_norm(x, layer, relu=False, blocked_in=False, blocked_out=False):
    """layer (a BatchNorm2D) applied to x in the layer's mode, and then a ReLU where relu: DNSD's operator under onednn
    numerics, whose input and output may be in oneDNN's layout (operators.blockable); else Paddle's kernel, in float64
    on the CPU under portable numerics, where its square root is exact (Eigen's fast square root is float32's only)."""
    synced = _synced[0] and layer.training
    if applies_to(x) and not synced:
        y, mean, variance = cpu_operators().dnsd_batch_norm(x, layer.weight, layer.bias, layer._mean, layer._variance,
                                                            layer.training, layer._epsilon, relu, blocked_in,
                                                            blocked_out, operator_threads())
        if layer.training:
            update_running_statistics(layer, mean, variance)
        return y
    x = relayout(x, blocked=False) if blocked_in else x
    if synced:
        y = synced_batch_norm(x, layer)
    elif not (_portable[0] and paddle.in_dynamic_mode() and x.place.is_cpu_place()):
        y = F.batch_norm(x, layer._mean, layer._variance, layer.weight, layer.bias, training=layer.training,
                         momentum=layer._momentum, epsilon=layer._epsilon)
    else:
        y = float64_batch_norm(x, layer)
    y = F.relu(y) if relu else y
    return relayout(y, blocked=True) if blocked_out else y


def float64_batch_norm(x, layer):
    """Paddle's kernel in float64, with the layer's running statistics updated as its float32 kernel would."""
    statistics = [layer._mean.astype("float64"), layer._variance.astype("float64")]
    y = F.batch_norm(x.astype("float64"), *statistics, layer.weight.astype("float64"), layer.bias.astype("float64"),
                     training=layer.training, momentum=layer._momentum, epsilon=layer._epsilon)
    if layer.training:  # the kernel updated the float64 copies of the running statistics
        with paddle.no_grad():
            for running, updated in zip((layer._mean, layer._variance), statistics):
                paddle.assign(updated.astype(running.dtype), running)
    return y.astype(x.dtype)


class BatchNorm2D(nn.BatchNorm2D):
    """Paddle's BatchNorm2D (the same parameters, statistics and state), computed by batch_norm."""

    def forward(self, x):
        return batch_norm(x, self)
