"""CIFAR-10 and CIFAR-100 from the official python archives: decoded once into uint8 arrays, split, normalised and
augmented on whole batches with numpy."""
import hashlib
import os
import pickle
import queue
import tarfile
import threading
import zlib
from dataclasses import dataclass

import numpy as np
import paddle

from DNSD.errors import InputError
from DNSD.runtime import Ranks, generator

IMAGE_SHAPE = (3, 32, 32)
SHIFT = 4


@dataclass(frozen=True)
class CifarSource:
    """Where a CIFAR data set comes from and how its official python archive is laid out."""

    name: str
    archive: str
    md5: str
    train_members: tuple
    test_member: str
    label_key: bytes
    num_classes: int
    classes: tuple = ()  # empty: read from the names_key list of the meta_member
    meta_member: str = ""
    names_key: bytes = b""

    @property
    def url(self):
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"


SOURCES = {
    "cifar10": CifarSource(
        "CIFAR-10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)), "cifar-10-batches-py/test_batch",
        b"labels", 10, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")),
    # The fine labels (100 classes), as in the paper; the coarse ones (20 superclasses) are not used.
    "cifar100": CifarSource(
        "CIFAR-100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", ("cifar-100-python/train",),
        "cifar-100-python/test", b"fine_labels", 100, meta_member="cifar-100-python/meta",
        names_key=b"fine_label_names"),
}


def cache_dir():
    """Where Paddle's own CIFAR datasets keep the archive (~/.cache/paddle/dataset/cifar)."""
    from paddle.dataset.common import DATA_HOME

    return os.path.join(DATA_HOME, "cifar")


def file_digest(path, algorithm="md5"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive_identity(path):
    """What names the data a run used, whatever the file is called or where it is: its resolved path, size and
    sha256. A resume must see the same, and an evaluation on other data says so in its report's name."""
    return {"file": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": file_digest(path, "sha256")}


def locate_archive(data_file=None, source=SOURCES["cifar10"], download_dir=None, url=None):
    """The path of the archive to read: the user's file, or Paddle's cached copy, downloaded and md5-checked once."""
    if data_file:
        if not os.path.isfile(data_file):
            raise InputError(f"data file {data_file} does not exist; pass --data-file PATH to a {source.archive}")
        # A file with the official name must be the official file; any other name is a user-made archive.
        if os.path.basename(data_file) == source.archive and file_digest(data_file) != source.md5:
            raise InputError(f"{data_file} has the official name but not the official md5 {source.md5}; "
                             "it is damaged or incomplete: download it again")
        return data_file
    from paddle.utils.download import get_path_from_url

    download_dir = download_dir or cache_dir()
    try:
        return get_path_from_url(url or source.url, download_dir, source.md5, decompress=False)
    except Exception as error:
        raise InputError(
            f"cannot download {source.name} ({error}); offline, put {source.archive} in {download_dir} "
            f"or pass --data-file PATH") from None


@dataclass
class Dataset:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,) of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)

    def subset(self, indices):
        return Dataset(self.images[indices], self.labels[indices])


def _load_member(archive, member, path, source, dataset_fixed=False):
    try:
        stream = archive.extractfile(member)
        return pickle.load(stream, encoding="bytes")
    except KeyError:
        held = [key for key, other in SOURCES.items() if other != source and other.test_member in archive.getnames()]
        hint = ""
        if held:
            hint = (f" (it holds {SOURCES[held[0]].name}, but the checkpoint was trained on {source.name}: pass "
                    f"--data-file with a {source.archive})" if dataset_fixed
                    else f" (it holds {SOURCES[held[0]].name}: use --dataset {held[0]})")
        raise InputError(f"{path} has no member {member}; it is not in the official {source.name} "
                         f"layout{hint}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError):
        raise InputError(f"{path}: member {member} is not a CIFAR pickle; the archive is damaged") from None


def _describe(value):
    return f"{value.dtype} values of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__


def _read_batch(archive, member, path, source, dataset_fixed=False):
    batch = _load_member(archive, member, path, source, dataset_fixed)
    label_key = source.label_key.decode()
    layout = f"the archive is not in the official {source.name} layout"
    pixels = batch.get(b"data") if isinstance(batch, dict) else None
    raw_labels = batch.get(source.label_key) if isinstance(batch, dict) else None
    if pixels is None or raw_labels is None:
        raise InputError(f"{path}: member {member} lacks b'data' (N x 3072 uint8) or b'{label_key}' (N ints); "
                         f"{layout}")
    # Pixels of another type would be cast without a word: floats in [0, 1] would all become 0 or 1.
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or \
            pixels.shape[1] != int(np.prod(IMAGE_SHAPE)):
        raise InputError(f"{path}: member {member} holds {_describe(pixels)} as b'data', not uint8 pixels of shape "
                         f"(N, 3072); {layout}")
    labels = np.asarray(raw_labels) if isinstance(raw_labels, (list, tuple, np.ndarray)) else np.zeros((0, 0))
    if labels.ndim != 1 or (len(labels) and labels.dtype.kind not in "iu"):
        raise InputError(f"{path}: member {member} holds {_describe(labels)} as b'{label_key}', not a list of "
                         f"integer labels; {layout}")
    if len(pixels) == 0:
        raise InputError(f"{path}: member {member} holds no images; the archive is damaged or incomplete")
    images, labels = pixels.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)
    if len(images) != len(labels) or labels.min(initial=0) < 0 or labels.max(initial=0) >= source.num_classes:
        raise InputError(f"{path}: member {member} has {len(images)} images but {len(labels)} labels, or labels "
                         f"outside 0..{source.num_classes - 1}; the archive is damaged")
    return Dataset(images, labels)


def _class_names(archive, path, source, dataset_fixed=False):
    if source.classes:
        return source.classes
    meta = _load_member(archive, source.meta_member, path, source, dataset_fixed)
    try:
        names = tuple(name.decode() for name in meta[source.names_key])
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError):
        names = ()
    if len(names) != source.num_classes:
        raise InputError(f"{path}: member {source.meta_member} lacks the {source.num_classes} class names "
                         f"({source.names_key!r}); the archive is not in the official {source.name} layout")
    return names


