"""The data sets a run can use (data.dataset), each read by a module of its own, and what a run gets of any of them:
training, validation and test splits, the normalisation, the class names and the identity of the archive read."""
from dataclasses import dataclass
from typing import Callable

from DNSD.datasets import cifar, svhn
from DNSD.datasets.pipeline import Dataset, Normalizer, balanced_subset, split_train_val
from DNSD.randomness import generator


@dataclass(frozen=True)
class Reader:
    """What a run needs of a data set, whichever module reads it."""

    num_classes: int
    read: Callable  # (data_config, dataset_fixed) -> (train, test, class names, identity)
    split: Callable = split_train_val  # (train, val_size, rng) -> (train, val): how validation images are held out


READERS = {
    "cifar10": Reader(cifar.SOURCES["cifar10"].num_classes, cifar.read),
    "cifar100": Reader(cifar.SOURCES["cifar100"].num_classes, cifar.read),
    "svhn": Reader(svhn.SOURCE.num_classes, svhn.read, svhn.split),
}


@dataclass
class Splits:
    """A run's data: its three splits, their normalisation, the class names and what identifies the data read."""

    train: Dataset
    val: Dataset
    test: Dataset
    normalizer: Normalizer
    classes: tuple = cifar.SOURCES["cifar10"].classes
    identity: dict = None  # what names the archive read: {"file", "bytes", "sha256"}

    @property
    def num_classes(self):
        return len(self.classes)


def num_classes(dataset):
    """The number of classes of a data set, before reading it."""
    return READERS[dataset].num_classes


def load_splits(config, normalizer_state=None):
    """The data of a run, split by its seed: its own statistics, or a checkpoint's."""
    return load_data(config.data, generator(config.run.seed, "split"), normalizer_state)


def load_data(data_config, split_rng, normalizer_state=None):
    """Read the data set once and split train/validation with split_rng; the normaliser is fitted on the training
    split, or restored from normalizer_state (a checkpoint's, which also fixes the data set)."""
    reader = READERS[data_config.dataset]
    train, test, classes, identity = reader.read(data_config, normalizer_state is not None)
    train, val = reader.split(train, data_config.val_size, split_rng)
    if data_config.train_images:
        train = balanced_subset(train, data_config.train_images)
    if normalizer_state is None:
        normalizer = Normalizer.fit(train.images, data_config.normalization)
    else:
        normalizer = Normalizer.from_state(normalizer_state)
    return Splits(train, val, test, normalizer, classes, identity)


def official_digest(dataset):
    """(name, sha256) of a data set's official archive, or None where it has none (SVHN's files)."""
    source = cifar.SOURCES.get(dataset)
    return (source.name, source.sha256) if source else None
