"""Create or update the virtual environment: the PaddlePaddle build this machine needs, then DNSD and the given
requirement files. Run it as `bash scripts/setup_env.sh`; docs/installing.md explains the choice.

Sources of BUILDS, checked 2026-11: Paddle's Linux pip install guide for 3.3 (cu126, cu129 and cu130 builds of
3.3, cu118 builds of 3.x; GPU wheels for x86_64 and Python 3.9 to 3.13 only; cu118 from driver 450.80.02, cu126
from 550.54.14), Paddle's GPU architecture table (Pascal, compute capability 6.0, the oldest), and NVIDIA's CUDA
release notes (CUDA 12.9 needs driver 575.51.03, CUDA 13.0 driver 580.65.06 and drops compute capability below
7.5; Blackwell, 10.x and 12.x, needs CUDA 12.8 or newer).
"""
import argparse
import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from DNSD.errors import one_line  # noqa: E402  (DNSD's modules that setup uses need no more than the standard library)
from DNSD.system.nvidia_smi import command_output, driver_cuda, read_gpus  # noqa: E402

PADDLE_INDEX = "https://www.paddlepaddle.org.cn/packages/stable"

Build = collections.namedtuple("Build", "tag cuda min_driver capabilities requirement")
BUILDS = (  # newest first: the first that the driver and every GPU run is chosen
    Build("cu130", "13.0", "580.65.06", (7.5, 12.1), "paddlepaddle-gpu==3.3.*"),
    Build("cu129", "12.9", "575.51.03", (6.0, 12.1), "paddlepaddle-gpu==3.3.*"),
    Build("cu126", "12.6", "550.54.14", (6.0, 9.0), "paddlepaddle-gpu==3.3.*"),
    # The cu118 index may stop at an older 3.x than the others: the newest 3.x it has.
    Build("cu118", "11.8", "450.80.02", (6.0, 9.0), "paddlepaddle-gpu>=3,<4"),
)
CPU_BUILD = "paddlepaddle>=2.6,<4"
GPU_PYTHONS = ((3, 9), (3, 13))
# PyPI's GPU build: CUDA 11.8 from the system (toolkit and cuDNN 8.6), for when Paddle's index cannot be reached.
PYPI_GPU_BUILD = "paddlepaddle-gpu==2.6.2"
CPU_FIX = "or install the CPU build: DNSD_PADDLE=paddlepaddle bash scripts/setup_env.sh"

Machine = collections.namedtuple("Machine", "gpus driver cuda note")
Choice = collections.namedtuple("Choice", "requirement index cuda reason fallback")


class Refusal(Exception):
    """A machine or setting that no build fits: one line, exit 2."""


def say(*lines, stream=sys.stderr):
    for line in lines:
        print(f"setup: {line}", file=stream, flush=True)


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text))


def first_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no output"


