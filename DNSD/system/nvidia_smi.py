"""What nvidia-smi says of this machine's NVIDIA GPUs and driver, each call bounded in time. The standard library
only: scripts/setup_env.py reads it before any environment exists, and a run's device check reads it too."""
import collections
import os
import re
import signal
import subprocess

GPU = collections.namedtuple("GPU", "name capability driver")  # capability: a float, or None where it is not told


def command_output(command, seconds):
    """(exit code, output) of a command, or (None, '') when it did not end within `seconds`: it then gets SIGTERM,
    5 s later SIGKILL, and 5 s after that it is left behind, so a hung driver costs at most seconds + 10."""
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace", start_new_session=True)
    except OSError as error:
        return 127, str(error)
    try:
        output, _ = process.communicate(timeout=seconds)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, signum)
                process.wait(timeout=5)
                break
            except (OSError, subprocess.TimeoutExpired):
                continue
        return None, ""


def read_gpus(smi, seconds):
    """(exit code, or None where nvidia-smi did not answer; the GPUs it listed; its other lines), from
    `--query-gpu=name,compute_cap,driver_version`, asked again without compute_cap of drivers before 510."""
    fields = "name,compute_cap,driver_version"
    code, output = command_output([smi, f"--query-gpu={fields}", "--format=csv,noheader"], seconds)
    if code is not None and "compute_cap" in output and "not a valid field" in output:
        fields = "name,driver_version"
        code, output = command_output([smi, f"--query-gpu={fields}", "--format=csv,noheader"], seconds)
    gpus, other = [], []
    for line in output.splitlines():
        values = [value.strip() for value in line.split(",")]
        if len(values) == fields.count(",") + 1 and re.fullmatch(r"\d+\.\d+(\.\d+)?", values[-1]):
            capability = values[1] if len(values) == 3 else ""
            gpus.append(GPU(values[0], float(capability) if re.fullmatch(r"\d+\.\d+", capability) else None,
                            values[-1]))
        else:
            other.append(line)
    return code, gpus, other


def driver_cuda(smi, seconds):
    """The newest CUDA the driver runs, as nvidia-smi's header shows it ('12.6', or 'N/A'), or None."""
    found = re.search(r"CUDA Version:\s*([0-9.]+|N/A)", command_output([smi], seconds)[1])
    return found.group(1) if found else None
