"""A run's place among data-parallel processes (paddle.distributed), and the digest that shows two copies of a model
are the same."""
import hashlib
from dataclasses import dataclass

import numpy as np
import paddle

from DNSD.datasets.pipeline import shard
from DNSD.errors import InputError


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
        """This rank's slice of `count` examples."""
        return shard(count, self.rank, self.world_size)

    def sum(self, *arrays):
        """Each array of numbers, or of records whose fields are numbers, summed element by element (field by field)
        over the ranks in one all-reduce, in float64; the same on every rank. One array in, one out."""
        arrays = [np.ascontiguousarray(array) if np.asarray(array).dtype.names else
                  np.asarray(array, dtype=np.float64) for array in arrays]
        if self.world_size > 1:
            tensor = paddle.to_tensor(np.concatenate([array.view(np.float64).ravel() for array in arrays]))
            paddle.distributed.all_reduce(tensor)
            flat, summed, start = tensor.numpy(), [], 0
            for array in arrays:
                size = array.view(np.float64).size
                summed.append(flat[start:start + size].view(array.dtype).reshape(array.shape))
                start += size
            arrays = summed
        return arrays[0] if len(arrays) == 1 else arrays

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


def host_weights(model):
    """A model's parameters and buffers as numpy arrays, in state-dict order, copied from the device in one read."""
    state = model.state_dict()
    if len({tensor.dtype for tensor in state.values()}) != 1:
        return {name: tensor.numpy() for name, tensor in state.items()}
    with paddle.no_grad():
        flat = paddle.concat([tensor.reshape([-1]) for tensor in state.values()]).numpy()
    ends = np.cumsum([int(np.prod(tensor.shape)) for tensor in state.values()])
    return {name: part.reshape(tensor.shape)
            for (name, tensor), part in zip(state.items(), np.split(flat, ends[:-1]))}


def weights_digest(weights):
    """sha256 of a model's parameters and buffers (a model, or its arrays by name as a checkpoint holds them), in
    state-dict order: equal digests mean bit-identical weights."""
    if isinstance(weights, paddle.nn.Layer):
        weights = host_weights(weights)
    digest = hashlib.sha256()
    for name, array in weights.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_shards(num_images, batch_size, world_size):
    """Refuse a mini-batch that cannot give every data-parallel rank at least one image."""
    last_batch = num_images % batch_size or batch_size
    if min(batch_size, last_batch) < world_size:
        raise InputError(f"{world_size} data-parallel processes need at least {world_size} images in every "
                         f"mini-batch, but train.batch_size {batch_size} with {num_images} training images leaves "
                         f"{min(batch_size, last_batch)}; change --batch-size or --val-size")
