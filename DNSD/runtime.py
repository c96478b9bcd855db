"""What a run needs besides model and data: its random generators, its device and the CPU settings, and its place
among data-parallel processes."""
import hashlib
import os
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel processes of a run: rank 0 of 1 when it runs alone.

    Every rank computes its share of each global mini-batch; the collectives below are no-ops for a single process.
    """

    rank: int = 0
    world_size: int = 1

    @property
    def writes(self):
        """Rank 0 alone writes the run's files and prints its progress."""
        return self.rank == 0

    def shard(self, count):
        """This rank's slice of `count` examples: contiguous, the sizes differing by at most one across ranks."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, values):
        """The element-wise sum over ranks of a vector of numbers (float64), the same on every rank."""
        values = np.asarray(values, dtype=np.float64)
        if self.world_size == 1:
            return values
        tensor = paddle.to_tensor(values)
        paddle.distributed.all_reduce(tensor)
        return tensor.numpy()

    def barrier(self):
        if self.world_size > 1:
            paddle.distributed.barrier()

    def share_statistics(self, model):
        """Give every rank rank 0's batch-norm statistics, which each rank otherwise gathers from its own shard (its
        untrained tensors: Paddle keeps them as parameters that take no gradient)."""
        if self.world_size > 1:
            for tensor in model.state_dict().values():
                if tensor.stop_gradient:
                    paddle.distributed.broadcast(tensor, src=0)


def join_ranks():
    """The Ranks of this process: joins the process group when paddle.distributed.launch started several.

    Call after select_device: on the CPU the group uses Paddle's gloo backend, on GPUs NCCL.
    """
    world_size = paddle.distributed.ParallelEnv().world_size
    if world_size == 1:
        return Ranks()
    paddle.distributed.init_parallel_env()
    return Ranks(paddle.distributed.get_rank(), paddle.distributed.get_world_size())


def weights_digest(model):
    """sha256 of a model's parameters and buffers, in state-dict order: equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensor.numpy()).tobytes())
    return digest.hexdigest()
