"""No silent CPU training where a GPU exists, and a start line and `--mode info` that say what a run computes on:
tested with a fake nvidia-smi first on PATH and Paddle's CPU build, which cannot use any GPU."""
import os

import paddle
import pytest

from DNSD.system.device import describe_device, system_gpus
from helpers import TINY_RUN, assert_one_line_error, dnsd, environment, fake_nvidia_smi


@pytest.fixture
def gpu_machine(tmp_path):
    """The environment of a process on a machine with two GPUs and a CUDA 12.6 driver."""
    folder = fake_nvidia_smi(tmp_path / "bin", cuda="12.6", gpus=("NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"))
    return environment(folder, CUDA_VISIBLE_DEVICES=None)


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="needs Paddle's CPU build, which cannot use a GPU")
def test_auto_refuses_to_train_on_the_cpu_of_a_machine_with_a_gpu(gpu_machine, tiny_archive, tmp_path):
    run_dir = tmp_path / "run"
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(run_dir), *TINY_RUN, env=gpu_machine)
    assert_one_line_error(result, "this machine has 2 GPU(s) (GPU 0: NVIDIA A100-SXM4-40GB (compute capability 8.0), "
                                  "driver 560.35.03 for CUDA 12.6)",
                          f"Paddle {paddle.__version__} here is the CPU build", "bash scripts/setup_env.sh",
                          "--device cpu")
    assert not run_dir.exists()


@pytest.mark.slow
def test_device_cpu_trains_on_the_cpu_deliberately_and_the_start_line_says_so(gpu_machine, tiny_archive, tmp_path):
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(tmp_path / "run"), *TINY_RUN, "--epochs", "1",
                  "--device", "cpu", env=gpu_machine)
    assert result.returncode == 0, result.stderr
    [start] = [line for line in result.stdout.splitlines() if line.startswith("DNSD: ResNet-8")]
    assert f"on cpu (Paddle {paddle.__version__}, " in start


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="needs Paddle's CPU build, which cannot use a GPU")
def test_device_gpu_is_refused_by_a_cpu_build(tiny_archive, tmp_path):
    result = dnsd("--data-file", tiny_archive, "--output-dir", str(tmp_path / "run"), *TINY_RUN, "--device", "gpu")
    assert_one_line_error(result, "--device gpu, but Paddle", "CPU build", "--device cpu")


@pytest.mark.parametrize("variables", [{"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"}])
def test_gpus_hidden_by_cuda_visible_devices_leave_auto_on_the_cpu(gpu_machine, variables):
    result = dnsd("--mode", "info", env={**gpu_machine, **variables})
    assert result.returncode == 0, result.stderr
    assert "device (auto):" in result.stdout and "cpu (Paddle" in result.stdout


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="needs Paddle's CPU build, which cannot use a GPU")
def test_info_reports_everything_then_refuses_auto_where_paddle_cannot_use_the_gpu(gpu_machine):
    result = dnsd("--mode", "info", env=gpu_machine)
    assert_one_line_error(result, "this machine has 2 GPU(s)")
    report = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert report["PaddlePaddle"].strip() == f"Paddle {paddle.__version__}, CPU build"
    assert report["GPUs on this machine"].strip() == (
        "GPU 0: NVIDIA A100-SXM4-40GB (compute capability 8.0); GPU 1: NVIDIA A100-SXM4-40GB (compute capability "
        "8.0); driver 560.35.03 for CUDA 12.6")
    assert report["Paddle's GPUs"].strip().endswith("here is the CPU build")
    assert {"DNSD", "Python", "numpy", "PyYAML", "visualdl", "matplotlib", "tqdm"} <= set(report)


def test_info_on_a_machine_without_gpu_names_the_device_and_versions(tmp_path):
    result = dnsd("--mode", "info", env=environment(fake_nvidia_smi(tmp_path / "bin", fails=True)))
    assert result.returncode == 0, result.stderr
    report = dict(line.split(":", 1) for line in result.stdout.splitlines())
    assert report["GPUs on this machine"].strip() == "no GPU"
    assert report["device (auto)"].strip() == describe_device("cpu")
    assert report["numpy"].strip() == __import__("numpy").__version__


def test_system_gpus_reads_nvidia_smi_and_respects_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", cuda="13.0", driver="580.65.06",
                                               gpus=(("NVIDIA H100 80GB HBM3", "9.0"),)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert system_gpus() == (["GPU 0: NVIDIA H100 80GB HBM3 (compute capability 9.0)"],
                             "driver 580.65.06 for CUDA 13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert system_gpus() == ([], None)
    # Without nvidia-smi (a container without the driver's tools), a scheduler's CUDA_VISIBLE_DEVICES still counts.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert system_gpus() == (["CUDA_VISIBLE_DEVICES=0,1"], None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert system_gpus() == ([], None)
    assert not os.path.exists(tmp_path / "empty")
