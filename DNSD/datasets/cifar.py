"""CIFAR-10 and CIFAR-100 from their official python archives, decoded once into uint8 arrays: where the archive is,
that it is the official layout, and what identifies it."""
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass

import numpy as np

from DNSD.datasets.download import cache_dir, fetch
from DNSD.datasets.pipeline import IMAGE_SHAPE, Dataset
from DNSD.errors import InputError
from DNSD.files import file_digest
from DNSD.untrusted import DataUnpickler, regular_file


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
    largest_member_images: int = 10_000  # the images of the official archive's largest batch
    sha256: str = ""  # the official archive's, which dnsd audit names (Keras and TFDS check the same digests)

    @property
    def member_limit(self):
        """The most bytes a member may hold: the largest official batch's pixels, 5 % and 1 MiB more."""
        return int(self.largest_member_images * np.prod(IMAGE_SHAPE) * 1.05) + (1 << 20)

    @property
    def url(self):
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"


SOURCES = {
    "cifar10": CifarSource(
        "CIFAR-10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)), "cifar-10-batches-py/test_batch",
        b"labels", 10, ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
    # The fine labels (100 classes), as in the paper; the coarse ones (20 superclasses) are not used.
    "cifar100": CifarSource(
        "CIFAR-100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", ("cifar-100-python/train",),
        "cifar-100-python/test", b"fine_labels", 100, meta_member="cifar-100-python/meta",
        names_key=b"fine_label_names", largest_member_images=50_000,
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),
}


def archive_identity(path):
    """What names the data a run used, whatever the file is called or where it is: its resolved path, size and
    sha256. A resume must see the same, and an evaluation on other data says so in its report's name."""
    return {"file": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": file_digest(path, "sha256")}


def locate_archive(data_file=None, source=SOURCES["cifar10"], download_dir=None, url=None):
    """The path of the archive to read: the user's file, or Paddle's cached copy, downloaded and md5-checked once."""
    if data_file:
        if not os.path.isfile(regular_file(data_file, "--data-file")):
            raise InputError(f"data file {data_file} does not exist; pass --data-file PATH to a {source.archive}")
        # A file with the official name must be the official file; any other name is a user-made archive.
        if os.path.basename(data_file) == source.archive and file_digest(data_file) != source.md5:
            raise InputError(f"{data_file} has the official name but not the official md5 {source.md5}; "
                             "it is damaged or incomplete: download it again")
        return data_file
    download_dir = download_dir or cache_dir("cifar")  # where Paddle's own CIFAR readers keep it
    try:
        return fetch(url or source.url, download_dir, source.md5)
    except Exception as error:
        raise InputError(
            f"cannot download {source.name} ({error}); offline, put {source.archive} in {download_dir} "
            f"or pass --data-file PATH") from None


MAX_MEMBERS = 64  # an official archive has fewer than 10


def _members(archive, path, source):
    """{name: TarInfo} of the archive's files, each checked against the largest an official archive holds before
    anything of it is read."""
    members = {}
    for count, info in enumerate(iter(archive.next, None)):
        if count >= MAX_MEMBERS:
            raise InputError(f"{path} holds more than {MAX_MEMBERS} members; an official {source.archive} holds fewer "
                             "than 10: pass the official archive")
        if info.size > source.member_limit:
            raise InputError(f"{path}: member {info.name} is {info.size:,} bytes, more than the largest batch of the "
                             f"official {source.name} ({source.member_limit:,} bytes at most); pass the official "
                             "archive")
        if info.isfile():
            members[info.name] = info
    return members


def _load_member(archive, members, member, path, source, dataset_fixed=False):
    if member not in members:
        held = [key for key, other in SOURCES.items() if other != source and other.test_member in members]
        hint = ""
        if held:
            hint = (f" (it holds {SOURCES[held[0]].name}, but the checkpoint was trained on {source.name}: pass "
                    f"--data-file with a {source.archive})" if dataset_fixed
                    else f" (it holds {SOURCES[held[0]].name}: use --dataset {held[0]})")
        raise InputError(f"{path} has no member {member}; it is not in the official {source.name} layout{hint}")
    try:
        return DataUnpickler(archive.extractfile(members[member]), encoding="bytes").load()
    except pickle.UnpicklingError as error:
        raise InputError(f"{path}: member {member} is not a CIFAR pickle ({error}); nothing in it was run") from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError, RecursionError,
            MemoryError):
        raise InputError(f"{path}: member {member} is not a CIFAR pickle; the archive is damaged") from None


def _describe(value):
    return f"{value.dtype} values of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__


def _read_batch(archive, members, member, path, source, dataset_fixed=False):
    batch = _load_member(archive, members, member, path, source, dataset_fixed)
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
    try:  # ragged lists fail here
        labels = np.asarray(raw_labels) if isinstance(raw_labels, (list, tuple, np.ndarray)) else np.zeros((0, 0))
    except ValueError:
        labels = np.zeros((0, 0))
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


def _class_names(archive, members, path, source, dataset_fixed=False):
    if source.classes:
        return source.classes
    meta = _load_member(archive, members, source.meta_member, path, source, dataset_fixed)
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
            members = _members(archive, path, source)
            train = [_read_batch(archive, members, member, path, source, dataset_fixed)
                     for member in source.train_members]
            test = _read_batch(archive, members, source.test_member, path, source, dataset_fixed)
            classes = _class_names(archive, members, path, source, dataset_fixed)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise InputError(f"cannot read {path} as a gzip tar archive ({error}); the file is truncated or not a "
                         f"{source.archive}: download it again") from None
    images = np.concatenate([batch.images for batch in train])
    labels = np.concatenate([batch.labels for batch in train])
    return Dataset(images, labels), test, classes




def read(data_config, dataset_fixed=False):
    """(train, test, class names, archive identity) of the archive data_config names (or Paddle's cached copy)."""
    source = SOURCES[data_config.dataset]
    path = locate_archive(data_config.data_file, source)
    train, test, classes = read_archive(path, source, dataset_fixed)
    return train, test, classes, archive_identity(path)
