"""scripts/setup_env.sh chooses the Paddle build a machine needs, tested without a GPU: a fake nvidia-smi (and nvcc)
first on PATH, and for the installing runs a fake environment whose python records pip's calls and hands the GPU
check to the real interpreter, with Paddle's CPU build."""
import os
import subprocess
import sys

import pytest

from helpers import ROOT, fake_nvidia_smi, write_executable

SETUP = os.path.join(ROOT, "scripts", "setup_env.sh")
PADDLE_INDEX = "https://www.paddlepaddle.org.cn/packages/stable"
# The tools the script needs, without the folders where a machine may have its own nvidia-smi or nvcc.
SYSTEM_PATH = "/usr/bin:/bin"


def setup(tmp_path, *args, fake_bin=None, **variables):
    env = {"HOME": str(tmp_path), "PATH": f"{fake_bin}:{SYSTEM_PATH}" if fake_bin else SYSTEM_PATH,
           "DNSD_VENV": str(tmp_path / "venv"), "LOG": str(tmp_path / "calls.log"), "PYTHONPATH": ROOT,
           **variables}
    return subprocess.run(["bash", SETUP, *args], capture_output=True, text=True, env=env, timeout=300)


def fake_nvcc(folder, release):
    write_executable(os.path.join(folder, "nvcc"),
                     f'#!/bin/sh\necho "Cuda compilation tools, release {release}, V{release}.89"\n')


def would_install(result):
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("setup: would install ")]


@pytest.mark.parametrize("cuda, build", [("11.8", "cu118"), ("12.0", "cu118"), ("12.4", "cu118"), ("12.6", "cu126"),
                                         ("12.8", "cu126"), ("12.9", "cu129"), ("13.0", "cu129")])
def test_a_gpu_gets_the_paddle_3_build_for_the_newest_cuda_its_driver_runs(tmp_path, cuda, build):
    fakes = fake_nvidia_smi(tmp_path / "bin", cuda=cuda)
    [line] = would_install(setup(tmp_path, "--dry-run", fake_bin=fakes))
    assert line.startswith(f"setup: would install paddlepaddle-gpu>=3,<4 from {PADDLE_INDEX}/{build}/ (")
    assert f"driver for CUDA {cuda}" in line and "NVIDIA A100-SXM4-40GB" in line
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("fakes, reason", [(None, "nvidia-smi is not on PATH"), ("fails", "nvidia-smi failed"),
                                           ("no gpus", "nvidia-smi lists none")])
def test_no_usable_gpu_gets_the_cpu_build_and_says_why(tmp_path, fakes, reason):
    folder = None
    if fakes:
        folder = fake_nvidia_smi(tmp_path / "bin", fails=fakes == "fails", gpus=() if fakes == "no gpus" else ("A",))
    [line] = would_install(setup(tmp_path, "--dry-run", fake_bin=folder))
    assert line.startswith("setup: would install paddlepaddle>=2.6,<4 (") and " from " not in line
    assert reason in line


def test_a_user_override_names_the_requirement_and_the_index(tmp_path):
    fakes = fake_nvidia_smi(tmp_path / "bin", cuda="12.6")
    [line] = would_install(setup(tmp_path, "--dry-run", fake_bin=fakes, DNSD_PADDLE="paddlepaddle-gpu==3.1.1",
                                 DNSD_PADDLE_INDEX=f"{PADDLE_INDEX}/cu118/"))
    assert line.startswith(f"setup: would install paddlepaddle-gpu==3.1.1 from {PADDLE_INDEX}/cu118/ "
                           "(DNSD_PADDLE is set")
    [line] = would_install(setup(tmp_path, "--dry-run", fake_bin=fakes, DNSD_PADDLE_INDEX="none"))
    assert line.startswith("setup: would install paddlepaddle-gpu>=3,<4 (")
    [line] = would_install(setup(tmp_path, "--dry-run", DNSD_PADDLE="paddlepaddle==2.6.2"))
    assert line.startswith("setup: would install paddlepaddle==2.6.2 (DNSD_PADDLE is set; no NVIDIA GPU")


def test_a_driver_older_than_cuda_11_8_is_refused_with_the_fix(tmp_path):
    result = setup(tmp_path, "--dry-run", fake_bin=fake_nvidia_smi(tmp_path / "bin", cuda="11.4"))
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("setup: error: the NVIDIA driver runs CUDA 11.4 at most") and "update the driver" in line