def read_machine(seconds):
    """What nvidia-smi says of the GPUs and the driver; `note` says what went wrong where something did."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return Machine([], None, None, None)
    code, gpus, other = read_gpus(smi, seconds)
    if code is None:
        return Machine([], None, None, f"nvidia-smi did not answer within {seconds} s and was stopped")
    said = first_line("\n".join(other))
    if code != 0 and not gpus:
        return Machine([], None, None, f"nvidia-smi failed (exit code {code}: {said!r})")
    note = None
    if code != 0:
        note = f"nvidia-smi exited with code {code} ({said!r}) after listing {len(gpus)} GPU(s)"
    if not gpus:
        return Machine([], None, None, "nvidia-smi lists no GPU")
    cuda = driver_cuda(smi, seconds)
    if cuda == "N/A":
        return Machine([], None, None, "nvidia-smi shows 'CUDA Version: N/A': the driver's CUDA library is missing "
                                       "(a container started without the NVIDIA runtime, or a broken driver install)")
    return Machine(gpus, min((gpu.driver for gpu in gpus), key=version_tuple), cuda, note)


def describe_machine(machine, arch, python):
    text = f"{arch}, Python {python}"
    if not machine.gpus:
        return f"{text}, no usable NVIDIA GPU"
    gpus = "; ".join(f"GPU {i}: {gpu.name} (compute capability {gpu.capability or 'unknown'})"
                     for i, gpu in enumerate(machine.gpus))
    return f"{text}, NVIDIA driver {machine.driver} (CUDA {machine.cuda or 'not shown'}); {gpus}"


def gpu_build(machine, arch, python):
    """The newest build that this machine runs, or a Refusal naming what to change."""
    if arch != "x86_64":
        raise Refusal(f"Paddle publishes no GPU build for {arch} (GH200, GB200 and Jetson are aarch64), only CPU "
                      f"builds; {CPU_FIX}, or build Paddle from source (Paddle's install guide)")
    if not GPU_PYTHONS[0] <= version_tuple(python)[:2] <= GPU_PYTHONS[1]:
        raise Refusal(f"Python {python} here, and Paddle's GPU builds exist for Python 3.9 to 3.13; remove the "
                      "environment's folder and create it with one of those, e.g. PYTHON=python3.12 bash "
                      "scripts/setup_env.sh")
    capabilities = {gpu.capability for gpu in machine.gpus if gpu.capability is not None}

    def runs_every_gpu(build):
        return all(build.capabilities[0] <= capability <= build.capabilities[1] for capability in capabilities)

    fitting = [build for build in BUILDS if runs_every_gpu(build)]
    for build in fitting:
        if version_tuple(machine.driver) >= version_tuple(build.min_driver):
            return build
    too_old = [gpu for gpu in machine.gpus if gpu.capability is not None and gpu.capability < 6.0]
    if too_old:
        raise Refusal(f"{too_old[0].name} has compute capability {too_old[0].capability}, and Paddle's GPU builds "
                      f"need 6.0 (Pascal) or newer; {CPU_FIX}")
    if not fitting:
        raise Refusal(f"no Paddle GPU build runs all of this machine's GPUs (compute capability "
                      f"{capabilities_text(machine)}); give each kind its own environment (DNSD_VENV) and "
                      "CUDA_VISIBLE_DEVICES")
    oldest = fitting[-1]
    raise Refusal(f"the NVIDIA driver {machine.driver} is older than {oldest.min_driver}, which Paddle's "
                  f"{oldest.tag} build (CUDA {oldest.cuda}) needs for compute capability {capabilities_text(machine)}; "
                  f"install a newer driver, {CPU_FIX}")


def capabilities_text(machine):
    return ", ".join(sorted({str(gpu.capability or "unknown") for gpu in machine.gpus}))


def index_of(build):
    return f"{os.environ.get('DNSD_PADDLE_MIRROR', PADDLE_INDEX).rstrip('/')}/{build.tag}/"


def index_setting(default):
    """DNSD_PADDLE_INDEX: unset, the default; 'none', pip's own index only; else that index."""
    setting = os.environ.get("DNSD_PADDLE_INDEX")
    return default if not setting else None if setting == "none" else setting


def toolkit_cuda():
    """The system CUDA toolkit's version (nvcc), which only PyPI's 2.6.2 GPU build uses."""
    code, output = command_output(["nvcc", "--version"], 30) if shutil.which("nvcc") else (1, "")
    found = re.search(r"release (\d+\.\d+)", output) if code == 0 else None
    return found.group(1) if found else None


def distribution(requirement):
    return re.match(r"[A-Za-z0-9._-]*", requirement).group(0).lower().replace("_", "-")


def choose(machine, arch, python, installed):
    """The Paddle to have: requirement, index, CUDA version ('False': the CPU build; None: any), why, fallback."""
    override = os.environ.get("DNSD_PADDLE")
    if override:
        name, index = distribution(override), index_setting(None)
        if index is None and name == "paddlepaddle-gpu" and machine.gpus and "DNSD_PADDLE_INDEX" not in os.environ:
            with contextlib.suppress(Refusal):
                index = index_of(gpu_build(machine, arch, python))
        tag = re.search(r"/cu(\d+)(\d)/?$", index or "")
        cuda = "False" if name == "paddlepaddle" else f"{tag.group(1)}.{tag.group(2)}" if tag else None
        return Choice(override, index, cuda, "DNSD_PADDLE is set", None)
    if not machine.gpus:
        if installed.get("name") == "paddlepaddle-gpu":
            return Choice(f"paddlepaddle-gpu=={installed['version']}", None, installed["cuda"],
                          "no usable GPU here: keeping the GPU build installed, which runs on the CPU too (a "
                          "cluster's login node sharing the environment; DNSD_PADDLE=paddlepaddle replaces it)", None)
        return Choice(CPU_BUILD, None, "False", "no usable NVIDIA GPU: the CPU build", None)
    build = gpu_build(machine, arch, python)
    pypi_runs = all(gpu.capability is None or gpu.capability <= 9.0 for gpu in machine.gpus)
    fallback = PYPI_GPU_BUILD if pypi_runs and toolkit_cuda() == "11.8" else None
    return Choice(build.requirement, index_setting(index_of(build)), build.cuda,
                  f"Paddle built for CUDA {build.cuda}, the newest build that driver {machine.driver} and compute "
                  f"capability {capabilities_text(machine)} run", fallback)


