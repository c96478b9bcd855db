import atexit
import os
import shutil
import sys
import tempfile

# The suite never writes into the user's home (Paddle's dataset cache, VisualDL's folder, DNSD's engine verdicts):
# a home of its own, set before Paddle is imported, which reads it then.
os.environ["HOME"] = tempfile.mkdtemp(prefix="dnsd-tests-home-")
atexit.register(shutil.rmtree, os.environ["HOME"], True)
# DNSD's cache, one for the session: the workers (pytest-xdist) inherit the main process's, and DNSD's CPU operators
# are compiled once (test_console's new home compiles them again).
if "DNSD_TESTS_CACHE" not in os.environ:
    os.environ["DNSD_TESTS_CACHE"] = tempfile.mkdtemp(prefix="dnsd-tests-cache-")
    atexit.register(shutil.rmtree, os.environ["DNSD_TESTS_CACHE"], True)
os.environ["XDG_CACHE_HOME"] = os.environ["DNSD_TESTS_CACHE"]

import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))  # forgery

from cifar_archive import synthetic_batches, write_archive  # noqa: E402
from DNSD.models.batch_norm import use_portable_batch_norm  # noqa: E402
from DNSD.models.operators import use_cpu_operators  # noqa: E402
from DNSD.system.device import configure_cpu  # noqa: E402
from helpers import TINY_RUN, dnsd, real_archive  # noqa: E402

# The CPU settings of a run, before any test computes: MKL reads MKL_DEBUG_CPU_TYPE and MKL_CBWR at its first call, so
# a test that computed first would leave this process on another code path than a training process, and other bits.
configure_cpu()


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory):
    """A synthetic archive in the official layout: 5 x 40 training images and 40 test images."""
    return write_archive(str(tmp_path_factory.mktemp("data") / "tiny.tar.gz"), synthetic_batches(40, learnable=True))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_archive):
    """A finished two-epoch run of ResNet-8 on the tiny archive: (run folder, the training process's result)."""
    run_dir = str(tmp_path_factory.mktemp("runs") / "tiny")
    result = dnsd("--mode", "train", "--data-file", tiny_archive, "--output-dir", run_dir, *TINY_RUN)
    assert result.returncode == 0, result.stderr
    return run_dir, result


@pytest.fixture(scope="session")
def seeds_folder(tmp_path_factory, tiny_archive):
    """`--seeds 0,1` of a one-epoch ResNet-8 on the tiny archive into a folder named sd: a sweep without a grid."""
    folder = str(tmp_path_factory.mktemp("seeds") / "sd")
    result = dnsd("--data-file", tiny_archive, "--output-dir", folder, *TINY_RUN, "--epochs", "1", "--seeds", "0,1")
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def mini_archive():
    return real_archive()


@pytest.fixture(autouse=True)
def isolated():
    """What a CLI call run in this process (helpers.dnsd) could leave for the next test: the environment, the working
    folder, Paddle's device, its CPU threads and the CPU numerics."""
    environ, cwd = dict(os.environ), os.getcwd()
    yield
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    if "paddle" in sys.modules:
        import paddle

        paddle.set_device("cpu")
        paddle.base.core.set_num_threads(1)
    use_portable_batch_norm(True)  # a call with --cpu-numerics native turned it off
    use_cpu_operators(False)  # and one with --cpu-numerics onednn this on
