"""A run's manifest, environment.json: what produced each session of the run (its start and every resume), one
sealed entry appended per session, never replaced: the command, the software, the device, the settings that can
change the numbers and the data. Each epoch's record names the entry of the session that trained it."""
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess

import numpy as np
import paddle

from DNSD import __version__
from DNSD.changes import setting
from DNSD.config import config_from_dict, flat_config, load_yaml
from DNSD.errors import InputError
from DNSD.files import read_json, write_json
from DNSD.invocation import typed
from DNSD.runs.folder import CONFIG, MANIFEST
from DNSD.runs.shapes import TEXT, Optional, conforms, mapping_of
from DNSD.system.device import describe_cpu, device_flags, paddle_build, system_gpus, thread_count
from DNSD.system.numerics import MACHINE_FREE_NUMERICS, PORTABLE_ENVIRONMENT, numerics_in_effect

FORMAT = "dnsd-environment/1"
# The only environment variables a manifest records: those that change what Paddle, MKL or cuDNN compute. Nothing
# else of the environment is read, so that no secret can reach a run folder.
VARIABLES = ("MKL_DEBUG_CPU_TYPE", "MKL_CBWR", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "KMP_AFFINITY",
             "OMP_PROC_BIND", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG", "NVIDIA_TF32_OVERRIDE",
             "FLAGS_cudnn_deterministic", "FLAGS_cudnn_exhaustive_search", "FLAGS_use_mkldnn",
             "FLAGS_embedding_deterministic", "PADDLE_TRAINERS_NUM")
GIT_SECONDS = 10
# What readers of an entry rely on: its parts, and the fields each must have, of these types (shapes.py).
OPTIONAL_TEXT = Optional(TEXT)
ENTRY = {"sha256": str, "command": [str], "numpy": str,
         "dnsd": {"version": str, "commit": TEXT, "uncommitted_changes": (bool, type(None))},
         "python": {"version": str}, "packages": {},
         "paddle": {"version": str, "commit": TEXT, "build": str, "cuda": TEXT, "cudnn": TEXT},
         "device": {"kind": str, "cpu": {"model": TEXT, "vendor": TEXT, "instruction_sets": [str]},
                    "gpus": Optional([{"name": str, "compute_capability": str}]), "driver": OPTIONAL_TEXT},
         "settings": {"paddle_flags": {}, "cpu_threads": (int, type(None)), "deterministic": bool,
                      "world_size": int, "environment": {}},
         "data": {"file": TEXT, "sha256": TEXT}}


def git_state(folder):
    """(commit, whether tracked files have uncommitted changes) of the checkout DNSD runs from, or (None, None)."""
    if not os.path.exists(os.path.join(folder, ".git")):
        return None, None
    try:
        commit = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=GIT_SECONDS)
        status = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=GIT_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    if commit.returncode or status.returncode:
        return None, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def describe_gpus():
    count = paddle.device.cuda.device_count()
    gpus = [{"name": paddle.device.cuda.get_device_name(i),
             "compute_capability": ".".join(map(str, paddle.device.cuda.get_device_capability(i)))}
            for i in range(count)]
    return {"gpus": gpus, "driver": system_gpus()[1]}


