"""The device a run computes on, and what it is: the GPU where Paddle can use one, the CPU with its settings
otherwise, never the CPU by accident on a machine that has a GPU.

A GPU user whose Paddle is the CPU build, or a GPU build that cannot start, would otherwise train for months on the
CPU and learn it from the images per second; `run.device: auto` therefore refuses such a machine, and `--device cpu`
is the way to use its CPU on purpose.
"""
import importlib.metadata
import os
import platform
import shutil
import sys

import paddle

from DNSD.errors import InputError
from DNSD.system.numerics import configure_numerics, cpuinfo_fields
from DNSD.system.nvidia_smi import driver_cuda, read_gpus

# CUDA_VISIBLE_DEVICES values that hide every GPU from a process: the user asked for none.
HIDDEN = ("", "-1", "none", "nodevfiles")
NVIDIA_SMI_SECONDS = 20  # a hung driver must not hang the start of a run
FIX = "install the Paddle build for this machine with bash scripts/setup_env.sh (docs/installing.md)"
PACKAGES = ("numpy", "PyYAML", "tqdm", "visualdl", "matplotlib", "scipy", "paddle2onnx", "onnx", "onnxruntime",
            "Pillow")
# The instruction sets MKL and oneDNN choose their kernels by, of those /proc/cpuinfo lists.
INSTRUCTION_SETS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                    "amx_bf16", "amx_tile")


def system_gpus():
    """(the NVIDIA GPUs this process may use, e.g. 'GPU 0: NVIDIA A100-SXM4-40GB (compute capability 8.0)'; the
    driver, e.g. 'driver 560.35.03 for CUDA 12.6', or None): what nvidia-smi lists, unless CUDA_VISIBLE_DEVICES hides
    them all. Where nvidia-smi cannot tell (absent, or failing), a CUDA_VISIBLE_DEVICES that names devices counts as
    a GPU: a scheduler set it for one."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip().lower() in HIDDEN:
        return [], None
    smi = shutil.which("nvidia-smi")
    code, gpus, _ = read_gpus(smi, NVIDIA_SMI_SECONDS) if smi else (None, [], [])
    if code != 0 or not gpus:
        return ([f"CUDA_VISIBLE_DEVICES={visible}"] if visible else []), None
    cuda = driver_cuda(smi, NVIDIA_SMI_SECONDS)
    listed = [f"GPU {i}: {gpu.name} (compute capability {gpu.capability or 'unknown'})" for i, gpu in enumerate(gpus)]
    return listed, f"driver {gpus[0].driver}" + (f" for CUDA {cuda}" if cuda not in (None, "N/A") else "")


def paddle_build():
    """Paddle's version and build, e.g. 'Paddle 3.2.0, CUDA 12.6, cuDNN 9.5.1' or 'Paddle 3.3.1, CPU build'."""
    if paddle.device.is_compiled_with_cuda():
        return f"Paddle {paddle.__version__}, CUDA {paddle.version.cuda()}, cuDNN {paddle.version.cudnn()}"
    return f"Paddle {paddle.__version__}, CPU build"


def paddle_gpu_problem():
    """None where Paddle can compute on a GPU; otherwise why it cannot, in a few words."""
    if not paddle.device.is_compiled_with_cuda():
        return f"Paddle {paddle.__version__} here is the CPU build"
    try:
        count = paddle.device.cuda.device_count()
    except Exception as error:  # a GPU build whose CUDA libraries or driver fail to load raises its own types
        return f"{paddle_build()} failed to start CUDA ({_first_line(error)})"
    return None if count else f"{paddle_build()} sees no GPU"


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def select_device(name="auto", deterministic=False, cudnn_exhaustive_search=False, cpu_threads=1,
                  cpu_numerics="portable"):
    """Set Paddle's device: the GPU when asked for or, with auto, when Paddle can use one; the CPU with auto only
    where this process sees no GPU at all. Returns 'gpu' or 'cpu'."""
    problem = None if name == "cpu" else paddle_gpu_problem()
    if name == "gpu" and problem:
        raise InputError(f"--device gpu, but {problem}; {FIX}, or use --device cpu")
    if name == "auto" and problem:
        gpus, driver = system_gpus()
        if gpus:
            raise InputError(f"this machine has {len(gpus)} GPU(s) ({gpus[0]}{', ' + driver if driver else ''}) but "
                             f"{problem}, and DNSD does "
                             f"not train on the CPU by accident; {FIX}, or pass --device cpu to use the CPU")
    device = "cpu" if name == "cpu" or problem else "gpu"
    if device == "gpu":
        _start_gpu()
    else:
        paddle.set_device("cpu")
        configure_cpu(cpu_threads, cpu_numerics)
    flags = device_flags(device, deterministic, cudnn_exhaustive_search)
    if flags:
        paddle.set_flags(flags)
    return device


