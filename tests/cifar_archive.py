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
