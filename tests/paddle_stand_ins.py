"""Stand-in Paddle wheels in local package indexes, so that scripts/setup_env.sh runs real pip offline: each wheel
is a `paddle` package that says its version and CUDA build as Paddle's own paddle/version/__init__.py does."""
import os
import zipfile

# Paddle's index as these tests lay it out: per CUDA build, the paddlepaddle-gpu versions and the CUDA they report.
PADDLE_INDEX = {"cu118": ("3.2.0",), "cu126": ("3.2.0", "3.3.1"), "cu129": ("3.2.0", "3.3.1"), "cu130": ("3.3.1",)}
# PyPI as these tests lay it out: the CPU build and the GPU build for CUDA 11.8.
PYPI = {"paddlepaddle": (("3.3.1", "False"),), "paddlepaddle-gpu": (("2.6.2", "11.8"),)}


def write_wheel(folder, name, version, cuda):
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {"paddle/__init__.py": f"__version__ = {version!r}\n",
             "paddle/version/__init__.py": f"full_version = {version!r}\ncuda_version     = {cuda!r}\n\n\n"
                                           "def cuda():\n    return cuda_version\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    os.makedirs(folder, exist_ok=True)
    wheel = f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(folder, wheel), "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def write_index(root, projects):
    """A PEP 503 index in folder root: {name: ((version, cuda), ...)}; returns its file:// URL."""
    for name, builds in projects.items():
        folder = os.path.join(root, name)
        wheels = [write_wheel(folder, name, version, cuda) for version, cuda in builds]
        with open(os.path.join(folder, "index.html"), "w") as stream:
            stream.write("<html><body>" + "".join(f'<a href="{w}">{w}</a>' for w in wheels) + "</body></html>")
    return f"file://{root}"


def write_indexes(root):
    """Paddle's index (one folder per CUDA build) and PyPI, as file:// URLs: (Paddle's, PyPI's)."""
    for tag, versions in PADDLE_INDEX.items():
        cuda = f"{tag[2:-1]}.{tag[-1]}"
        write_index(os.path.join(root, "paddle", tag), {"paddlepaddle-gpu": [(v, cuda) for v in versions]})
    return f"file://{root}/paddle", write_index(os.path.join(root, "pypi"), PYPI)
