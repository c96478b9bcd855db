"""The speed options: their wiring, tested on the CPU (their effect is measured by scripts/benchmark.py)."""
import os

import numpy as np
import paddle
import pytest

from DNSD.config import build_config
from DNSD.runs.checkpoint_file import read_checkpoint
from DNSD.system.device import configure_cpu, device_flags
from DNSD.training.run import start


def tiny_config(tiny_archive, run_dir, **values):
    base = {"data.data_file": tiny_archive, "data.val_size": 40, "model.depth": 8, "train.batch_size": 32,
            "train.epochs": 1, "run.output_dir": run_dir}
    return build_config({**base, **values})


# The GPU path run on Paddle's CPU build, which warns that mixed precision changes nothing there.
@pytest.mark.filterwarnings("ignore:(AmpScaler|amp_guard) can only be enabled")
@pytest.mark.parametrize("amp, enabled, dtype, scaler", [("off", False, None, False),
                                                         ("float16", True, "float16", True),
                                                         ("bfloat16", True, "bfloat16", False)])
def test_mixed_precision_is_wired_into_every_training_step(tiny_archive, tmp_path, monkeypatch, amp, enabled, dtype,
                                                           scaler):
    real_auto_cast = paddle.amp.auto_cast
    calls = []

    def spy(enable=True, dtype="float16", **kwargs):
        calls.append((enable, dtype))
        return real_auto_cast(enable=enable, dtype=dtype, **kwargs)

    monkeypatch.setattr(paddle.amp, "auto_cast", spy)
    run_dir = str(tmp_path / amp)
    start(tiny_config(tiny_archive, run_dir, **{"train.amp": amp}))
    # 160 training images in batches of 32: a context per step; none at all when AMP is off.
    assert len(calls) == (5 if enabled else 0)
    assert all(enable for enable, _ in calls)
    assert {called for _, called in calls} == ({dtype} if enabled else set())
    state = read_checkpoint(os.path.join(run_dir, "last.pdckpt"))
    assert (state["scaler"] is not None) is scaler


@pytest.mark.slow
def test_prefetching_changes_nothing_but_speed(tiny_archive, tmp_path):
    weights = []
    for prefetch in (0, 3):
        run_dir = str(tmp_path / f"prefetch{prefetch}")
        start(tiny_config(tiny_archive, run_dir, **{"data.prefetch": prefetch, "train.epochs": 2}))
        weights.append(read_checkpoint(os.path.join(run_dir, "last.pdckpt"))["model"])
    for name in weights[0]:
        assert np.array_equal(np.asarray(weights[0][name]), np.asarray(weights[1][name])), name


def test_gpu_flags_for_determinism_and_exhaustive_search():
    assert device_flags("gpu", True, False) == {"FLAGS_cudnn_deterministic": True}
    assert device_flags("gpu", False, True) == {"FLAGS_cudnn_exhaustive_search": True}
    assert device_flags("gpu", True, True) == {"FLAGS_cudnn_deterministic": True,
                                               "FLAGS_cudnn_exhaustive_search": True}
    assert device_flags("gpu", False, False) == {}
    assert device_flags("cpu", True, True) == {}


def test_cpu_settings_take_a_thread_count_or_every_core():
    assert configure_cpu(0)["threads"] == len(os.sched_getaffinity(0))
    assert configure_cpu(1)["threads"] == 1