def installed_packages():
    found = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            found[name] = distribution.version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def describe_environment(device, run, data_identity, world_size):
    """This session's manifest entry (without its seal): device is 'cpu' or 'gpu', run the config's run section."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    commit, changed = git_state(root)
    hardware = {"kind": device, "platform": platform.platform(), "cpu": describe_cpu()}
    if device == "gpu":
        hardware.update(describe_gpus())
    return {
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": typed(),
        "dnsd": {"version": __version__, "path": root, "commit": commit, "uncommitted_changes": changed},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "paddle": {"version": paddle.__version__, "commit": getattr(paddle.version, "commit", None),
                   "build": paddle_build(),
                   "cuda": paddle.version.cuda() if paddle.device.is_compiled_with_cuda() else None,
                   "cudnn": paddle.version.cudnn() if paddle.device.is_compiled_with_cuda() else None},
        "numpy": np.__version__,
        "packages": installed_packages(),
        "device": hardware,
        "settings": {"paddle_flags": device_flags(device, run.deterministic, run.cudnn_exhaustive_search),
                     "cpu_threads": thread_count(run.cpu_threads) if device == "cpu" else None,
                     "cpu_numerics": numerics_in_effect()["cpu_numerics"] if device == "cpu" else None,
                     "deterministic": run.deterministic, "world_size": world_size,
                     "environment": {name: os.environ[name] for name in VARIABLES if name in os.environ}},
        "data": data_identity,
    }


def seal(entry):
    """The sha256 of an entry's content, its own seal left out."""
    content = {key: value for key, value in entry.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_manifest(run_dir):
    """The sealed entries of a run's environment.json (None where the run has none: trained before DNSD wrote one);
    InputError where the file is damaged or an entry's content does not match its seal."""
    path = os.path.join(run_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    manifest = read_json(path)
    entries = manifest.get("entries") if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise InputError(f"{path} is damaged (not a DNSD manifest); restore it from a copy of the run folder")
    for number, entry in enumerate(entries, 1):
        if not well_formed(entry):
            raise InputError(f"{path}: entry {number} is not a DNSD manifest entry (a part or field is missing); "
                             "restore the file from a copy of the run folder")
        if entry.get("sha256") != seal(entry):
            raise InputError(f"{path}: entry {number} was altered after it was written (its content does not match "
                             "its sha256); restore the file from a copy of the run folder")
    return entries


def well_formed(entry):
    """Whether an entry has every part and field its readers use, of the types they use (a sealed but crafted one
    may not)."""
    return conforms(entry, ENTRY) and entry["device"]["kind"] in ("cpu", "gpu") and \
        mapping_of(entry["settings"]["environment"], str) and mapping_of(entry["packages"], str) and \
        mapping_of(entry["settings"]["paddle_flags"], (bool, int, float, str))


def append_manifest(run_dir, entry):
    """Seal entry and add it to the run's environment.json; returns its seal. A damaged manifest is refused, never
    replaced."""
    entries = read_manifest(run_dir) or []
    entry = {**entry, "sha256": seal(entry)}
    write_json(os.path.join(run_dir, MANIFEST), {"format": FORMAT, "entries": [*entries, entry]})
    return entry["sha256"]


def entry_for(entries, digest):
    """The entry a record names by its seal, or None."""
    return next((entry for entry in entries or () if entry["sha256"] == digest), None)


def numerics(entry):
    """What decides the bits a step computes: Paddle's build, numpy, the device kind and its settings. Two sessions
    with equal numerics must train an epoch to bit-identical weights."""
    device, settings = entry["device"], entry["settings"]
    if device["kind"] == "gpu":
        hardware = {"gpus": device.get("gpus")}
    elif settings.get("cpu_numerics") in MACHINE_FREE_NUMERICS:
        hardware = {"cpu_numerics": settings["cpu_numerics"]}
    else:
        hardware = {"vendor": device["cpu"]["vendor"], "instruction_sets": device["cpu"]["instruction_sets"],
                    "cpu_threads": settings["cpu_threads"], "cpu_numerics": settings.get("cpu_numerics"),
                    **{name: settings["environment"].get(name) for name in PORTABLE_ENVIRONMENT}}
    return {"paddle": {key: entry["paddle"][key] for key in ("version", "commit", "cuda", "cudnn")},
            "numpy": entry["numpy"], "device": device["kind"], **hardware,
            "paddle_flags": settings["paddle_flags"], "world_size": settings["world_size"]}


def flatten(value, prefix=""):
    """{"a.b": leaf} of a nested mapping."""
    if isinstance(value, dict) and value:
        flat = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


# The parts of a manifest by what a difference in them explains, most first (after the config's recipe keys).
KINDS = (("data", ("data",)), ("software", ("dnsd", "python", "paddle", "numpy", "packages")),
         ("hardware", ("device",)), ("settings", ("settings",)), ("command", ("command", "written")))


def manifest_differences(first, second):
    """[(kind, key, first's value, second's value)] where two entries differ, by KINDS' order."""
    differences = []
    for kind, parts in KINDS:
        flat_first = flatten({part: first.get(part) for part in parts})
        flat_second = flatten({part: second.get(part) for part in parts})
        for key in sorted(set(flat_first) | set(flat_second)):
            if flat_first.get(key) != flat_second.get(key):
                differences.append((kind, key, flat_first.get(key), flat_second.get(key)))
    return differences


def run_differences(first, second):
    """[(kind, key, first's value, second's value)] where two runs' configs and latest manifest entries differ:
    the recipe first, then the data, software, hardware, settings and command; a run without a manifest adds a
    'manifest' row."""
    configs = [flat_config(config_from_dict(load_yaml(os.path.join(folder, CONFIG)),
                                            where=f" in {os.path.join(folder, CONFIG)}")) for folder in (first, second)]
    rows = {"recipe": [], "data": [], "settings": []}
    for key in configs[0]:
        if configs[0][key] != configs[1][key]:
            kind = "recipe" if not setting(key) else \
                "data" if key.startswith("data.") else "settings"
            rows[kind].append((kind, key, configs[0][key], configs[1][key]))
    entries = [read_manifest(folder) for folder in (first, second)]
    if not all(entries):
        missing = [folder for folder, found in zip((first, second), entries) if not found]
        return rows["recipe"] + rows["data"] + rows["settings"] + [
            ("manifest", MANIFEST, f"absent in {', '.join(missing)}", "trained before DNSD 1.1.0 wrote one")]
    found = manifest_differences(entries[0][-1], entries[1][-1])
    order = [kind for kind, _ in KINDS]
    return rows["recipe"] + sorted(rows["data"] + rows["settings"] + found, key=lambda row: order.index(row[0]))
