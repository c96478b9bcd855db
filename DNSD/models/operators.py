"""DNSD's own CPU operators (run.cpu_numerics onednn, and auto where they build): the convolution (convolution.cc),
which calls oneDNN's primitives, and batch norm (batch_norm.cc), float32 with portable bits; here their build, their
switch, and the calls of the convolution and of the change of layout (batch norm's is batch_norm.py's). With them a
training step takes about half the time it takes with Paddle's CPU kernels (BENCHMARKS.md).

They are compiled on first use against oneDNN's headers (PyPI's onednn-devel), linked to the oneDNN library Paddle
ships; the build lives in DNSD's cache, one folder per Paddle build and source. Graphs traced for export keep Paddle's
operators, which every engine runs."""
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import site
import sys
import sysconfig
import warnings

import paddle
import paddle.nn.functional as F

from DNSD.errors import InputError, one_line
from DNSD.files import cache_folder

FOLDER = os.path.dirname(os.path.abspath(__file__))
SOURCES = [os.path.join(FOLDER, name) for name in ("convolution.cc", "batch_norm.cc")]
HEADERS = "onednn-devel==2025.0.0"  # oneDNN 3.6's headers; Paddle 2.6.2 ships the library of 3.2, Paddle 3.3.1 of 3.6
# AVX2 without FMA, whose fused products only some CPUs would compute, and which contraction would bring in.
FLAGS = ["-O3", "-fopenmp", "-mavx2", "-ffp-contract=off"]
# Paddle's OpenMP first: Paddle's oneDNN runs on Intel's (libiomp5), and without it the operators would take the GNU
# one that oneDNN's library also names, whose threads and thread count are another runtime's.
LIBRARIES = ["-l:libiomp5.so", "-l:libdnnl.so.3"]
SHELL_SAFE = re.compile(r"[\w./+-]+")
_module = [None]
_threads = [1]


def use_cpu_operators(enabled, threads=1):
    """Whether the residual networks run DNSD's CPU operators (compiled here on first use), on this many threads."""
    _module[0] = load_operators() if enabled else None
    _threads[0] = threads


def cpu_operators():
    """The compiled operators' module, where they are in use; else None."""
    return _module[0]


def operator_threads():
    return _threads[0]


def applies_to(x):
    """Whether DNSD's operators compute on x: in use, in dygraph (traced graphs keep Paddle's), on the CPU."""
    return _module[0] is not None and paddle.in_dynamic_mode() and x.place.is_cpu_place()


def blockable(channels):
    """Whether an activation between DNSD's operators may stay in oneDNN's AVX2 layout, nChw8c, which holds channels
    in eights: each operator takes flags blocked_in and blocked_out saying which of its activations are in it."""
    return channels % 8 == 0


def conv2d(x, weight, stride=1, padding=1, blocked_in=False, blocked_out=False):
    """Paddle's conv2d, or DNSD's, whose input and output may be in oneDNN's layout (blockable)."""
    if applies_to(x):
        return cpu_operators().dnsd_conv2d(x, weight, stride, padding, blocked_in, blocked_out, operator_threads())
    return F.conv2d(x, weight, stride=stride, padding=padding)


def relayout(x, blocked):
    """x, whose layout is the other, in oneDNN's nChw8c where blocked, else in NCHW: between DNSD's operators only."""
    return cpu_operators().dnsd_relayout(x, blocked) if applies_to(x) else x


def onednn_headers():
    """The include folder that holds oneapi/dnnl/dnnl.hpp (onednn-devel installs it into the environment's, or with
    pip --user into the user's), or None."""
    prefixes = (sysconfig.get_paths()["data"], sys.prefix, site.getuserbase())
    for folder in dict.fromkeys(os.path.join(prefix, "include") for prefix in prefixes):
        if os.path.isfile(os.path.join(folder, "oneapi", "dnnl", "dnnl.hpp")):
            return folder
    return None


def toolchain():
    """The folder of oneDNN's headers, where a C++ compiler is there to build against them; else one line why not."""
    if not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")):
        raise InputError("DNSD's CPU operators are compiled on first use, and no C++ compiler was found (g++); install "
                         "one (e.g. apt install g++)")
    headers = onednn_headers()
    if headers is None:
        raise InputError(f"DNSD's CPU operators need oneDNN's headers, not installed here; pip install '{HEADERS}'")
    return headers


def check_shell_safe(folder):
    """Paddle's builder runs `cd FOLDER && PYTHON setup.py build` through a shell, its paths unquoted."""
    for what, path, fix in (("DNSD's cache", folder, "set XDG_CACHE_HOME to a folder whose path has none"),
                            ("this Python", sys.executable, "use a Python environment whose path has none")):
        if not SHELL_SAFE.fullmatch(path):
            raise InputError(f"DNSD's CPU operators cannot be built where a path holds a space or a shell character "
                             f"({what}: {path!r}; Paddle's builder passes it to a shell); {fix}")


@functools.cache
def load_operators():
    """DNSD's operators, compiled into the cache where this Paddle has not built them yet; one process
    compiles while the others (ranks, a sweep's workers) wait for it. Paddle registers an operator once a process."""
    headers = toolchain()
    key = hashlib.sha256(f"{paddle.__version__} {paddle.version.commit} {headers} {FLAGS} {LIBRARIES}".encode())
    for source in SOURCES:
        with open(source, "rb") as stream:
            key.update(stream.read())
    folder = cache_folder("extensions", f"operators-{key.hexdigest()[:16]}")
    check_shell_safe(folder)
    os.makedirs(folder, exist_ok=True)
    libraries = os.path.join(os.path.dirname(paddle.__file__), "libs")
    with open(os.path.join(folder, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with built_quietly(os.path.join(folder, "build.log")):
                from paddle.utils.cpp_extension import load

                module = load(name="dnsd_operators", sources=SOURCES, extra_include_paths=[headers],
                              extra_cxx_cflags=FLAGS, build_directory=folder, verbose=False,
                              extra_ldflags=[f"-L{libraries}", *LIBRARIES, f"-Wl,-rpath,{libraries}"])
        except Exception as error:  # the compiler's and the loader's errors are of many types
            raise InputError(f"DNSD's CPU operators could not be built ({one_line(error)[:200]}); the compiler's "
                             f"output is in {os.path.join(folder, 'build.log')}") from None
    return module


@contextlib.contextmanager
def built_quietly(path):
    """This process's and its children's standard output and error into a file: Paddle's builder prints progress,
    logs and (Paddle 2.6) a deprecation warning, and the compiler its warnings, none of which is DNSD's to show."""
    logging.getLogger("utils.cpp_extension").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="paddle.utils.cpp_extension")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
