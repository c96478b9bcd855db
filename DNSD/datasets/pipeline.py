"""What every data set goes through on its way to a training step, on whole batches with numpy: the split, the
normalisation, the authors' augmentation, the batches of an epoch and their prefetching onto the device."""
import queue
import threading
from dataclasses import dataclass

import numpy as np
import paddle

from DNSD.errors import InputError
from DNSD.randomness import generator
from DNSD.schema import NORMALIZATIONS

IMAGE_SHAPE = (3, 32, 32)
SHIFT = 4


@dataclass
class Dataset:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,) of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def subset(self, indices):
        return Dataset(self.images[indices], self.labels[indices])


def split_train_val(train, val_size, rng):
    """A random split of the training images into (train, validation), drawn from rng."""
    if not 1 <= val_size < len(train):
        raise InputError(f"config key data.val_size (--val-size): got {val_size}, but the archive has {len(train)} "
                         f"training images; choose 1 to {len(train) - 1}")
    order = rng.permutation(len(train))
    return train.subset(np.sort(order[val_size:])), train.subset(np.sort(order[:val_size]))


def balanced_subset(dataset, count):
    """The first `count` images of a split, the classes as equal as they can be: the k-th image of every class comes
    before any class's (k+1)-th; the split's order is kept."""
    if not 1 <= count <= len(dataset):
        raise InputError(f"config key data.train_images (--train-images): got {count}, but the training split has "
                         f"{len(dataset)} images; choose 1 to {len(dataset)}, or 0 for all of them")
    ranks = np.empty(len(dataset), dtype=np.int64)
    for label in np.unique(dataset.labels):
        members = np.flatnonzero(dataset.labels == label)
        ranks[members] = np.arange(len(members))
    return dataset.subset(np.sort(np.lexsort((dataset.labels, ranks))[:count]))


class Normalizer:
    """(x - mean) / std with the training split's statistics: "pixel" (the authors') the mean image and one
    std over all pixels, "channel" a mean and std per colour channel."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float64)
        self.inverse_std = np.asarray(1.0 / self.std, dtype=np.float32)

    @classmethod
    def fit(cls, images, mode="pixel"):
        """The statistics of images; InputError where they cannot normalise (every pixel, or channel, the same)."""
        if mode == "pixel":
            mean = images.mean(axis=0, dtype=np.float64)
            std = _std_of_uint8(images.reshape(-1))
        elif mode == "channel":
            channels = images.transpose(1, 0, 2, 3).reshape(3, -1)
            mean = channels.mean(axis=1, dtype=np.float64).reshape(3, 1, 1)
            std = np.array([_std_of_uint8(channel) for channel in channels]).reshape(3, 1, 1)
        else:
            raise ValueError(f"normalization {mode!r} is not one of {NORMALIZATIONS}")
        if np.any(np.asarray(std) == 0):
            raise InputError("the training images have a standard deviation of 0 (every pixel holds the same value), "
                             "so they cannot be normalised: the archive does not hold real images")
        return cls(mean, std)

    def state(self):
        # The float64 std gives inverse_std back bit for bit; a float32 one does not always (1 / float32(1 / x) is
        # not always x), and a resumed run or an evaluation must normalise exactly as training did.
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state):
        return cls(state["mean"], state["std"])

    def __call__(self, images):
        """images (N, 3, H, W), the network's layout, as float32 input to it."""
        if np.ndim(images) != 4 or np.shape(images)[1] != 3:
            hint = ": pass images.transpose(0, 3, 1, 2)" if np.ndim(images) == 4 and np.shape(images)[3] == 3 else ""
            raise ValueError(f"normalize takes images of shape (N, 3, H, W), the network's layout; got shape "
                             f"{np.shape(images)}{hint}")
        normalised = np.subtract(images, self.mean, dtype=np.float32)
        normalised *= self.inverse_std
        return normalised


def _std_of_uint8(values):
    """The std of uint8 values from their histogram: exact, and without a float copy of the data (bincount works on
    an int64 copy of what it counts, so it counts a chunk at a time: SVHN's 1.9 GB would take 15 GB at once)."""
    chunk = 1 << 24
    counts = sum(np.bincount(values[start:start + chunk], minlength=256)
                 for start in range(0, len(values), chunk)).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    mean = counts @ levels / counts.sum()
    return float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum()))


