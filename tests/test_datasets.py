"""The CIFAR pipeline: reading the official layout, the seeded split, normalisation and augmentation."""
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import paddle
import pytest

from cifar_archive import MEMBERS, synthetic_batches, write_archive
from DNSD.datasets import Splits, load_data
from DNSD.datasets.cifar import locate_archive, read_archive
from DNSD.datasets.pipeline import Dataset, Normalizer, TrainingBatches, augment, batches, prefetched, split_train_val
from DNSD.errors import InputError
from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint
from DNSD.schema import DataConfig


def test_archive_is_read_in_the_official_layout(tmp_path):
    contents = synthetic_batches(12, seed=5)
    train, test, classes = read_archive(write_archive(str(tmp_path / "a.tar.gz"), contents))
    assert classes[0] == "airplane" and classes[9] == "truck" and len(classes) == 10
    assert train.images.shape == (60, 3, 32, 32) and train.images.dtype == np.uint8
    assert test.images.shape == (12, 3, 32, 32)
    first_images, first_labels = contents[MEMBERS[0]]
    # A row holds the red plane, then green, then blue, each 32 rows of 32 pixels.
    assert np.array_equal(train.images[0, 1, 2, 3], first_images[0, 1024 + 2 * 32 + 3])
    assert train.labels[:12].tolist() == first_labels
    assert test.labels.tolist() == contents[MEMBERS[-1]][1]


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "member missing", "member not a pickle", "wrong keys"])
def test_damaged_archive_is_a_clear_error(tmp_path, damage):
    path = str(tmp_path / "damaged.tar.gz")
    contents = synthetic_batches(10)
    if damage == "truncated":
        write_archive(path, contents)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
    elif damage == "not gzip":
        Path(path).write_text("this is not an archive")
    elif damage == "member missing":
        write_archive(path, contents, skip=[MEMBERS[2]])
    elif damage == "member not a pickle":
        write_archive(path, contents, corrupt=[MEMBERS[-1]])
    else:
        import io
        import tarfile

        with tarfile.open(path, "w:gz") as archive:
            for member in MEMBERS:
                payload = pickle.dumps({b"pixels": [1, 2, 3]}, protocol=2)
                info = tarfile.TarInfo(member)
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    with pytest.raises(InputError) as error:
        read_archive(path)
    assert path in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file_and_official_name_with_wrong_md5(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        locate_archive(str(tmp_path / "nowhere.tar.gz"))
    fake = tmp_path / "cifar-10-python.tar.gz"
    fake.write_bytes(gzip.compress(b"not the real thing"))
    with pytest.raises(InputError, match="md5"):
        locate_archive(str(fake))
    renamed = tmp_path / "my-cifar.tar.gz"
    renamed.write_bytes(b"x")
    assert locate_archive(str(renamed)) == str(renamed)


@pytest.mark.slow
def test_failed_download_says_where_to_put_the_archive(tmp_path):
    # Port 9 (discard) on the loopback is closed: the download fails at once, as it does offline.
    with pytest.raises(InputError) as error:
        locate_archive(None, url="http://127.0.0.1:9/cifar-10-python.tar.gz", download_dir=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message and "--data-file" in message
    assert not os.listdir(tmp_path)


def test_the_normaliser_survives_a_checkpoint_bit_for_bit(tmp_path):
    # Of 1,000 such stds, a float32 copy of the std gives another float32 inverse back for about one in six.
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    for std in np.random.default_rng(1).uniform(40, 80, 200):
        normalizer = Normalizer(np.full((3, 32, 32), 120.5), std)
        save_checkpoint(str(tmp_path / "state"), {"normalizer": normalizer.state()})
        restored = Normalizer.from_state(read_checkpoint(str(tmp_path / "state"))["normalizer"])
        assert np.array_equal(restored(images), normalizer(images)), std


def numbered_dataset(count):
    """Images whose first pixel holds their index (mod 256), labels that hold their index."""
    images = np.zeros((count, 3, 32, 32), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(count) % 256
    return Dataset(images, np.arange(count))


def test_split_is_disjoint_complete_and_fixed_by_the_seed():
    dataset = numbered_dataset(1000)
    train, val = split_train_val(dataset, 100, np.random.default_rng(4))
    again_train, again_val = split_train_val(dataset, 100, np.random.default_rng(4))
    other_train, other_val = split_train_val(dataset, 100, np.random.default_rng(5))
    assert len(train) == 900 and len(val) == 100
    assert set(train.labels).isdisjoint(val.labels)
    assert sorted(np.concatenate([train.labels, val.labels])) == list(range(1000))
    assert np.array_equal(train.labels, again_train.labels) and np.array_equal(val.labels, again_val.labels)
    assert not np.array_equal(val.labels, other_val.labels)
    assert np.array_equal(train.images[:, 0, 0, 0], train.labels % 256)


def test_validation_size_must_leave_training_images():
    with pytest.raises(InputError, match="val_size"):
        split_train_val(numbered_dataset(50), 50, np.random.default_rng(0))


def test_pixel_normalisation_uses_the_training_split_only(tmp_path):
    contents = synthetic_batches(30, seed=2)
    path = write_archive(str(tmp_path / "a.tar.gz"), contents)
    data = load_data(DataConfig(data_file=path, val_size=50), np.random.default_rng(0))
    train = data.train.images.astype(np.float64)
    assert data.normalizer.mean.shape == (3, 32, 32)
    assert np.allclose(data.normalizer.mean, train.mean(axis=0), atol=1e-4)
    assert data.normalizer.state()["std"] == pytest.approx(train.std(), rel=1e-5)
    everything = np.concatenate([data.train.images, data.val.images, data.test.images]).astype(np.float64)
    assert not np.allclose(data.normalizer.mean, everything.mean(axis=0), atol=1e-3)
    normalised = data.normalizer(data.train.images)
    assert normalised.dtype == np.float32
    assert np.allclose(normalised.mean(axis=0), 0, atol=1e-4)
    state = data.normalizer.state()
    assert np.allclose(normalised * state["std"] + state["mean"], train, atol=1e-3)


def test_channel_normalisation_gives_zero_mean_unit_std_per_channel():
    images = np.random.default_rng(0).integers(0, 256, size=(200, 3, 32, 32)).astype(np.uint8)
    images[:, 1] //= 4
    normalizer = Normalizer.fit(images, "channel")
    normalised = normalizer(images)
    assert normalizer.mean.shape == (3, 1, 1)
    assert np.allclose(normalised.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    assert np.allclose(normalised.std(axis=(0, 2, 3)), 1, atol=1e-4)


def shifted(image, dy, dx, flip):
    """The authors' augmentation of one image, written plainly: move content by (dy, dx), zero fill, then flip."""
    out = np.zeros_like(image)
    height, width = image.shape[1:]
    out[:, max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)] = \
        image[:, max(0, -dy):height + min(0, -dy), max(0, -dx):width + min(0, -dx)]
    return out[:, :, ::-1] if flip else out


def test_augmentation_shifts_by_at_most_four_with_zero_fill_and_flips_half_the_time():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(600, 3, 32, 32)).astype(np.float32) + 5
    augmented = augment(images, np.random.default_rng(1))
    assert augmented.shape == images.shape and augmented.dtype == np.float32
    found = []
    for original, result in zip(images, augmented):
        matches = [(dy, dx, flip) for dy in range(-4, 5) for dx in range(-4, 5) for flip in (False, True)
                   if np.array_equal(shifted(original, dy, dx, flip), result)]
        assert len(matches) == 1
        found.append(matches[0])
    dys, dxs, flips = zip(*found)
    assert set(dys) == set(range(-4, 5)) and set(dxs) == set(range(-4, 5))
    assert abs(np.mean(flips) - 0.5) < 4 * np.sqrt(0.25 / len(flips))
    assert not np.array_equal(augment(images, np.random.default_rng(1)), augment(images, np.random.default_rng(2)))
    assert np.array_equal(augment(images, np.random.default_rng(1)), augmented)


def test_evaluation_batches_cover_every_image_in_order_with_a_short_last_batch():
    parts = batches(10, 4)
    assert [part.tolist() for part in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def numbered_cifar(count=100):
    dataset = numbered_dataset(count)
    return Splits(dataset, dataset, dataset, Normalizer(np.zeros((3, 32, 32)), 1.0))


def test_training_batches_visit_every_image_once_per_epoch_in_a_seeded_order():
    data = numbered_cifar()
    epoch_one = [labels for _, labels in TrainingBatches(data, 32, False, seed=0, epoch=1)]
    assert [len(labels) for labels in epoch_one] == [32, 32, 32, 4]
    assert sorted(np.concatenate(epoch_one).tolist()) == list(range(100))
    again = [labels for _, labels in TrainingBatches(data, 32, False, seed=0, epoch=1)]
    epoch_two = [labels for _, labels in TrainingBatches(data, 32, False, seed=0, epoch=2)]
    other_seed = [labels for _, labels in TrainingBatches(data, 32, False, seed=1, epoch=1)]
    assert all(np.array_equal(a, b) for a, b in zip(epoch_one, again))
    assert not np.array_equal(epoch_one[0], epoch_two[0]) and not np.array_equal(epoch_one[0], other_seed[0])


def test_a_step_makes_the_same_batch_whatever_step_the_epoch_resumes_from():
    data = numbered_cifar()
    whole = TrainingBatches(data, 16, True, seed=3, epoch=2)
    resumed = TrainingBatches(data, 16, True, seed=3, epoch=2, first_step=4)
    assert len(resumed) == len(whole) - 4
    for index in range(len(resumed)):
        assert np.array_equal(resumed[index][0], whole[index + 4][0])
        assert np.array_equal(resumed[index][1], whole[index + 4][1])


@pytest.mark.parametrize("ahead", [0, 3])
def test_prefetched_batches_are_the_same_tensors_with_or_without_a_thread(ahead):
    data = numbered_cifar()
    plain = TrainingBatches(data, 32, True, seed=0, epoch=1)
    loaded = list(prefetched(plain, ahead))
    assert len(loaded) == len(plain)
    for (images, labels, host), (expected_images, expected_labels) in zip(loaded, plain):
        assert [tensor.numpy().tobytes() for tensor in host] == [images.numpy().tobytes(), labels.numpy().tobytes()]
        assert images.dtype == paddle.float32 and labels.dtype == paddle.int64
        assert np.array_equal(images.numpy(), expected_images) and np.array_equal(labels.numpy(), expected_labels)


class FailingBatches:
    def __iter__(self):
        yield np.zeros((2, 3, 32, 32), np.float32), np.zeros(2, np.int64)
        raise MemoryError("no room for the next batch")


@pytest.mark.parametrize("ahead", [0, 2])
def test_an_error_while_making_a_batch_reaches_the_training_loop(ahead):
    batches = prefetched(FailingBatches(), ahead)
    next(batches)
    with pytest.raises(MemoryError, match="no room"):
        next(batches)


def test_stopping_early_stops_the_prefetch_thread_preparing_the_epoch():
    import threading

    made = []

    class Counted(TrainingBatches):
        def __getitem__(self, index):
            made.append(index)
            return super().__getitem__(index)

    epoch = Counted(numbered_cifar(), 2, True, seed=0, epoch=1)
    batches = prefetched(epoch, 2)
    next(batches)
    batches.close()
    for thread in threading.enumerate():
        if thread.name == "dnsd-prefetch":
            thread.join(timeout=5)
            assert not thread.is_alive()
    assert len(made) <= 1 + 2 + 1 < len(epoch)  # the one taken, the queue's two, the one refused a place


def test_pinning_happens_in_the_prefetch_thread_on_a_gpu(monkeypatch):
    import threading

    pinned_in = []
    moved = []
    monkeypatch.setattr(paddle.device, "get_device", lambda: "gpu:0")
    monkeypatch.setattr(paddle.Tensor, "cuda", lambda tensor, blocking=True: moved.append(blocking) or tensor)

    def pin_memory(tensor):
        pinned_in.append(threading.current_thread().name)
        return tensor

    monkeypatch.setattr(paddle.Tensor, "pin_memory", pin_memory)
    loaded = list(prefetched(TrainingBatches(numbered_cifar(), 50, False, seed=0, epoch=1), 2, pin=True))
    assert pinned_in == ["dnsd-prefetch"] * 4  # two batches, images and labels
    assert moved == [False] * 4  # asynchronous copies to the device
    assert all(host[0] is images and host[1] is labels for images, labels, host in loaded)  # the pinned, handed on


def test_no_pinning_on_the_cpu(monkeypatch):
    monkeypatch.setattr(paddle.Tensor, "pin_memory", lambda tensor: pytest.fail("pinned on the CPU"))
    assert len(list(prefetched(TrainingBatches(numbered_cifar(), 50, False, seed=0, epoch=1), 2, pin=True))) == 2
