"""CIFAR-100 (`--dataset cifar100`): the official archive layout, the fine labels, 100 classes end to end."""
import os
import pickle
import tarfile

import pytest

from cifar_archive import CIFAR100_MEMBERS, FINE_NAMES, synthetic_batches, write_archive, write_cifar100_archive
from DNSD.datasets.cifar import SOURCES, locate_archive, read_archive
from DNSD.errors import InputError
from DNSD.schema import DataConfig
from helpers import assert_one_line_error, dnsd, read_json

CIFAR100 = SOURCES["cifar100"]


@pytest.fixture(scope="module")
def cifar100_archive(tmp_path_factory):
    return write_cifar100_archive(str(tmp_path_factory.mktemp("cifar100") / "tiny100.tar.gz"), 300, 60, seed=4)


def test_the_fine_labels_and_their_names_are_read(tmp_path):
    path = write_cifar100_archive(str(tmp_path / "a.tar.gz"), 30, 10, seed=1)
    train, test, classes = read_archive(path, CIFAR100)
    with tarfile.open(path) as archive:
        stored = {member: pickle.load(archive.extractfile(member), encoding="bytes") for member in CIFAR100_MEMBERS}
    assert train.labels.tolist() == stored[CIFAR100_MEMBERS[0]][b"fine_labels"]
    assert test.labels.tolist() == stored[CIFAR100_MEMBERS[1]][b"fine_labels"]
    assert train.images[3, 2, 1, 0] == stored[CIFAR100_MEMBERS[0]][b"data"][3, 2048 + 32]
    assert list(classes) == FINE_NAMES


def test_the_source_is_paddles_official_archive():
    # The md5 Paddle's own paddle.vision.datasets.Cifar100 checks.
    from paddle.vision.datasets import cifar

    assert (CIFAR100.archive, CIFAR100.md5) == ("cifar-100-python.tar.gz", cifar.CIFAR100_MD5)
    from DNSD.datasets import READERS

    choices = set(DataConfig.__dataclass_fields__["dataset"].metadata["choices"])
    assert set(READERS) == choices and set(SOURCES) == {name for name in choices if name.startswith("cifar")}


@pytest.mark.parametrize("problem, fragment", [("no meta", "cifar-100-python/meta"),
                                               ("coarse labels only", "b'fine_labels'")])
def test_an_archive_out_of_layout_is_a_clear_error(tmp_path, problem, fragment):
    path = str(tmp_path / "a.tar.gz")
    write_cifar100_archive(path, 10, 10, meta=problem != "no meta",
                           fine_key=b"labels" if problem == "coarse labels only" else b"fine_labels")
    with pytest.raises(InputError, match="official CIFAR-100 layout") as error:
        read_archive(path, CIFAR100)
    assert fragment in str(error.value)


@pytest.mark.slow
def test_official_name_with_wrong_md5_and_failed_download(tmp_path):
    fake = tmp_path / "cifar-100-python.tar.gz"
    write_cifar100_archive(str(fake), 10, 10)
    with pytest.raises(InputError, match=CIFAR100.md5):
        locate_archive(str(fake), CIFAR100)
    with pytest.raises(InputError, match="cannot download CIFAR-100") as error:
        locate_archive(None, CIFAR100, download_dir=str(tmp_path / "cache"), url="http://127.0.0.1:9/x.tar.gz")
    assert "cifar-100-python.tar.gz" in str(error.value)


def test_the_wrong_dataset_for_an_archive_names_the_right_one(tmp_path, cifar100_archive):
    cifar10_archive = write_archive(str(tmp_path / "ten.tar.gz"), synthetic_batches(10))
    run = ["--output-dir", str(tmp_path / "run"), "--depth", "8", "--epochs", "1", "--val-size", "20"]
    assert_one_line_error(dnsd("--dataset", "cifar100", "--data-file", cifar10_archive, *run),
                          "not in the official CIFAR-100 layout", "--dataset cifar10")
    assert_one_line_error(dnsd("--dataset", "cifar10", "--data-file", cifar100_archive, *run),
                          "not in the official CIFAR-10 layout", "--dataset cifar100")
    assert not os.path.exists(str(tmp_path / "run" / "config.yaml"))


@pytest.mark.slow
def test_training_and_evaluation_on_cifar100(tmp_path, cifar100_archive):
    run_dir = str(tmp_path / "run")
    result = dnsd("--dataset", "cifar100", "--data-file", cifar100_archive, "--output-dir", run_dir, "--depth", "8",
                  "--epochs", "1", "--batch-size", "64", "--val-size", "60")
    assert result.returncode == 0, result.stderr
    report = read_json(os.path.join(run_dir, "best.test.json"))
    assert report["images"] == 60 and list(report["per_class_accuracy"]) == FINE_NAMES
    evaluation = dnsd("--mode", "eval", "--checkpoint", os.path.join(run_dir, "best.pdckpt"))
    assert evaluation.returncode == 0, evaluation.stderr
    assert f"test error {report['error']:.2f} %" in evaluation.stdout
    # 100 classes are too many for the console: the report file holds them, and the console says where.
    assert "fine_00" not in evaluation.stdout and "best.test.json" in evaluation.stdout
    prefix = str(tmp_path / "exported" / "model")
    assert dnsd("--mode", "export", "--checkpoint", os.path.join(run_dir, "best.pdckpt"),
                "--export-prefix", prefix).returncode == 0
    assert read_json(f"{prefix}-info.json")["classes"] == FINE_NAMES
