"""The deep check of the device a run uses (`dnsd info`): each library a run needs computes something small
that numpy checks, so that a broken install fails here, in one line naming the part, and not at a run's first step."""
import collections
import contextlib
import io

import numpy as np
import paddle
import paddle.nn.functional as F

from DNSD.errors import InputError, one_line

REINSTALL = "reinstall the build for this machine: bash scripts/setup_env.sh --reinstall (docs/installing.md)"
Part = collections.namedtuple("Part", "name what fix check")


def _close(result, expected, tolerance):
    """None where result is within tolerance (relative to the largest expected value) of expected, else how far."""
    result = np.asarray(result, dtype=np.float64)
    if result.shape != expected.shape or not np.isfinite(result).all():
        return f"gave {'non-finite values' if result.shape == expected.shape else 'shape ' + str(result.shape)}"
    difference = float(np.abs(result - expected).max() / max(np.abs(expected).max(), 1.0))
    return None if difference <= tolerance else f"differs from numpy by {difference:.2g} (relative)"


def convolution():
    """A 3x3 convolution forward and its weight gradient, against numpy."""
    rng = np.random.default_rng(0)
    x, w, g = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 6, 6))
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), (2, 3))
    weight = paddle.to_tensor(w.astype("float32"), stop_gradient=False)
    y = F.conv2d(paddle.to_tensor(x.astype("float32")), weight, padding=1)
    (y * paddle.to_tensor(g.astype("float32"))).sum().backward()
    # TF32 (allowed by default on Ampere and newer) keeps 10 bits of mantissa: 1e-2 leaves room for it.
    return (_close(y.numpy(), np.einsum("bchwij,ocij->bohw", windows, w), 1e-2)
            or _close(weight.grad.numpy(), np.einsum("bchwij,bohw->ocij", windows, g), 1e-2))


def matrix_product():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((64, 32)), rng.standard_normal((32, 16))
    return _close(paddle.matmul(paddle.to_tensor(a.astype("float32")), paddle.to_tensor(b.astype("float32"))).numpy(),
                  a @ b, 1e-2)


def mixed_precision_step(dtype):
    """One SGD step of a small convolutional network under autocast to dtype: a finite loss and finite weights
    that moved."""
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.BatchNorm2D(8), paddle.nn.ReLU(),
                                 paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(), paddle.nn.Linear(8, 10))
    optimizer = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    scaler = paddle.amp.GradScaler() if dtype == "float16" else None
    before = [p.numpy().copy() for p in model.parameters()]
    with paddle.amp.auto_cast(dtype=dtype):
        loss = F.cross_entropy(model(paddle.randn([8, 3, 16, 16])), paddle.arange(8).reshape([8, 1]) % 10)
    if scaler:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    after = [p.numpy() for p in model.parameters()]
    if not np.isfinite(float(loss)) or not all(np.isfinite(p).all() for p in after):
        return "gave a non-finite loss or weights"
    return None if any(not np.array_equal(b, a) for b, a in zip(before, after)) else "left the weights unchanged"


def nccl():
    with contextlib.redirect_stdout(io.StringIO()):
        paddle.utils.run_check()


def parts(device):
    """What the deep check runs on this device."""
    if device != "gpu":
        return [Part("convolution", "a 3x3 convolution forward and backward", REINSTALL, convolution),
                Part("matrix product", "a 64x32 by 32x16 product", REINSTALL, matrix_product)]
    found = [Part("cuDNN", "a 3x3 convolution forward and backward", f"{REINSTALL}; PyPI's 2.6.2 needs the system's "
                  "cuDNN 8.6", convolution),
             Part("cuBLAS", "a 64x32 by 32x16 product", REINSTALL, matrix_product),
             Part("float16", "a training step under float16 autocast", f"train with -o train.amp=off, or {REINSTALL}",
                  lambda: mixed_precision_step("float16"))]
    if paddle.device.cuda.get_device_capability()[0] >= 8:
        found.append(Part("bfloat16", "a training step under bfloat16 autocast",
                          "train with -o train.amp=float16 or off", lambda: mixed_precision_step("bfloat16")))
    if paddle.device.cuda.device_count() >= 2:
        found.append(Part("NCCL", "paddle.utils.run_check() across the GPUs", "train on one GPU "
                          "(CUDA_VISIBLE_DEVICES=0), or see why with NCCL_DEBUG=INFO", nccl))
    return found


def check_device(device):
    """(part, what) of every part that passed; an InputError naming the first that did not."""
    passed = []
    for part in parts(device):
        try:
            problem = part.check()
        except Exception as error:  # a library that fails raises Paddle's own types, which differ by version
            problem = "raised " + (one_line(error, 300) or type(error).__name__)
        if problem:
            raise InputError(f"the {device} check failed at {part.name} ({part.what}): {problem}; {part.fix}")
        passed.append((part.name, part.what))
    return passed