def _start_gpu():
    """Put one tensor on the GPU and read it back: a build that counts a GPU can still fail to run a kernel on it."""
    try:
        paddle.set_device("gpu")
        paddle.ones([1]).numpy()
    except Exception as error:  # CUDA errors surface as Paddle's own exception types, which differ by version
        raise InputError(f"{paddle_build()} cannot run on the GPU ({_first_line(error)}); {FIX}, or use "
                         "--device cpu") from None


def select_run_device(run):
    """select_device with the settings of a run's config (its `run` section)."""
    return select_device(run.device, run.deterministic, run.cudnn_exhaustive_search, run.cpu_threads,
                         run.cpu_numerics)


def describe_device(device):
    """What a run computes on, for its start line: e.g. 'gpu:0 (NVIDIA A100-SXM4-40GB; Paddle 3.2.0, CUDA 12.6,
    cuDNN 9.5.1)' or 'cpu (Paddle 3.3.1, CPU build)'."""
    if device == "gpu":
        return f"{paddle.device.get_device()} ({paddle.device.cuda.get_device_name()}; {paddle_build()})"
    return f"cpu ({paddle_build()})"


def device_flags(device, deterministic, cudnn_exhaustive_search):
    """The Paddle flags a run sets on its device; these flags exist only in CUDA builds."""
    if device != "gpu":
        return {}
    flags = {"FLAGS_cudnn_deterministic": True} if deterministic else {}
    if cudnn_exhaustive_search:
        flags["FLAGS_cudnn_exhaustive_search"] = True
    return flags


def configure_cpu(threads=1, numerics="portable"):
    """Paddle's CPU threads (0: every core) and the CPU numerics (system/numerics.py); returns both, for the
    manifest. MKL reads its settings once, at its first call: this runs before any computation."""
    threads = thread_count(threads)
    in_effect = configure_numerics(numerics, threads=threads)
    paddle.base.core.set_num_threads(threads)
    return {"threads": threads, **in_effect}


def thread_count(threads):
    """The number of CPU threads a setting means: 0 is every core this process may use."""
    return threads or len(os.sched_getaffinity(0))


def describe_cpu():
    """The processor: its model, vendor, family and model numbers, which of INSTRUCTION_SETS it has, and the cores
    this process may use."""
    fields = cpuinfo_fields()
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name") or platform.processor(), "vendor": fields.get("vendor_id"),
            "family": fields.get("cpu family"), "model_number": fields.get("model"),
            "instruction_sets": [name for name in INSTRUCTION_SETS if name in flags],
            "cores_usable": len(os.sched_getaffinity(0))}


def cpu_text(cpu):
    """One line naming a processor as describe_cpu gives it, with the instruction sets that decide its numerics."""
    number = f", family {cpu['family']} model {cpu['model_number']}" if cpu.get("family") else ""
    decisive = [name for name in ("avx2", "fma", "avx512f") if name in cpu["instruction_sets"]]
    return f"{cpu['model']} ({cpu['vendor'] or 'vendor unknown'}{number}; {' '.join(decisive) or 'no AVX2'})"


def environment_report():
    """(label, value) lines that say what this process runs on, for bug reports (`--mode info`)."""
    from DNSD import __version__

    cpu = describe_cpu()
    gpus, driver = system_gpus()
    problem = paddle_gpu_problem()
    paddle_gpus = [f"{paddle.device.cuda.get_device_name(i)} (compute capability "
                   f"{'.'.join(map(str, paddle.device.cuda.get_device_capability(i)))})"
                   for i in range(paddle.device.cuda.device_count())] if problem is None else []
    lines = [("DNSD", f"{__version__} ({os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})"),
             ("Python", f"{platform.python_version()} ({sys.executable})"),
             ("platform", platform.platform()),
             ("processor", f"{cpu_text(cpu)}, {cpu['cores_usable']} cores usable"),
             ("PaddlePaddle", paddle_build()),
             ("Paddle's GPUs", "; ".join(f"gpu:{i} {name}" for i, name in enumerate(paddle_gpus)) or problem),
             ("GPUs on this machine", "; ".join(gpus) + (f"; {driver}" if driver else "") if gpus else "no GPU"),
             ("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))]
    for package in PACKAGES:
        try:
            lines.append((package, importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            lines.append((package, "not installed"))
    return lines