def test_pypi_paddle_2_6_2_is_the_fallback_only_with_a_system_cuda_11_8_toolkit(tmp_path):
    fakes = fake_nvidia_smi(tmp_path / "bin", cuda="12.2")
    assert "fallback" not in setup(tmp_path, "--dry-run", fake_bin=fakes).stdout
    fake_nvcc(fakes, "12.2")
    assert "index cannot be reached" not in setup(tmp_path, "--dry-run", fake_bin=fakes).stdout
    fake_nvcc(fakes, "11.8")
    lines = setup(tmp_path, "--dry-run", fake_bin=fakes).stdout.splitlines()
    assert lines[1] == ("setup: if that index cannot be reached: paddlepaddle-gpu==2.6.2 from PyPI (a system CUDA "
                        "11.8 toolkit was found)")


@pytest.fixture
def fake_venv(tmp_path):
    """An environment whose python answers pip show from INSTALLED, logs every pip call, fails pip install from an
    index where FAIL_INDEX is set, and runs `-m DNSD` with the real interpreter."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    write_executable(str(bin_dir / "python"), f"""#!/bin/sh
if [ "$1 $2" = "-m DNSD" ]; then exec "{sys.executable}" "$@"; fi
echo "$*" >> "$LOG"
case "$*" in
  *" show -q "*) for name; do :; done; grep -qx "$name" "$INSTALLED" ;;
  *" install "*"--extra-index-url"*) [ -z "$FAIL_INDEX" ] ;;
esac
""")
    installed = tmp_path / "installed.txt"
    installed.write_text("")
    return {"INSTALLED": str(installed), "FAIL_INDEX": ""}


def pip_calls(tmp_path, verb):
    log = tmp_path / "calls.log"
    calls = log.read_text().splitlines() if log.exists() else []
    return [call for call in calls if f" {verb} " in call]


def test_installing_the_gpu_build_removes_the_cpu_build_and_checks_that_paddle_sees_the_gpu(tmp_path, fake_venv):
    open(fake_venv["INSTALLED"], "w").write("paddlepaddle\n")
    result = setup(tmp_path, "requirements-test.txt", fake_bin=fake_nvidia_smi(tmp_path / "bin", cuda="12.6"),
                   **fake_venv)
    [uninstall] = pip_calls(tmp_path, "uninstall")
    assert uninstall.endswith("uninstall --quiet --yes paddlepaddle paddlepaddle-gpu")
    [install] = pip_calls(tmp_path, "install")
    assert f"--extra-index-url {PADDLE_INDEX}/cu126/ paddlepaddle-gpu>=3,<4 --editable {ROOT}" in install
    assert install.endswith(f"--requirement {ROOT}/requirements-test.txt")
    # The real interpreter's Paddle is the CPU build: the check after installing must fail, in one line, and say how
    # to check and to fix it.
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if "error" in line]
    assert line.startswith(f"setup: error: paddlepaddle-gpu>=3,<4 in {tmp_path}/venv cannot use this machine's GPU "
                           "(driver for CUDA 12.6): Paddle ")
    assert "CPU build" in line and "paddle.utils.run_check()" in line and "DNSD_PADDLE_INDEX=" in line
    assert not (tmp_path / "venv" / ".dnsd-requirements").exists()


def test_when_paddles_index_fails_pypi_2_6_2_is_installed_where_a_cuda_11_8_toolkit_is(tmp_path, fake_venv):
    fakes = fake_nvidia_smi(tmp_path / "bin", cuda="12.2")
    fake_nvcc(fakes, "11.8")
    result = setup(tmp_path, fake_bin=fakes, **{**fake_venv, "FAIL_INDEX": "1"})
    first, second = pip_calls(tmp_path, "install")
    assert "--extra-index-url" in first and "--extra-index-url" not in second
    assert " paddlepaddle-gpu==2.6.2 --editable " in second
    assert "installing paddlepaddle-gpu==2.6.2 from PyPI instead" in result.stderr


def test_a_failed_install_without_a_fallback_stops_with_one_line(tmp_path, fake_venv):
    result = setup(tmp_path, fake_bin=fake_nvidia_smi(tmp_path / "bin", cuda="12.6"),
                   **{**fake_venv, "FAIL_INDEX": "1"})
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"setup: error: pip could not install paddlepaddle-gpu>=3,<4 from {PADDLE_INDEX}/cu126/")


def test_a_cpu_node_keeps_the_gpu_build_of_a_shared_environment_and_a_second_run_does_nothing(tmp_path, fake_venv):
    open(fake_venv["INSTALLED"], "w").write("paddlepaddle-gpu\n")
    first = setup(tmp_path, **fake_venv)
    assert first.returncode == 0, first.stderr
    assert pip_calls(tmp_path, "uninstall") == []
    [install] = pip_calls(tmp_path, "install")
    assert " paddlepaddle-gpu --editable " in install and "--extra-index-url" not in install
    assert "keeping the GPU build" in first.stderr
    second = setup(tmp_path, **fake_venv)
    assert second.returncode == 0 and second.stderr == ""
    assert len(pip_calls(tmp_path, "install")) == 1