def augment(images, rng, batch_part=None):
    """The authors' augmentation of a (B, C, H, W) batch: a shift in [-4, 4] per axis with zero fill (after
    normalisation, so the fill is the mean image), then a horizontal flip with probability 0.5.
    batch_part (count, slice): these images are that slice of a mini-batch of count, whose draws are made whole."""
    count, part = batch_part or (len(images), slice(None))
    top = rng.integers(0, 2 * SHIFT + 1, size=count)[part]
    left = rng.integers(0, 2 * SHIFT + 1, size=count)[part]
    flip = (rng.random(count) < 0.5)[part]
    batch, channels, height, width = images.shape
    padded_width = width + 2 * SHIFT
    padded = np.zeros((batch, channels, height + 2 * SHIFT, padded_width), images.dtype)
    padded[:, :, SHIFT:SHIFT + height, SHIFT:SHIFT + width] = images
    rows = top[:, None] + np.arange(height)
    columns = np.where(flip[:, None], np.arange(width)[::-1], np.arange(width)) + left[:, None]
    pixels = (rows[:, :, None] * padded_width + columns[:, None, :]).reshape(batch, 1, -1)
    shifted = np.take_along_axis(padded.reshape(batch, channels, -1), pixels, axis=2)
    return shifted.reshape(batch, channels, height, width)


class TrainingBatches:
    """The training steps of one epoch from first_step on, one mini-batch per item (rank's share of it, of
    world_size): gathered, normalised and augmented with numpy, with the step's own generator, so that any thread
    makes the same batch. sizes: the whole mini-batch's number of images at each step."""

    def __init__(self, data, batch_size, augmented, seed, epoch, first_step=0, rank=0, world_size=1):
        order = generator(seed, "shuffle", epoch).permutation(len(data.train))
        self.steps = [order[indices] for indices in batches(len(order), batch_size)][first_step:]
        self.sizes = [len(indices) for indices in self.steps]
        self.data, self.augmented, self.seed, self.epoch, self.first_step = data, augmented, seed, epoch, first_step
        self.rank, self.world_size = rank, world_size

    def __len__(self):
        return len(self.steps)

    def __getitem__(self, index):
        indices = self.steps[index]
        part = shard(len(indices), self.rank, self.world_size)
        images = self.data.normalizer(self.data.train.images[indices[part]])
        if self.augmented:
            images = augment(images, generator(self.seed, "augment", self.epoch, self.first_step + index),
                             (len(indices), part))
        return images, self.data.train.labels[indices[part]]


def _host_tensors(images, labels, pin):
    tensors = (paddle.to_tensor(images, place=paddle.CPUPlace()), paddle.to_tensor(labels, place=paddle.CPUPlace()))
    return tuple(tensor.pin_memory() for tensor in tensors) if pin else tensors


def prefetched(batches, ahead, pin=False):
    """Iterate (images, labels, host batch): tensors on the current device, made `ahead` batches in advance by a
    thread, and the host tensors they come from. Closing the iterator stops the thread.

    pin: on a GPU, the thread puts each batch in page-locked memory, so that its copy to the device runs
    asynchronously and may still be queued when the next batch is taken: the caller keeps the host batch until it
    reads a result back (Trainer.read_steps). Paddle's DataLoader pins too (num_workers=0), but waits forever where
    making a batch fails (Paddle 2.6.2 and 3.3.1); here the error reaches the caller.
    """
    on_gpu = paddle.device.get_device().startswith("gpu")
    pin = pin and on_gpu

    def to_device(host):
        return (*(tensor.cuda(blocking=False) for tensor in host), host) if on_gpu else (*host, host)

    if ahead == 0:
        for images, labels in batches:
            yield to_device(_host_tensors(images, labels, pin))
        return
    ready, stopped = queue.Queue(maxsize=ahead), threading.Event()

    def put(item):
        while not stopped.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for images, labels in batches:
                if not put(("batch", _host_tensors(images, labels, pin))):
                    return  # the consumer stopped: the rest of the epoch is not prepared
            put(("end", None))
        except BaseException as error:
            put(("error", error))

    threading.Thread(target=produce, name="dnsd-prefetch", daemon=True).start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "error":
                raise value
            if kind == "end":
                return
            yield to_device(value)
    finally:
        stopped.set()


def batches(num_images, batch_size):
    """Index arrays of consecutive mini-batches in order; the last one may be short."""
    return [np.arange(start, min(start + batch_size, num_images)) for start in range(0, num_images, batch_size)]


def shard(count, rank=0, world_size=1):
    """A data-parallel rank's slice of `count` examples: contiguous, the sizes differing by at most one across
    ranks."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))
