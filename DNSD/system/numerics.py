"""CPU numerics (run.cpu_numerics): "portable" makes every x86-64 CPU with AVX2 and FMA compute the same bits for
the same seed, whatever its vendor and number of cores; "onednn" does too, with other bits, twice as fast: DNSD's own
CPU operators (models/operators.py), the convolution through oneDNN's AVX2 kernels and batch norm in float32;
"auto", the default, is onednn where they build and portable elsewhere; "native" lets MKL pick its fastest code for
this CPU.

Three things decide a CPU's bits (docs/reproducing.md): MKL's code path, which it picks by vendor and instruction set
at its first call (MKL_DEBUG_CPU_TYPE=5 pins the AVX2 path on AMD, MKL_CBWR=AVX2 on Intel); how MKL splits a product
among threads (MKL_CBWR's STRICT keeps one order for any thread count); and Paddle's batch norm, whose square root
starts from the processor's own estimate (models/batch_norm.py computes it exactly instead).
"""
import os
import platform
import sys

from DNSD.errors import InputError
from DNSD.models.batch_norm import portable_batch_norm, use_portable_batch_norm
from DNSD.models.operators import cpu_operators, load_operators, use_cpu_operators

PORTABLE_ENVIRONMENT = {"MKL_DEBUG_CPU_TYPE": "5", "MKL_CBWR": "AVX2,STRICT"}
# Native numerics on AMD keep MKL_DEBUG_CPU_TYPE=5 too: MKL 2019 otherwise runs a generic path there, twice as slow.
NATIVE_ENVIRONMENT_AMD = {"MKL_DEBUG_CPU_TYPE": "5"}
REQUIRED_FLAGS = ("avx2", "fma")
# The numerics that compute the same bits on every x86-64 CPU with AVX2, at any thread count.
MACHINE_FREE_NUMERICS = ("portable", "onednn")
CPUINFO = "/proc/cpuinfo"


def cpuinfo_fields(path=CPUINFO):
    """{field: value} of the first processor /proc/cpuinfo lists; {} where it cannot be read."""
    try:
        with open(path) as stream:
            text = stream.read()
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def configure_numerics(numerics, cpuinfo=CPUINFO, threads=1):
    """Set MKL's environment for the numerics asked for (MKL variables already in the environment are kept), the
    batch norm and the convolution they compute with (the convolution on this many threads), and return
    numerics_in_effect."""
    fields = cpuinfo_fields(cpuinfo)
    flags = set(fields.get("flags", "").split())
    capable = set(REQUIRED_FLAGS) <= flags
    amd = fields.get("vendor_id") == "AuthenticAMD"
    native = NATIVE_ENVIRONMENT_AMD if amd and capable else {}
    wanted = native if numerics == "native" else PORTABLE_ENVIRONMENT
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    use_portable_batch_norm(numerics != "native")
    if numerics == "auto":
        numerics = "onednn" if operators_build(flags) else "portable"
    if numerics == "onednn" and fields and "avx2" not in flags:
        raise InputError("--cpu-numerics onednn runs AVX2's instructions, which this CPU lacks; pass --cpu-numerics "
                         "portable")
    try:
        use_cpu_operators(numerics == "onednn", threads)
    except InputError as error:
        raise InputError(f"{error}; or pass --cpu-numerics portable") from None
    return numerics_in_effect(cpuinfo)


def operators_build(flags):
    """Whether DNSD's CPU operators run here (built on first use), for auto. Where only a compiler or oneDNN's headers
    are missing, one line says so, as portable numerics take half the speed."""
    if platform.machine() != "x86_64" or "avx2" not in flags:
        return False
    try:
        load_operators()
    except InputError as error:
        print(f"DNSD: portable CPU numerics, at half the speed of DNSD's CPU operators: {error}", file=sys.stderr)
        return False
    return True


def numerics_in_effect(cpuinfo=CPUINFO):
    """What this process computes with, for the manifest: {"cpu_numerics": "portable", "native", "onednn" or
    "custom" (portable or onednn asked for, but the environment's own MKL variables, Paddle's oneDNN kernels or a
    CPU without AVX2 and FMA make it another), and the MKL variables}."""
    capable = set(REQUIRED_FLAGS) <= set(cpuinfo_fields(cpuinfo).get("flags", "").split())
    in_effect = {key: os.environ.get(key) for key in PORTABLE_ENVIRONMENT}
    # Paddle's own oneDNN kernels are chosen by the CPU's instruction sets, as MKL's are.
    mkldnn = os.environ.get("FLAGS_use_mkldnn", "0")  # noqa: SIM112 (Paddle's flag is named in lower case)
    pinned = in_effect == PORTABLE_ENVIRONMENT and mkldnn.lower() in ("0", "false")
    kept = ("native" if not portable_batch_norm() else "custom" if not (capable and pinned) else
            "onednn" if cpu_operators() else "portable")
    return {"cpu_numerics": kept, **in_effect}
