"""SVHN from its official MATLAB files (train_32x32.mat, test_32x32.mat, extra_32x32.mat), decoded once into uint8
arrays, and the authors' validation split: equal numbers of each class, two thirds from the train set and one third
from the extra set (400 + 200 per class of the 6,000 of their svhn-dataset.lua)."""
import hashlib
import os
from dataclasses import dataclass

import numpy as np

from DNSD.datasets.download import cache_dir, fetch
from DNSD.datasets.pipeline import IMAGE_SHAPE, Dataset
from DNSD.errors import InputError
from DNSD.files import file_digest


@dataclass(frozen=True)
class SvhnSource:
    name: str = "SVHN"
    url: str = "http://ufldl.stanford.edu/housenumbers/"
    # The md5 of each official file, checked when DNSD downloads it.
    files: tuple = (("train", "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                    ("test", "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
                    ("extra", "extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"))
    num_classes: int = 10
    # The digit each class is; the files label the digit 0 with 10.
    classes: tuple = tuple(str(digit) for digit in range(10))

    def file(self, part):
        return next(name for key, name, _ in self.files if key == part)


SOURCE = SvhnSource()


@dataclass
class TrainAndExtra(Dataset):
    """The train set's images followed by the extra set's: the first train_count are the train set's."""

    train_count: int = 0


def locate_files(data_folder, parts, source=SOURCE, download_dir=None):
    """{part: path} of the official files: in the user's folder, or in Paddle's dataset cache, downloaded and
    md5-checked once."""
    if data_folder:
        if not os.path.isdir(data_folder):
            raise InputError(f"--data-file {data_folder}: SVHN is read from a folder holding "
                             f"{', '.join(name for _, name, _ in SOURCE.files)}; pass that folder")
        paths = {part: os.path.join(data_folder, SOURCE.file(part)) for part in parts}
        missing = [path for path in paths.values() if not os.path.isfile(path)]
        if missing:
            without_extra = " (or train without the extra set: --no-extra)" if "extra_32x32" in missing[0] else ""
            raise InputError(f"{missing[0]} does not exist; download it from {SOURCE.url} into {data_folder}"
                             f"{without_extra}")
        return paths
    folder, paths = download_dir or cache_dir("svhn"), {}
    for part, name, md5 in source.files:
        if part in parts:
            try:
                paths[part] = fetch(source.url + name, folder, md5)
            except Exception as error:
                raise InputError(f"cannot download {name} ({error}); offline, put the SVHN files in {folder} "
                                 "or pass --data-file FOLDER") from None
    return paths


def _variables(path):
    """{name: (shape, MATLAB class)} of a MATLAB v5 file, read from its headers without loading the data."""
    import scipy.io

    try:
        return {name: (shape, kind) for name, shape, kind in scipy.io.whosmat(path)}
    except NotImplementedError:
        raise InputError(f"{path} is a MATLAB v7.3 (HDF5) file, not the official v5 file; download it again") from None
    except Exception as error:
        raise InputError(f"cannot read {path} as a MATLAB file ({error}); it is damaged or not an SVHN file: "
                         "download it again") from None


NUMBERS = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "double", "single")


def image_count(path):
    """The number of images of an official file, from its headers alone: X of shape (32, 32, 3, N) uint8, y of shape
    (N, 1) with labels 1..10 (10 for the digit 0). The images may take no more bytes than the file: the official files
    are not compressed, and a compressed one could expand to any size."""
    layout = f"{path} is not in the official SVHN layout (X: 32x32x3xN uint8, y: Nx1 labels 1..10)"
    variables = _variables(path)
    if "X" not in variables or "y" not in variables:
        raise InputError(f"{layout}: it holds {', '.join(variables) or 'no variables'}")
    (x_shape, x_kind), (y_shape, y_kind) = variables["X"], variables["y"]
    count = x_shape[-1] if len(x_shape) == 4 else 0
    if tuple(x_shape[:3]) != (32, 32, 3) or x_kind != "uint8" or count == 0 or \
            tuple(y_shape) not in ((count, 1), (1, count)) or y_kind not in NUMBERS:
        raise InputError(f"{layout}: X is {x_kind} of shape {tuple(x_shape)}, y is {y_kind} of shape "
                         f"{tuple(y_shape)}")
    if count * int(np.prod(IMAGE_SHAPE)) > os.path.getsize(path):
        raise InputError(f"{layout}: its {count:,} images are compressed into a smaller file; the official files "
                         "are not, download it again")
    return count


