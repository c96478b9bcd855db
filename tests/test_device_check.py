"""The deep device check behind `dnsd info` and setup's GPU check: each part compared with numpy, a failing
part named in one line with its fix, and the GPU's parts chosen by what the GPU is."""
import paddle
import pytest

from DNSD.errors import InputError
from DNSD.system import device_check
from helpers import dnsd


def test_the_cpu_parts_agree_with_numpy():
    assert device_check.check_device("cpu") == [("convolution", "a 3x3 convolution forward and backward"),
                                                ("matrix product", "a 64x32 by 32x16 product")]


# The GPU path run on Paddle's CPU build, which warns that mixed precision changes nothing there.
@pytest.mark.filterwarnings("ignore:(AmpScaler|amp_guard) can only be enabled")
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_a_mixed_precision_step_moves_the_weights(precision):
    assert device_check.mixed_precision_step(precision) is None


def test_a_wrong_convolution_and_a_failing_product_are_named_with_their_fix(monkeypatch):
    conv2d = paddle.nn.functional.conv2d
    monkeypatch.setattr(device_check.F, "conv2d", lambda *args, **kwargs: conv2d(*args, **kwargs) * 1.1)
    with pytest.raises(InputError) as refused:
        device_check.check_device("cpu")
    assert str(refused.value).startswith("the cpu check failed at convolution (a 3x3 convolution forward and "
                                         "backward): differs from numpy by 0.1 (relative); reinstall the build")
    monkeypatch.undo()

    def broken(*args):
        raise RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED\n  at matmul")

    monkeypatch.setattr(device_check.paddle, "matmul", broken)
    with pytest.raises(InputError, match=r"at matrix product \(.*\): raised CUBLAS_STATUS_NOT_INITIALIZED at matmul;"):
        device_check.check_device("cpu")


@pytest.mark.parametrize("capability, count, names", [
    ((7, 0), 1, ["cuDNN", "cuBLAS", "float16"]),
    ((8, 0), 1, ["cuDNN", "cuBLAS", "float16", "bfloat16"]),
    ((9, 0), 2, ["cuDNN", "cuBLAS", "float16", "bfloat16", "NCCL"]),
])
def test_the_gpu_parts_follow_the_compute_capability_and_the_number_of_gpus(monkeypatch, capability, count, names):
    monkeypatch.setattr(paddle.device.cuda, "get_device_capability", lambda *args: capability)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: count)
    assert [part.name for part in device_check.parts("gpu")] == names


def test_info_ends_with_the_device_check():
    result = dnsd("--mode", "info", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["check convolution:    ok (a 3x3 convolution forward and backward)",
                          "check matrix product: ok (a 64x32 by 32x16 product)"]
