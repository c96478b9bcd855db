"""scripts/setup_env.sh chooses and installs the Paddle build a machine needs, tested without a GPU: a fake
nvidia-smi (and nvcc, uname) first on PATH, and real pip installing stand-in Paddle wheels from local indexes."""
import json
import os
import subprocess
import sys
import time

import pytest

from helpers import ROOT, fake_nvidia_smi, read_json, write_executable
from paddle_stand_ins import write_indexes

SETUP = os.path.join(ROOT, "scripts", "setup_env.sh")
# The tools the script needs, without the folders where a machine may have its own nvidia-smi or nvcc.
SYSTEM_PATH = "/usr/bin:/bin"


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    return write_indexes(str(tmp_path_factory.mktemp("indexes")))


@pytest.fixture
def machine(tmp_path, indexes):
    """setup(*args, **variables) on a machine whose tools are in tmp_path/bin; pip sees the local indexes only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    paddle_index, pypi = indexes

    def setup(*args, **variables):
        env = {"HOME": str(tmp_path), "PATH": f"{bin_dir}:{SYSTEM_PATH}", "DNSD_VENV": str(tmp_path / "venv"),
               "PYTHON": sys.executable, "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": pypi,
               "PIP_NO_CACHE_DIR": "1", "DNSD_PADDLE_MIRROR": paddle_index, "DNSD_NVIDIA_SMI_TIMEOUT": "1",
               **variables}
        return subprocess.run(["bash", SETUP, *args], capture_output=True, text=True, env=env, timeout=300)

    setup.bin = str(bin_dir)
    setup.mirror = paddle_index
    setup.venv = tmp_path / "venv"
    return setup


class Lines(list):
    def __getitem__(self, start):
        """The one line that starts with these words."""
        [line] = [line for line in self if line.startswith(start)]
        return line


def dry_run(setup, **variables):
    result = setup("--dry-run", **variables)
    assert result.returncode == 0, result.stderr
    return Lines(result.stdout.splitlines())


def one_line_refusal(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("setup: error: ")
    for fragment in fragments:
        assert fragment in line, line
    return line


def installed(setup):
    """The Paddle distributions in the environment and the CUDA build its paddle module reports."""
    python = str(setup.venv / "bin" / "python")
    code = ("import importlib.metadata as m, json, paddle.version as v; print(json.dumps([sorted((d.metadata['Name'], "
            "d.version) for d in m.distributions() if d.metadata['Name'].startswith('paddlepaddle')), v.cuda()]))")
    names, cuda = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True).stdout)
    return [tuple(pair) for pair in names], cuda


A100, V100, RTX_5090, B200, K80 = (("NVIDIA A100-SXM4-40GB", "8.0"), ("Tesla V100-SXM2-32GB", "7.0"),
                                   ("NVIDIA GeForce RTX 5090", "12.0"), ("NVIDIA B200", "10.0"), ("Tesla K80", "3.7"))


@pytest.mark.parametrize("driver, cuda, gpus, build", [
    ("470.57.02", "11.4", [A100], "cu118"),  # CUDA 11.x drivers from 450.80.02 run the CUDA 11.8 build
    ("525.60.13", "12.0", [A100], "cu118"),
    ("550.54.14", "12.4", [A100], "cu126"),
    ("560.35.03", "12.6", [A100, A100], "cu126"),
    ("575.57.08", "12.9", [A100], "cu129"),
    ("575.57.08", "12.9", [RTX_5090], "cu129"),
    ("580.65.06", "13.0", [A100], "cu130"),
    ("580.65.06", "13.0", [V100], "cu129"),  # CUDA 13 builds no code for compute capability below 7.5
])
def test_the_newest_build_that_the_driver_and_every_gpu_run_is_chosen(machine, driver, cuda, gpus, build):
    fake_nvidia_smi(machine.bin, cuda=cuda, driver=driver, gpus=gpus)
    lines = dry_run(machine)
    requirement = "paddlepaddle-gpu>=3,<4" if build == "cu118" else "paddlepaddle-gpu==3.3.*"
    assert lines["setup: would install"].startswith(
        f"setup: would install {requirement} from {machine.mirror}/{build}/ (Paddle built for CUDA ")
    assert f"driver {driver} and compute capability {gpus[0][1]}" in lines["setup: would install"]
    assert lines["setup: machine"] == (f"setup: machine: x86_64, Python {sys.version.split()[0]}, NVIDIA driver "
                                       f"{driver} (CUDA {cuda}); " + "; ".join(
                                           f"GPU {i}: {name} (compute capability {cc})"
                                           for i, (name, cc) in enumerate(gpus)))
    assert lines["setup: installed in " + str(machine.venv)].endswith(": no Paddle")
    assert not machine.venv.exists()


@pytest.mark.parametrize("driver, gpus, fragments", [
    ("440.33.01", [A100], ["driver 440.33.01 is older than 450.80.02", "cu118", "install a newer driver",
                           "DNSD_PADDLE=paddlepaddle"]),
    ("560.35.03", [B200], ["driver 560.35.03 is older than 575.51.03", "cu129", "compute capability 10.0"]),
    ("580.65.06", [K80], ["Tesla K80 has compute capability 3.7", "6.0 (Pascal) or newer", "DNSD_PADDLE=paddlepaddle"]),
])
def test_a_gpu_that_no_build_runs_is_refused_with_what_to_change(machine, driver, gpus, fragments):
    fake_nvidia_smi(machine.bin, driver=driver, gpus=gpus)
    one_line_refusal(machine("--dry-run"), *fragments)


def test_aarch64_and_an_unsupported_python_are_refused_before_anything_is_installed(machine, tmp_path):
    fake_nvidia_smi(machine.bin, driver="575.57.08", cuda="12.9")
    write_executable(os.path.join(machine.bin, "uname"), '#!/bin/sh\necho aarch64\n')
    one_line_refusal(machine(), "no GPU build for aarch64", "DNSD_PADDLE=paddlepaddle")
    assert not machine.venv.exists()
    os.remove(os.path.join(machine.bin, "uname"))
    venv_python = machine.venv / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    write_executable(str(venv_python), '#!/bin/sh\necho \'{"python": "3.14.0", "found": {}, "cuda": null, '
                                       '"satisfies": null}\'\n')
    one_line_refusal(machine(), "Python 3.14.0 here", "Python 3.9 to 3.13", "PYTHON=python3.12")
    # The CPU build is still theirs to choose.
    assert dry_run(machine, DNSD_PADDLE="paddlepaddle")["setup: would install"].startswith(
        "setup: would install paddlepaddle from PyPI (DNSD_PADDLE is set)")


@pytest.mark.parametrize("behaviour, said", [
    ("fails", "nvidia-smi failed (exit code 9: \"NVIDIA-SMI has failed because it couldn't communicate with the "
              "NVIDIA driver.\"); setup goes on as without a GPU"),
    ("hangs", "nvidia-smi did not answer within 1 s and was stopped; setup goes on as without a GPU"),
    pytest.param("ignores-sigterm", "nvidia-smi did not answer within 1 s and was stopped; setup goes on",
                 marks=pytest.mark.slow),
    ("cuda-n/a", "nvidia-smi shows 'CUDA Version: N/A'"),
    ("no gpus", "nvidia-smi lists no GPU; setup goes on as without a GPU"),
])
def test_every_failure_of_nvidia_smi_is_one_line_and_means_the_cpu_build(machine, behaviour, said):
    fake_nvidia_smi(machine.bin, fails=behaviour == "fails", gpus=() if behaviour == "no gpus" else (A100,),
                    behaviour=behaviour)
    started = time.monotonic()
    result = machine("--dry-run")
    assert time.monotonic() - started < 1 + 10 + 5  # the timeout, SIGTERM's and SIGKILL's grace, and the rest
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if "nvidia-smi" in line]
    assert said in line and "DNSD_PADDLE" in line
    assert "setup: would install paddlepaddle>=2.6,<4 from PyPI (no usable NVIDIA GPU" in result.stdout


def test_a_gpu_in_error_leaves_the_choice_to_the_gpus_that_answered(machine):
    fake_nvidia_smi(machine.bin, gpus=(A100,), behaviour="partial")
    lines = dry_run(machine)
    assert "nvidia-smi exited with code 15 ('Unable to determine the device handle for GPU 0000:3B:00.0: Unknown " \
           "Error') after listing 1 GPU(s); choosing from the GPUs it listed" in lines["setup: nvidia-smi"]
    assert f"from {machine.mirror}/cu126/" in lines["setup: would install"]


def test_a_driver_too_old_to_report_compute_capability_still_gets_a_build(machine):
    fake_nvidia_smi(machine.bin, driver="470.57.02", cuda="11.4", behaviour="no-compute-cap")
    lines = dry_run(machine)
    assert "(compute capability unknown)" in lines["setup: machine"]
    assert f"from {machine.mirror}/cu118/" in lines["setup: would install"]


@pytest.mark.slow
def test_the_installed_build_follows_the_machine_and_the_settings(machine):
    """One environment through a machine's life: never two Paddles in it, pip called only when the build must
    change, DNSD_PADDLE keeping the chosen index."""
    first = machine("--paddle-only")
    assert first.returncode == 0, first.stderr
    assert installed(machine) == ([("paddlepaddle", "3.3.1")], "False")
    assert "installing paddlepaddle>=2.6,<4 (no usable NVIDIA GPU" in first.stderr

    fake_nvidia_smi(machine.bin, driver="560.35.03", cuda="12.6")  # the driver is installed
    lines = dry_run(machine)
    assert lines["setup: would first remove paddlepaddle 3.3.1, CPU build"]
    result = machine("--paddle-only")
    assert result.returncode == 0, result.stderr
    assert installed(machine) == ([("paddlepaddle-gpu", "3.3.1")], "12.6")
    stamp = read_json(machine.venv / ".dnsd-setup.json")["paddle"]
    assert stamp["installed"] == {"name": "paddlepaddle-gpu", "version": "3.3.1", "cuda": "12.6"}
    assert not stamp["fallback"]

    again = machine("--paddle-only")
    assert again.returncode == 0 and "installing" not in again.stderr and "removing" not in again.stderr

    fake_nvidia_smi(machine.bin, driver="575.57.08", cuda="12.9")  # a driver upgrade
    assert machine("--paddle-only").returncode == 0
    assert installed(machine) == ([("paddlepaddle-gpu", "3.3.1")], "12.9")

    pinned = machine("--paddle-only", DNSD_PADDLE="paddlepaddle-gpu==3.2.0")
    assert pinned.returncode == 0, pinned.stderr
    assert f"installing paddlepaddle-gpu==3.2.0 from {machine.mirror}/cu129/" in pinned.stderr
    assert installed(machine) == ([("paddlepaddle-gpu", "3.2.0")], "12.9")

    os.remove(os.path.join(machine.bin, "nvidia-smi"))  # the cluster's login node, sharing the environment
    login = machine("--paddle-only")
    assert login.returncode == 0 and "installing" not in login.stderr
    assert installed(machine) == ([("paddlepaddle-gpu", "3.2.0")], "12.9")


@pytest.mark.slow
def test_pypi_2_6_2_when_paddles_index_is_unreachable_and_the_stamp_records_it(machine):
    fake_nvidia_smi(machine.bin, driver="560.35.03", cuda="12.6")
    write_executable(os.path.join(machine.bin, "nvcc"), '#!/bin/sh\necho "Cuda compilation tools, release 11.8, '
                                                        'V11.8.89"\n')
    unreachable = {"DNSD_PADDLE_MIRROR": "http://127.0.0.1:9"}
    assert dry_run(machine, **unreachable)["setup: if that index cannot be reached"].endswith(
        "paddlepaddle-gpu==2.6.2 from PyPI (a system CUDA 11.8 toolkit was found)")
    result = machine("--paddle-only", **unreachable)
    assert result.returncode == 0, result.stderr
    assert "setup: Paddle's index http://127.0.0.1:9/cu126/ cannot be reached (" in result.stderr
    assert "Connection refused" in result.stderr
    assert installed(machine) == ([("paddlepaddle-gpu", "2.6.2")], "11.8")
    stamp = read_json(machine.venv / ".dnsd-setup.json")["paddle"]
    assert stamp["fallback"] and stamp["installed"]["version"] == "2.6.2"
    assert stamp["wanted"] == {"requirement": "paddlepaddle-gpu==3.3.*", "index": "http://127.0.0.1:9/cu126/"}
    # Kept, without retrying the index on every run, until asked or the choice changes.
    kept = machine("--paddle-only", **unreachable)
    assert kept.returncode == 0 and "cannot be reached" not in kept.stderr
    assert "would keep paddlepaddle-gpu 2.6.2" in machine("--dry-run", **unreachable).stdout
    retried = machine("--paddle-only", "--reinstall")
    assert retried.returncode == 0, retried.stderr
    assert installed(machine) == ([("paddlepaddle-gpu", "3.3.1")], "12.6")


@pytest.mark.slow
def test_an_unreachable_index_without_fallback_and_a_failing_pip_are_one_line_each(machine):
    fake_nvidia_smi(machine.bin, driver="560.35.03", cuda="12.6")
    one_line_refusal(machine(DNSD_PADDLE_MIRROR="http://127.0.0.1:9"),
                     "Paddle's index http://127.0.0.1:9/cu126/ cannot be reached (", "DNSD_PADDLE_MIRROR")
    result = machine("--paddle-only", DNSD_PADDLE="paddlepaddle-gpu==9.9.9")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"setup: error: pip could not install paddlepaddle-gpu==9.9.9 from {machine.mirror}/cu126/: No matching "
        "distribution found for paddlepaddle-gpu==9.9.9")


@pytest.fixture
def fake_venv(tmp_path):
    """An environment whose python reports the Paddle in INSTALLED (JSON), logs pip's calls, and runs `-m DNSD`
    with the real interpreter (Paddle's CPU build)."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    write_executable(str(bin_dir / "python"), f"""#!/bin/sh
case "$1 $2" in
  "-m DNSD") exec "{sys.executable}" "$@" ;;
  "-m pip") echo "$*" >> "{tmp_path}/pip.log" ;;
  *) printf '%s\\n' "$INSTALLED" ;;
