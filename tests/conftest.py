import os
import sys
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore", message="No ccache found")

from cifar_archive import synthetic_batches, write_archive  # noqa: E402

MINI_ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "cifar-10-mini.tar.gz")


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory):
    """A synthetic archive in the official layout: 5 x 40 training images and 40 test images."""
    return write_archive(str(tmp_path_factory.mktemp("data") / "tiny.tar.gz"), synthetic_batches(40, learnable=True))


@pytest.fixture
def mini_archive():
    if not os.path.isfile(MINI_ARCHIVE):
        pytest.skip(f"the real CIFAR-10 subset is not at {os.path.normpath(MINI_ARCHIVE)} (shared/ is not beside "
                    "the repository)")
    return MINI_ARCHIVE
