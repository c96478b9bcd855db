"""What a run needs besides model and data: its random generators, its device and the CPU settings."""
import os

import numpy as np
import paddle

from DNSD.errors import InputError

PURPOSES = ("split", "shuffle", "augment", "gates")


def generator(seed, purpose, *counters):
    """The numpy Generator of one use of randomness, derived from the run's seed alone: the split, the shuffling of
    an epoch, the augmentation or the gates of one step (counters: epoch, step).

    Deriving each draw from (seed, purpose, epoch, step), instead of taking it from a long-lived generator, makes it
    independent of who asks and when: a resumed run, a prefetching loader and every data-parallel rank get the same
    numbers, and a checkpoint need not hold any generator state.
    """
    return np.random.default_rng([seed, PURPOSES.index(purpose), *counters])


def select_device(name="auto", deterministic=False, cudnn_exhaustive_search=False, cpu_threads=1, mkl_avx2=None):
    """Set Paddle's device: the GPU when asked for or, with auto, when Paddle is built for CUDA and sees one."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise InputError("--device gpu, but this Paddle build sees no GPU; install paddlepaddle-gpu or use --device cpu")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    paddle.set_device(device)
    if device == "cpu":
        configure_cpu(cpu_threads, mkl_avx2)
    flags = device_flags(device, deterministic, cudnn_exhaustive_search)
    if flags:
        paddle.set_flags(flags)
    return device


def select_run_device(run):
    """select_device with the settings of a run's config (its `run` section)."""
    return select_device(run.device, run.deterministic, run.cudnn_exhaustive_search, run.cpu_threads)


def device_flags(device, deterministic, cudnn_exhaustive_search):
    """The Paddle flags a run sets on its device; these flags exist only in CUDA builds."""
    if device != "gpu":
        return {}
    flags = {"FLAGS_cudnn_deterministic": True} if deterministic else {}
    if cudnn_exhaustive_search:
        flags["FLAGS_cudnn_exhaustive_search"] = True
    return flags


def configure_cpu(threads=1, mkl_avx2=None):
    """Paddle's CPU threads (0: every core), and MKL's AVX2 code on AMD processors (None: when the CPU is one).

    Paddle's CPU wheels do convolutions with MKL 2019, which runs a generic slow path on AMD processors;
    MKL_DEBUG_CPU_TYPE=5 makes that MKL use its AVX2 kernels, about twice as fast (BENCHMARKS.md). An
    MKL_DEBUG_CPU_TYPE already in the environment is left as it is.
    """
    if mkl_avx2 is None:
        mkl_avx2 = is_amd_with_avx2()
    if mkl_avx2:
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    threads = threads or len(os.sched_getaffinity(0))
    paddle.base.core.set_num_threads(threads)
    return {"threads": threads, "mkl_debug_cpu_type": os.environ.get("MKL_DEBUG_CPU_TYPE")}


def is_amd_with_avx2(cpuinfo="/proc/cpuinfo"):
    try:
        with open(cpuinfo) as stream:
            text = stream.read()
    except OSError:
        return False
    return "AuthenticAMD" in text and " avx2" in text