esac
""")
    return lambda: open(tmp_path / "pip.log").read().splitlines() if (tmp_path / "pip.log").exists() else []


@pytest.mark.slow
def test_a_gpu_build_that_fails_the_gpu_check_is_one_line_and_checked_again_next_time(machine, fake_venv):
    fake_nvidia_smi(machine.bin, driver="560.35.03", cuda="12.6")
    state = json.dumps({"python": "3.11.7", "found": {"paddlepaddle-gpu": "3.3.1"}, "cuda": "12.6",
                        "satisfies": True})
    first = machine(INSTALLED=state, PYTHONPATH=ROOT)
    assert first.stderr.splitlines()[0] == f"setup: installing DNSD into {machine.venv}"
    second = machine(INSTALLED=state, PYTHONPATH=ROOT)  # DNSD is in place: the check alone, and its one line
    line = one_line_refusal(second, f"paddlepaddle-gpu 3.3.1 (CUDA 12.6) in {machine.venv} cannot use this "
                                    "machine's GPU: --device gpu, but Paddle")
    assert "CPU build" in line and first.stderr.splitlines()[1:] == [line]
    assert [call.split()[3] for call in fake_venv()] == ["install"]


def test_the_test_requirements_join_the_environment_without_reinstalling_on_every_switch(machine, fake_venv):
    state = json.dumps({"python": "3.11.7", "found": {"paddlepaddle": "3.3.1"}, "cuda": "False", "satisfies": True})
    for files in ([], ["requirements-test.txt"], [], ["requirements-test.txt"]):
        assert machine(*files, INSTALLED=state).returncode == 0
    calls = fake_venv()
    assert len(calls) == 2
    assert calls[0].endswith(f"install --quiet --editable {ROOT}")
    assert calls[1].endswith(f"install --quiet --requirement {ROOT}/requirements-test.txt")