def read_part(path, into=None):
    """(images, labels) of one official file: uint8 images (N, 3, 32, 32) and labels 0..9. into: the array of shape
    (N, 3, 32, 32) to fill, its file's image_count already checked; None: a new one, after the check."""
    import scipy.io

    images = into if into is not None else np.empty((image_count(path), *IMAGE_SHAPE), np.uint8)
    try:
        loaded = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as error:
        raise InputError(f"cannot read {path} ({error}); the file is damaged: download it again") from None
    labels = np.asarray(loaded.pop("y")).reshape(-1)
    if not np.all((labels >= 1) & (labels <= 10) & (labels == np.round(labels))):
        raise InputError(f"{path} is not in the official SVHN layout: its labels are not all integers in 1..10; the "
                         "file is damaged")
    pixels = loaded.pop("X")
    if pixels.dtype != np.uint8:  # the data's own element type, which a patched header does not change
        raise InputError(f"{path} stores its images as {pixels.dtype} although its header says uint8; it is not an "
                         "official SVHN file: download it again")
    images[...] = pixels.transpose(3, 2, 0, 1)  # (H, W, C, N) -> (N, C, H, W)
    return images, (labels.astype(np.int64) % 10)


def identity(paths):
    """What names the files a run used: their folder, total size and one sha256 over each file's sha256."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(file_digest(path, "sha256").encode())
    return {"file": os.path.abspath(os.path.dirname(paths[0])), "bytes": sum(map(os.path.getsize, paths)),
            "sha256": digest.hexdigest()}


def read(data_config, dataset_fixed=False):
    """(train, test, class names, identity): the train set followed by the extra set (data.extra) as one array of
    uint8 images, filled file by file so that only one file's copy is ever added to it."""
    parts = ("train", "extra", "test") if data_config.extra else ("train", "test")
    paths = locate_files(data_config.data_file, parts)
    training = [paths[part] for part in parts if part != "test"]
    counts = [image_count(path) for path in training]
    images = np.empty((sum(counts), *IMAGE_SHAPE), np.uint8)
    labels, start = [], 0
    for path, count in zip(training, counts):
        labels.append(read_part(path, images[start:start + count])[1])
        start += count
    train = TrainAndExtra(images, np.concatenate(labels), counts[0])
    test = Dataset(*read_part(paths["test"]))
    return train, test, SOURCE.classes, identity([paths[part] for part in parts])


def split(train, val_size, rng):
    """The authors' validation split: val_size images, the same number of each class, two thirds drawn from the
    train set and one third from the extra set (all from the train set without it): "the first k of each class" of
    each set in an order drawn from rng."""
    with_extra = len(train) > train.train_count
    shares = ((train.train_count, 2), (len(train) - train.train_count, 1)) if with_extra else ((len(train), 1),)
    parts = sum(weight for _, weight in shares) * SOURCE.num_classes
    if val_size % parts:
        example = "6000 (the authors': 400 + 200 per class)" if with_extra else "5000"
        raise InputError(f"config key data.val_size (--val-size): got {val_size}, but SVHN's validation set takes "
                         f"each class equally{', two thirds from train and one third from extra' * with_extra}, "
                         f"so it must be a multiple of {parts}, e.g. {example}")
    chosen, start = [], 0
    for count, weight in shares:
        order = start + rng.permutation(count)
        ordered_labels = train.labels[order]
        per_class = val_size // parts * weight
        for label in range(SOURCE.num_classes):
            picked = order[ordered_labels == label][:per_class]
            if len(picked) < per_class:
                where = "extra" if start else "train"
                raise InputError(f"the SVHN {where} set holds {len(picked)} images of digit {label}, fewer than the "
                                 f"{per_class} the validation set takes; choose a smaller --val-size")
            chosen.append(picked)
        start += count
    val = np.sort(np.concatenate(chosen))
    kept = np.ones(len(train), bool)
    kept[val] = False
    return train.subset(np.flatnonzero(kept)), train.subset(val)
