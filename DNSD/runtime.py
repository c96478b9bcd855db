"""What a run needs besides model and data: its random generators and its device."""
import numpy as np
import paddle

from DNSD.errors import InputError

GENERATORS = ("split", "shuffle", "augment", "gates")


def random_generators(seed):
    """One independent numpy Generator per source of randomness, all derived from the run's seed.

    Separate streams keep each source fixed when another changes: a different batch size changes the shuffling
    draws but not the train/validation split.
    """
    streams = np.random.SeedSequence(seed).spawn(len(GENERATORS))
    return {name: np.random.default_rng(stream) for name, stream in zip(GENERATORS, streams)}


def select_device(name="auto", deterministic=False):
    """Set Paddle's device: the GPU when asked for or, with auto, when Paddle is built for CUDA and sees one.

    deterministic asks cuDNN for deterministic algorithms; the flag exists only in CUDA builds, and CPU kernels are
    deterministic already.
    """
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise InputError("--device gpu, but this Paddle build sees no GPU; install paddlepaddle-gpu or use --device cpu")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    paddle.set_device(device)
    flags = device_flags(device, deterministic)
    if flags:
        paddle.set_flags(flags)
    return device


def device_flags(device, deterministic):
    """The Paddle flags a run sets on its device."""
    return {"FLAGS_cudnn_deterministic": True} if device == "gpu" and deterministic else {}