QUERY = r"""
import importlib.metadata, importlib.util, json, os, platform, re, sys
found = {}
for dist in importlib.metadata.distributions():
    name = (dist.metadata["Name"] or "").lower().replace("_", "-")
    if name in ("paddlepaddle", "paddlepaddle-gpu"):
        found[name] = dist.version
cuda, spec = None, importlib.util.find_spec("paddle")
if spec and spec.submodule_search_locations:
    try:
        with open(os.path.join(list(spec.submodule_search_locations)[0], "version", "__init__.py")) as stream:
            cuda = re.search(r"^cuda_version\s*=\s*'([^']*)'", stream.read(), re.M).group(1)
    except (OSError, AttributeError):
        pass
satisfies = None
if len(sys.argv) > 1 and len(found) == 1:
    try:
        from pip._vendor.packaging.requirements import Requirement
        satisfies = Requirement(sys.argv[1]).specifier.contains(next(iter(found.values())), prereleases=True)
    except Exception:
        pass
print(json.dumps({"python": platform.python_version(), "found": found, "cuda": cuda, "satisfies": satisfies}))
"""


def query(venv, requirement=None):
    """The environment's Python version and its Paddle: distributions, version, CUDA build, read without importing
    Paddle. An environment not created yet is this interpreter's, with no Paddle."""
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        return {"python": ".".join(map(str, sys.version_info[:3])), "found": {}, "cuda": None, "satisfies": None}
    code, output = command_output([python, "-c", QUERY, *([requirement] if requirement else [])], 120)
    try:
        return json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Refusal(f"{python} does not run ({first_line(output)}); remove {venv} and run setup again") from None


def installed_build(state):
    """{name, version, cuda} of the one Paddle installed, else {}."""
    if len(state["found"]) != 1:
        return {}
    [(name, version)] = state["found"].items()
    return {"name": name, "version": version, "cuda": state["cuda"]}


def describe_installed(state):
    if not state["found"]:
        return "no Paddle"
    return " and ".join(f"{name} {version}" for name, version in state["found"].items()) + (
        "" if len(state["found"]) == 1 else " (both install the module paddle)") + (
        f", {'CPU build' if state['cuda'] == 'False' else 'CUDA ' + str(state['cuda'])}" if state["cuda"] else "")


def is_installed(choice, venv, state):
    build = installed_build(state)
    if not build or build["name"] != distribution(choice.requirement):
        return False
    if choice.cuda is not None and build["cuda"] != choice.cuda:
        return False
    return bool(query(venv, choice.requirement)["satisfies"])


def reachable(index):
    """None where pip can read Paddle's page on this index, else why not."""
    url = index.rstrip("/") + "/paddlepaddle-gpu/"
    if url.startswith("file://"):
        return None if os.path.isdir(url[len("file://"):]) else f"{url[len('file://'):]} is not a folder"
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            response.read(1)
        return None
    except (urllib.error.URLError, OSError, ValueError) as error:
        return one_line(getattr(error, "reason", error))


def pip(venv, *arguments):
    """(exit code, output) of pip in the environment; its output is kept for the error line."""
    command = [os.path.join(venv, "bin", "python"), "-m", "pip", "--disable-pip-version-check", *arguments]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    return done.returncode, done.stdout


def pip_error(output):
    errors = [line[len("ERROR: "):] for line in output.splitlines() if line.startswith("ERROR: ")]
    return one_line(errors[-1] if errors else first_line(output))


