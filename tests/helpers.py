"""Shared by the tests: where things are, and how to run the CLI as a user does."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI_ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "cifar-10-mini.tar.gz")
TINY_RUN = ["--depth", "8", "--epochs", "2", "--batch-size", "32", "--val-size", "40"]


def dnsd(*args, cwd=ROOT, entry=("-m", "DNSD"), env=None):
    return subprocess.run([sys.executable, *entry, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=env)


def assert_one_line_error(result, *fragments, code=2):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def fake_nvidia_smi(folder, cuda="12.6", gpus=("NVIDIA A100-SXM4-40GB",), fails=False):
    """Write an nvidia-smi into folder that reports these GPUs and a driver for this CUDA version, or that fails as
    it does on a machine whose driver is not loaded; returns folder, to put first on PATH."""
    os.makedirs(folder, exist_ok=True)
    listing = "".join(f'echo "GPU {i}: {name} (UUID: GPU-{i:08d})"\n' for i, name in enumerate(gpus))
    header = (f'echo "| NVIDIA-SMI 560.35.03    Driver Version: 560.35.03    CUDA Version: {cuda}     |"\n'
              if cuda else 'echo "| NVIDIA-SMI 560.35.03    Driver Version: 560.35.03 |"\n')
    body = ('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."; exit 9\n' if fails
            else f'if [ "$1" = "-L" ]; then\n{listing}exit 0\nfi\n{header}')
    write_executable(os.path.join(folder, "nvidia-smi"), "#!/bin/sh\n" + body)
    return str(folder)


def write_executable(path, text):
    with open(path, "w") as stream:
        stream.write(text)
    os.chmod(path, 0o755)


def environment(path_first=None, **variables):
    """os.environ with a folder put first on PATH and variables set (None: removed)."""
    env = dict(os.environ)
    if path_first:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    for name, value in variables.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env
