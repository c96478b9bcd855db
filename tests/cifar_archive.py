"""Writes small archives in the official cifar-10-python.tar.gz layout, for tests that need only the format."""
import io
import pickle
import tarfile

import numpy as np

MEMBERS = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"]


def synthetic_batches(images_per_batch, seed=0, learnable=False):
    """{member: (uint8 images (N, 3072), labels)}; learnable images carry their class as a brightness level."""
    rng = np.random.default_rng(seed)
    batches = {}
    for member in MEMBERS:
        labels = rng.integers(0, 10, size=images_per_batch)
        images = rng.integers(0, 256, size=(images_per_batch, 3072))
        if learnable:
            images = (images // 8 + labels[:, None] * 24).clip(0, 255)
        batches[member] = (images.astype(np.uint8), labels.tolist())
    return batches


def write_archive(path, batches, skip=(), corrupt=()):
    """Write batches as a gzip tar archive; members in skip are left out, members in corrupt hold garbage."""
    with tarfile.open(path, "w:gz") as archive:
        for member, (images, labels) in batches.items():
            if member in skip:
                continue
            payload = b"not a pickle" if member in corrupt else pickle.dumps(
                {b"batch_label": member.encode(), b"labels": labels, b"data": images}, protocol=2)
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


CIFAR100_MEMBERS = ("cifar-100-python/train", "cifar-100-python/test")
CIFAR100_META = "cifar-100-python/meta"
FINE_NAMES = [f"fine_{index:02d}" for index in range(100)]


def write_cifar100_archive(path, train_images, test_images, seed=0, meta=True, fine_key=b"fine_labels"):
    """An archive in the official cifar-100-python.tar.gz layout; the coarse label of an image (its fine label
    modulo 20) differs from its fine label, so that a reader taking the wrong one is caught."""
    rng = np.random.default_rng(seed)
    members = {}
    for member, count in zip(CIFAR100_MEMBERS, (train_images, test_images)):
        fine = rng.integers(0, 100, size=count)
        members[member] = {b"batch_label": member.encode(), fine_key: fine.tolist(),
                           b"coarse_labels": (fine % 20).tolist(), b"filenames": [b"x.png"] * count,
                           b"data": rng.integers(0, 256, size=(count, 3072)).astype(np.uint8)}
    if meta:
        members[CIFAR100_META] = {b"fine_label_names": [name.encode() for name in FINE_NAMES],
                                  b"coarse_label_names": [f"coarse_{index}".encode() for index in range(20)]}
    with tarfile.open(path, "w:gz") as archive:
        for member, content in members.items():
            payload = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path
