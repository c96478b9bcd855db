"""The convolutions of the residual networks: Paddle's, or under run.cpu_numerics onednn DNSD's own CPU operator
(convolution.cc), which calls oneDNN's primitives: a training step then takes about two thirds of the time it takes
with Paddle's CPU kernel (BENCHMARKS.md).

The operator is compiled on first use against oneDNN's headers (PyPI's onednn-devel) and linked to the oneDNN library
Paddle ships; the build lives in DNSD's cache, one folder per Paddle build and source. Graphs traced for export keep
Paddle's convolution, which every engine runs."""
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import shutil
import site
import sys
import sysconfig
import warnings

import paddle
import paddle.nn.functional as F

from DNSD.errors import InputError, one_line
from DNSD.files import cache_folder

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "convolution.cc")
HEADERS = "onednn-devel==2025.0.0"  # oneDNN 3.6's headers; Paddle 2.6.2 ships the library of 3.2, Paddle 3.3.1 of 3.6
FALLBACK = "or leave out --cpu-numerics onednn"
_operator = [None]
_threads = [1]


def use_onednn_convolution(enabled, threads=1):
    """Whether conv2d runs DNSD's oneDNN operator (compiled here on first use), on this many CPU threads."""
    _operator[0] = load_operator() if enabled else None
    _threads[0] = threads


def onednn_convolution():
    return _operator[0] is not None


def conv2d(x, weight, stride=1, padding=1):
    if _operator[0] is not None and paddle.in_dynamic_mode() and x.place.is_cpu_place():
        return _operator[0](x, weight, stride, padding, _threads[0])
    return F.conv2d(x, weight, stride=stride, padding=padding)


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
        raise InputError(f"--cpu-numerics onednn compiles DNSD's convolution, and no C++ compiler was found (g++); "
                         f"install one (e.g. apt install g++), {FALLBACK}")
    headers = onednn_headers()
    if headers is None:
        raise InputError(f"--cpu-numerics onednn needs oneDNN's headers; pip install '{HEADERS}', {FALLBACK}")
    return headers


@functools.cache
def load_operator():
    """DNSD's convolution operator, compiled into the cache where this Paddle has not built it yet; one process
    compiles while the others (ranks, a sweep's workers) wait for it. Paddle registers an operator once a process."""
    headers = toolchain()
    with open(SOURCE, "rb") as stream:
        key = hashlib.sha256(stream.read() + f"{paddle.__version__} {paddle.version.commit} {headers}".encode())
    folder = cache_folder("extensions", f"convolution-{key.hexdigest()[:16]}")
    os.makedirs(folder, exist_ok=True)
    libraries = os.path.join(os.path.dirname(paddle.__file__), "libs")
    with open(os.path.join(folder, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with built_quietly(os.path.join(folder, "build.log")):
                from paddle.utils.cpp_extension import load

                module = load(name="dnsd_convolution", sources=[SOURCE], extra_include_paths=[headers],
                              extra_cxx_cflags=["-O2", "-fopenmp"], build_directory=folder, verbose=False,
                              extra_ldflags=[f"-L{libraries}", "-l:libdnnl.so.3", f"-Wl,-rpath,{libraries}"])
        except Exception as error:  # the compiler's and the loader's errors are of many types
            raise InputError(f"DNSD's oneDNN convolution could not be built ({one_line(error)[:200]}); the compiler's "
                             f"output is in {os.path.join(folder, 'build.log')}; {FALLBACK}") from None
    return module.dnsd_conv2d


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