def read_archive(path, source=SOURCES["cifar10"], dataset_fixed=False):
    """(train, test, class names) of an archive in the official layout of source (cifar-10-python.tar.gz's by
    default). dataset_fixed: a checkpoint fixes the data set, so an archive of another one is not answered with
    --dataset."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            train = [_read_batch(archive, member, path, source, dataset_fixed) for member in source.train_members]
            test = _read_batch(archive, source.test_member, path, source, dataset_fixed)
            classes = _class_names(archive, path, source, dataset_fixed)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise InputError(f"cannot read {path} as a gzip tar archive ({error}); the file is truncated or not a "
                         f"{source.archive}: download it again") from None
    images = np.concatenate([batch.images for batch in train])
    labels = np.concatenate([batch.labels for batch in train])
    return Dataset(images, labels), test, classes


def split_train_val(train, val_size, rng):
    """A random split of the training images into (train, validation), drawn from rng."""
    if not 1 <= val_size < len(train):
        raise InputError(f"config key data.val_size (--val-size): got {val_size}, but the archive has {len(train)} "
                         f"training images; choose 1 to {len(train) - 1}")
    order = rng.permutation(len(train))
    return train.subset(np.sort(order[val_size:])), train.subset(np.sort(order[:val_size]))


class Normalizer:
    """(x - mean) / std with statistics of the training split.

    mode "pixel" (the authors' code): the mean image (3, 32, 32) and one std over all training pixels.
    mode "channel": a mean and a std per colour channel.
    """

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
            raise ValueError(f"normalization {mode!r} is not one of pixel, channel")
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
        normalised = np.subtract(images, self.mean, dtype=np.float32)
        normalised *= self.inverse_std
        return normalised


def _std_of_uint8(values):
    """The std of uint8 values from their histogram: exact, and without a float copy of the data."""
    counts = np.bincount(values, minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    mean = counts @ levels / counts.sum()
    return float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum()))


def augment(images, rng, batch_part=None):
    """Shift each image by a random offset in [-4, 4] on each axis with zero fill, then flip it horizontally with
    probability 0.5 (the authors' augmentation: the same as padding by 4 and cropping 32x32 at random).

    Works on a whole (B, C, H, W) batch with one gather of flattened pixels; zero fill happens after normalisation,
    as in the authors' code, so the fill is the mean image.
    batch_part (count, slice): the images are that slice of a mini-batch of count images (a data-parallel rank's
    share); the offsets are drawn for the whole mini-batch, so that the ranks together augment it as one process.
    """
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
    """The training steps of one epoch from first_step on, one mini-batch per item (this rank's share of it):
    gathered, normalised and augmented with numpy, with the step's own generator, so that any thread makes the same
    batch."""

    def __init__(self, data, batch_size, augmented, seed, epoch, first_step=0, ranks=Ranks()):
        order = generator(seed, "shuffle", epoch).permutation(len(data.train))
        self.steps = [order[indices] for indices in batches(len(order), batch_size)][first_step:]
        self.data, self.augmented, self.seed, self.epoch, self.first_step = data, augmented, seed, epoch, first_step
        self.ranks = ranks

    def __len__(self):
        return len(self.steps)

    def __getitem__(self, index):
        indices = self.steps[index]
        part = self.ranks.shard(len(indices))
        images = self.data.normalizer(self.data.train.images[indices[part]])
        if self.augmented:
            images = augment(images, generator(self.seed, "augment", self.epoch, self.first_step + index),
                             (len(indices), part))
        return images, self.data.train.labels[indices[part]]


def _host_tensors(images, labels, pin):
    tensors = (paddle.to_tensor(images, place=paddle.CPUPlace()), paddle.to_tensor(labels, place=paddle.CPUPlace()))
    return tuple(tensor.pin_memory() for tensor in tensors) if pin else tensors


def prefetched(batches, ahead, pin=False):
    """Iterate (images, labels) tensors on the current device, made `ahead` batches in advance by a thread.

    pin: on a GPU, the thread puts each batch in page-locked memory, so that its copy to the device runs
    asynchronously. Paddle's DataLoader does the same with num_workers=0, but when making a batch fails, its loop
    then waits forever (seen with Paddle 2.6.2 and 3.3.1); here the error reaches the caller.
    """
    on_gpu = paddle.device.get_device().startswith("gpu")
    pin = pin and on_gpu

    def to_device(tensors):
        return tuple(tensor.cuda(blocking=False) for tensor in tensors) if on_gpu else tensors

    if ahead == 0:
        for images, labels in batches:
            yield to_device(_host_tensors(images, labels, pin))
        return
    ready, stopped = queue.Queue(maxsize=ahead), threading.Event()

    def put(item):
        while not stopped.is_set():
            try:
                return ready.put(item, timeout=0.1)
            except queue.Full:
                continue

    def produce():
        try:
            for images, labels in batches:
                put(("batch", _host_tensors(images, labels, pin)))
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


@dataclass
class CifarData:
    train: Dataset
    val: Dataset
    test: Dataset
    normalizer: Normalizer
    classes: tuple = SOURCES["cifar10"].classes
    identity: dict = None  # archive_identity of the archive read

    @property
    def num_classes(self):
        return len(self.classes)


def load_cifar(data_config, split_rng, normalizer_state=None):
    """Read the data set's archive once and split train/validation with split_rng; the normaliser is fitted on the
    training split, or restored from normalizer_state (a checkpoint's, which also fixes the data set)."""
    source = SOURCES[data_config.dataset]
    path = locate_archive(data_config.data_file, source)
    train, test, classes = read_archive(path, source, dataset_fixed=normalizer_state is not None)
    train, val = split_train_val(train, data_config.val_size, split_rng)
    if normalizer_state is None:
        normalizer = Normalizer.fit(train.images, data_config.normalization)
    else:
        normalizer = Normalizer.from_state(normalizer_state)
    return CifarData(train, val, test, normalizer, classes, archive_identity(path))
