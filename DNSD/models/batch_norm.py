"""Batch normalisation that computes the same bits on every x86-64 CPU under portable numerics (system/numerics.py
switches it on).

Paddle's CPU kernel takes 1 / sqrt(variance + epsilon) in float32 with Eigen's fast square root, which starts from the
processor's reciprocal-square-root estimate, whose last bits differ between processors. In float64 the same kernel
takes an exact square root: twice float32's time (37 against 18 ms forward and backward at 128 x 16 x 32 x 32 here),
where composing batch norm from elementwise operators took 414 ms.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

_portable = [False]


def use_portable_batch_norm(portable):
    """Whether CPU batch norm takes its portable form: set with the CPU numerics (system/numerics.py)."""
    _portable[0] = portable


def portable_batch_norm():
    return _portable[0]


def batch_norm(x, layer):
    """layer (a BatchNorm2D) applied to x in the layer's mode: Paddle's kernel, in float64 on the CPU under portable
    numerics, where its square root is exact (Eigen's fast square root is float32's only)."""
    if not (_portable[0] and paddle.in_dynamic_mode() and x.place.is_cpu_place()):
        return F.batch_norm(x, layer._mean, layer._variance, layer.weight, layer.bias, training=layer.training,
                            momentum=layer._momentum, epsilon=layer._epsilon)
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