def reachable_choice(choice):
    """The choice, or PyPI's 2.6.2 where Paddle's index cannot be reached and that fallback applies."""
    problem = reachable(choice.index) if choice.index else None
    if problem and not choice.fallback:
        raise Refusal(f"Paddle's index {choice.index} cannot be reached ({problem}); check the network or proxy, "
                      "or set DNSD_PADDLE_MIRROR to a mirror of it")
    if problem:
        say(f"Paddle's index {choice.index} cannot be reached ({problem}); installing {choice.fallback} from "
            "PyPI instead (it uses the system's CUDA 11.8 toolkit and needs cuDNN 8.6)")
        return Choice(choice.fallback, None, "11.8", "the fallback", None)
    return choice


def install_paddle(venv, choice, state, constraints):
    """Install the chosen build alone, whatever Paddle was there removed first; returns the new state."""
    where = f" from {choice.index}" if choice.index else ""
    if state["found"]:
        say(f"removing {describe_installed(state)} from {venv}: this machine needs {choice.requirement}")
        code, output = pip(venv, "uninstall", "--yes", *state["found"])
        if code:
            raise Refusal(f"pip could not remove {' and '.join(state['found'])}: {pip_error(output)}")
    say(f"installing {choice.requirement}{where} ({choice.reason}) into {venv}")
    options = ["--constraint", constraints] if constraints else []
    code, output = pip(venv, "install", "--quiet", *(["--extra-index-url", choice.index] if choice.index else []),
                       choice.requirement, *options)
    if code:
        raise Refusal(f"pip could not install {choice.requirement}{where}: {pip_error(output)}")
    state = query(venv)
    if not is_installed(choice, venv, state):
        raise Refusal(f"pip installed {describe_installed(state)} in {venv}, not {choice.requirement}; see "
                      "docs/installing.md")
    return state


def digest(*paths):
    hashed = hashlib.sha256()
    for path in paths:
        hashed.update(path.encode())
        with open(path, "rb") as stream:
            hashed.update(stream.read())
    return hashed.hexdigest()


def install_packages(venv, files, constraints, recorded):
    """pip install DNSD (editable) and each requirement file whose content changed since it was installed; returns
    the digests of what was asked for, by name."""
    base = [os.path.join(ROOT, "pyproject.toml"), os.path.join(ROOT, "requirements.txt")] + (
        [constraints] if constraints else [])
    wanted = {"dnsd": digest(*base)}
    for file in files:
        wanted[file] = digest(os.path.join(ROOT, file), *base[2:])
    missing = [name for name in wanted if recorded.get(name) != wanted[name]]
    if missing:
        say(f"installing {', '.join('DNSD' if name == 'dnsd' else name for name in missing)} into {venv}")
        arguments = ["--editable", ROOT] if "dnsd" in missing else []
        for name in missing:
            arguments += [] if name == "dnsd" else ["--requirement", os.path.join(ROOT, name)]
        code, output = pip(venv, "install", "--quiet", *arguments,
                           *(["--constraint", constraints] if constraints else []))
        if code:
            raise Refusal(f"pip could not install {', '.join(missing)}: {pip_error(output)}")
    return wanted


