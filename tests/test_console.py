"""The console holds DNSD's lines only, on a machine whose home folder is new (no Matplotlib font cache, no Paddle
dataset cache): the libraries' logs and harmless warnings stay out of every mode and of the API."""
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, TINY_RUN, dnsd, environment
from test_predict import write_png

pytestmark = pytest.mark.slow  # each test here trains or runs DNSD in processes of its own


def test_every_mode_on_a_new_home_folder_prints_only_dnsds_lines(tiny_archive, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # CI=None: ONNX Runtime writes nothing into a home in CI anyway, and this test is about a user's machine.
    env = environment(HOME=str(home), MPLCONFIGDIR=None, XDG_CACHE_HOME=None, XDG_CONFIG_HOME=None, CI=None)
    run_dir = str(tmp_path / "run")
    write_png(str(tmp_path / "image.png"), np.zeros((3, 32, 32), dtype=np.uint8))
    commands = [
        ("--data-file", tiny_archive, "--output-dir", run_dir, *TINY_RUN, "--epochs", "1"),
        ("--mode", "plot", "--runs", run_dir, "--plot-file", str(tmp_path / "curves.png")),
        ("--mode", "eval", "--checkpoint", os.path.join(run_dir, "best.pdckpt"), "--data-file", tiny_archive),
        ("--mode", "export", "--checkpoint", os.path.join(run_dir, "best.pdckpt")),
        ("--mode", "predict", "--model", os.path.join(run_dir, "best-inference", "model"), "--images",
         str(tmp_path / "image.png")),
        ("--mode", "info", "--device", "cpu"),
    ]
    for command in commands:
        result = dnsd(*command, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", (command, result.stderr)
        assert not [line for line in result.stdout.splitlines() if "INFO" in line or "Warning" in line]
    # Nothing in the home but the caches of Paddle (its data sets, its compiled programs), Matplotlib (fonts) and DNSD
    # (engines that failed here): no ~/.visualdl, no ~/.cache/Microsoft.
    top = {entry.name for entry in home.iterdir()}
    cached = {entry.name for folder in (".cache", ".config") if (home / folder).is_dir()
              for entry in (home / folder).iterdir()}
    assert top <= {".cache", ".config"} and cached <= {"paddle", "matplotlib", "dnsd"}, (top, cached)
    # Matplotlib builds its font cache in the first home it meets: eval, first there, says nothing of it either
    # (with Paddle's kernels, as DNSD's operators' first build was shown quiet above).
    (tmp_path / "another home").mkdir()
    first = dnsd("--mode", "eval", "--checkpoint", os.path.join(run_dir, "best.pdckpt"), "--data-file", tiny_archive,
                 "--cpu-numerics", "portable", env={**env, "HOME": str(tmp_path / "another home")})
    assert first.returncode == 0 and first.stderr == "", first.stderr
    missing = dnsd("--mode", "eval", "--checkpoint", str(tmp_path / "missing.pdckpt"), env=env)
    assert missing.returncode == 2 and missing.stderr.startswith("DNSD: error: ")
    assert len(missing.stderr.splitlines()) == 1
    api = subprocess.run([sys.executable, "-c", f"import DNSD; DNSD.load_checkpoint({run_dir + '/best.pdckpt'!r})"],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert api.returncode == 0 and api.stderr == "", api.stderr


def test_the_root_logger_is_left_as_python_leaves_it_unless_verbose():
    code = ("import logging, sys\nfrom DNSD.system.console import quiet_libraries\nroot = logging.getLogger()\n"
            "before = (list(root.handlers), root.level)\nwith quiet_libraries(sys.argv[1] == 'verbose'):\n"
            "    import paddle\nprint((list(root.handlers), root.level) == before)")
    quiet = subprocess.run([sys.executable, "-c", code, "quiet"], cwd=ROOT, capture_output=True, text=True)
    assert quiet.stdout.strip() == "True", quiet.stderr
    import paddle

    if paddle.__version__.startswith("3."):  # Paddle 3 configures the root logger; --verbose leaves it so
        verbose = subprocess.run([sys.executable, "-c", code, "verbose"], cwd=ROOT, capture_output=True, text=True)
        assert verbose.stdout.strip() == "False", verbose.stderr