def gpu_check(venv, build):
    """Paddle's deep GPU check (dnsd --mode info --device gpu); returns its device line."""
    code, output = command_output([os.path.join(venv, "bin", "python"), "-m", "DNSD", "--mode", "info",
                                "--device", "gpu"], 600)
    problem = [line[len("DNSD: error: "):] for line in output.splitlines() if line.startswith("DNSD: error: ")]
    if code != 0:
        raise Refusal(f"{build['name']} {build['version']} (CUDA {build['cuda']}) in {venv} cannot use this "
                      f"machine's GPU: {problem[0] if problem else first_line(output[-2000:])}")
    return next((line for line in output.splitlines() if line.startswith("device")), "device: gpu")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="setup_env.sh", description="Create or update .venv with the "
                                     "PaddlePaddle build this machine needs, DNSD and the given requirement files.")
    parser.add_argument("--dry-run", action="store_true", help="say what is installed, what would be and why")
    parser.add_argument("--paddle-only", action="store_true",
                        help="install the Paddle build only (e.g. after a driver upgrade), not DNSD, and skip the GPU "
                             "check, which needs DNSD")
    parser.add_argument("--reinstall", action="store_true",
                        help="install the chosen Paddle build again, e.g. to retry Paddle's index after a fallback")
    parser.add_argument("files", nargs="*", help="requirement files, relative to the repository")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    venv = os.path.abspath(os.environ.get("DNSD_VENV") or os.path.join(ROOT, ".venv"))
    constraints = os.environ.get("DNSD_CONSTRAINTS") or None
    stamp_path = os.path.join(venv, ".dnsd-setup.json")
    try:
        with open(stamp_path) as stream:
            stamp = json.load(stream)
    except (OSError, ValueError):
        stamp = {}
    try:
        machine, arch = read_machine(nvidia_smi_seconds()), command_output(["uname", "-m"], 10)[1].strip()
        state = query(venv)
        if machine.note:
            outcome = "choosing from the GPUs it listed" if machine.gpus else "setup goes on as without a GPU"
            say(f"{machine.note}; {outcome} (fix the driver, or choose with DNSD_PADDLE and DNSD_PADDLE_INDEX)",
                stream=sys.stdout if args.dry_run else sys.stderr)
        choice = choose(machine, arch, state["python"], installed_build(state))
        wanted = {"requirement": choice.requirement, "index": choice.index}
        recorded = stamp.get("paddle", {})
        kept_fallback = (recorded.get("wanted") == wanted and recorded.get("fallback") and not args.reinstall
                         and recorded.get("installed") == installed_build(state))
        current = kept_fallback or (is_installed(choice, venv, state) and not args.reinstall)
        if args.dry_run:
            return dry_run(venv, machine, arch, state, choice, current, kept_fallback)
        to_install = None if current else reachable_choice(choice)
        if not os.path.exists(os.path.join(venv, "bin", "python")):
            say(f"creating {venv}")
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        if to_install:
            state = install_paddle(venv, to_install, state, constraints)
        if to_install or recorded.get("installed") != installed_build(state):  # or installed by hand
            recorded = {"wanted": wanted, "installed": installed_build(state), "fallback": to_install not in (None,
                                                                                                        choice)}
        stamp["paddle"] = recorded
        write_stamp(stamp_path, stamp)
        if args.paddle_only:
            say(f"{describe_installed(state)} in {venv}")
            return 0
        stamp["packages"] = {**stamp.get("packages", {}),
                             **install_packages(venv, args.files, constraints, stamp.get("packages", {}))}
        write_stamp(stamp_path, stamp)
        build = installed_build(state)
        if machine.gpus and build.get("cuda") not in (None, "False") and not recorded.get("checked"):
            say(gpu_check(venv, build))
            recorded["checked"] = True
            write_stamp(stamp_path, stamp)
        return 0
    except Refusal as refusal:
        say(f"error: {refusal}")
        return 2


def nvidia_smi_seconds():
    setting = os.environ.get("DNSD_NVIDIA_SMI_TIMEOUT", "30")
    if not setting.isdigit() or int(setting) < 1:
        raise Refusal(f"DNSD_NVIDIA_SMI_TIMEOUT={setting!r}: give a whole number of seconds, e.g. 30")
    return int(setting)


def write_stamp(path, stamp):
    with open(path + ".tmp", "w") as stream:
        json.dump(stamp, stream, indent=1)
    os.replace(path + ".tmp", path)


def dry_run(venv, machine, arch, state, choice, current, kept_fallback):
    lines = [f"machine: {describe_machine(machine, arch, state['python'])}",
             f"installed in {venv}: {describe_installed(state)}"]
    where = f" from {choice.index}" if choice.index else " from PyPI"
    if kept_fallback:
        lines.append(f"would keep {describe_installed(state)}, the fallback installed when {choice.index} could not "
                     "be reached (--reinstall tries that index again)")
    elif current:
        lines.append(f"would keep {describe_installed(state)}: it is {choice.requirement} ({choice.reason})")
    else:
        lines.append(f"would install {choice.requirement}{where} ({choice.reason})")
        if state["found"]:
            lines.append(f"would first remove {describe_installed(state)}: not the build wanted")
        if choice.fallback:
            lines.append(f"if that index cannot be reached: {choice.fallback} from PyPI (a system CUDA 11.8 toolkit "
                         "was found)")
    say(*lines, stream=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
