"""DNSD's CPU operators (run.cpu_numerics onednn), the convolution through oneDNN and batch norm: Paddle's within
float32 rounding, the same bits at any thread count, in either layout and on either Paddle, a run that resumes and
audits bit for bit, and one line where they cannot be built."""
import ctypes
import glob
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

from DNSD.errors import InputError
from DNSD.files import cache_folder
from DNSD.models import batch_norm as batch_norm_module
from DNSD.models import operators
from DNSD.models.batch_norm import BatchNorm2D, batch_norm, use_portable_batch_norm, use_synced_batch_norm
from DNSD.models.operators import conv2d, cpu_operators, use_cpu_operators
from DNSD.models.resnet import CifarResNet
from DNSD.runs.checkpoint import read_state, restore_model
from DNSD.training.ranks import weights_digest
from helpers import ROOT, TINY_RUN, assert_one_line_error, dnsd, read_json, real_archive
from test_ranks import RUN, launch

pytestmark = pytest.mark.slow  # the first test in a process compiles the operators (about 30 s)

# The stem, a block, a downsampling block's first convolution, the last stage.
SHAPES = [((16, 3, 32, 32), (16, 3, 3, 3), 1), ((16, 16, 32, 32), (16, 16, 3, 3), 1),
          ((16, 16, 32, 32), (32, 16, 3, 3), 2), ((16, 64, 8, 8), (64, 64, 3, 3), 1)]


def convolve(images, weights, stride):
    """The output and both gradients, for a fixed random output gradient."""
    x, w = paddle.to_tensor(images, stop_gradient=False), paddle.to_tensor(weights, stop_gradient=False)
    y = conv2d(x, w, stride=stride)
    upstream = paddle.to_tensor(np.random.default_rng(1).standard_normal(y.shape).astype(np.float32))
    dx, dw = paddle.grad(y, [x, w], upstream)
    return [tensor.numpy() for tensor in (y, dx, dw)]


def inputs(x_shape, w_shape):
    rng = np.random.default_rng(0)
    return rng.standard_normal(x_shape).astype(np.float32), (0.1 * rng.standard_normal(w_shape)).astype(np.float32)


@pytest.mark.parametrize("x_shape, w_shape, stride", SHAPES)
def test_the_operator_computes_paddles_convolution_and_its_gradients(x_shape, w_shape, stride):
    images, weights = inputs(x_shape, w_shape)
    paddles = convolve(images, weights, stride)
    use_cpu_operators(True)
    assert cpu_operators()
    ours = convolve(images, weights, stride)
    for name, mine, theirs in zip(("output", "input gradient", "weight gradient"), ours, paddles):
        assert mine.shape == theirs.shape, name
        assert np.abs(mine - theirs).max() <= 1e-5 * max(1.0, np.abs(theirs).max()), name


def test_a_layout_that_would_pad_channels_is_refused():
    use_cpu_operators(True)
    images, weights = inputs(*SHAPES[0][:2])  # three channels: nChw8c would pad them to eight
    with pytest.raises(Exception, match="nChw8c holds channels in eights"):
        conv2d(paddle.to_tensor(images), paddle.to_tensor(weights), blocked_in=True)
    with pytest.raises(Exception, match="nChw8c holds channels in eights"):
        batch_norm(paddle.to_tensor(images), fresh_batch_norm(3, True), blocked_in=True)


def normalise(images, layer, relu, blocked=False):
    """layer applied to images (then a ReLU where relu) and the gradients of a fixed random output gradient, with the
    input and output in nChw8c where blocked; all as NCHW arrays, with the layer's running statistics after it."""
    upstream = np.random.default_rng(1).standard_normal(images.shape).astype(np.float32)
    to_layout = to_blocked if blocked else (lambda a: a)
    x = paddle.to_tensor(to_layout(images), stop_gradient=False)
    y = batch_norm(x, layer, relu=relu, blocked_in=blocked, blocked_out=blocked)
    dx, dgamma, dbeta = paddle.grad(y, [x, layer.weight, layer.bias], paddle.to_tensor(to_layout(upstream)))
    from_layout = (lambda a: from_blocked(a, images.shape)) if blocked else (lambda a: a)
    return [from_layout(y.numpy()), from_layout(dx.numpy()), dgamma.numpy(), dbeta.numpy(), layer._mean.numpy(),
            layer._variance.numpy()]


def to_blocked(array):
    """NCHW as nChw8c: blocks of eight channels, the channel innermost."""
    n, c, h, w = array.shape
    return np.ascontiguousarray(array.reshape(n, c // 8, 8, h, w).transpose(0, 1, 3, 4, 2)).reshape(array.shape)


def from_blocked(array, shape):
    n, c, h, w = shape
    return np.ascontiguousarray(array.reshape(n, c // 8, h, w, 8).transpose(0, 1, 4, 2, 3)).reshape(shape)


def the_same_in_both_layouts():
    """Whether training batch norm with its ReLU gives the same bits from and into nChw8c as in NCHW."""
    images = np.random.default_rng(0).normal(0.5, 2.0, (8, 16, 5, 5)).astype(np.float32)
    plain = normalise(images, fresh_batch_norm(16, True), relu=True)
    blocked = normalise(images, fresh_batch_norm(16, True), relu=True, blocked=True)
    return all(np.array_equal(a, b) for a, b in zip(plain, blocked))


def fresh_batch_norm(channels, training):
    layer = BatchNorm2D(channels)
    rng = np.random.default_rng(2)
    for tensor, values in ((layer.weight, rng.normal(1, 0.1, channels)), (layer.bias, rng.normal(0, 0.1, channels)),
                           (layer._mean, rng.normal(0, 0.1, channels)), (layer._variance, rng.uniform(1, 2, channels))):
        tensor.set_value(values.astype(np.float32))
    layer.train() if training else layer.eval()
    return layer


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [True, False])
def test_its_batch_norm_computes_paddles_in_float64_with_its_gradients_and_statistics(training, relu):
    images = np.random.default_rng(0).normal(0.5, 2.0, (16, 16, 9, 9)).astype(np.float32)  # 81 pixels: a lane tail
    use_portable_batch_norm(True)
    paddles = normalise(images, fresh_batch_norm(16, training), relu)
    use_cpu_operators(True)
    ours = normalise(images, fresh_batch_norm(16, training), relu)
    names = ("output", "input gradient", "scale gradient", "shift gradient", "running mean", "running variance")
    for name, mine, theirs in zip(names, ours, paddles):
        assert np.abs(mine - theirs).max() <= 2e-6 * max(1.0, np.abs(theirs).max()), name


def test_its_batch_norm_gives_the_same_bits_in_oneDNNs_layout_as_in_nchw():
    use_cpu_operators(True)
    assert the_same_in_both_layouts()


def test_synced_batch_norm_takes_its_input_from_and_gives_its_output_in_oneDNNs_layout(monkeypatch):
    monkeypatch.setattr(batch_norm_module.SumOverRanks, "apply", staticmethod(lambda tensor: tensor))  # one rank
    use_cpu_operators(True)
    use_synced_batch_norm(True)
    try:
        assert the_same_in_both_layouts()
    finally:
        use_synced_batch_norm(False)


def resnet_step(threads):
    """A ResNet-20's output, gradients and running statistics after one training step on 16 images, with DNSD's
    operators on this many threads (its blocks' activations in oneDNN's layout)."""
    paddle.seed(0)
    model = CifarResNet(depth=20)
    rng = np.random.default_rng(0)
    images = paddle.to_tensor(rng.standard_normal((16, 3, 32, 32)).astype(np.float32))
    use_cpu_operators(threads is not None, threads or 1)
    model.train()
    model.begin_step(0, 0, 0, 16)
    out = model(images)
    paddle.nn.functional.cross_entropy(out, paddle.to_tensor(rng.integers(0, 10, 16))).backward()
    gradients = {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}
    return {"output": out.numpy(), **gradients, **{name: b.numpy() for name, b in model.named_buffers()}}


def test_a_resnet_with_them_computes_what_it_computes_with_paddles_operators():
    paddles, ours = resnet_step(None), resnet_step(1)
    assert paddles.keys() == ours.keys()
    for name in paddles:
        assert np.abs(ours[name] - paddles[name]).max() <= 2e-5 * max(1.0, np.abs(paddles[name]).max()), name


@pytest.mark.parametrize("threads", [2, 3])  # oneDNN's strided backward-data summed otherwise on 3 than on 2
def test_their_bits_do_not_depend_on_the_thread_count(threads):
    results = []
    for count in (1, threads):
        use_cpu_operators(True, count)
        convolutions = [convolve(*inputs(x_shape, w_shape), stride) for x_shape, w_shape, stride in SHAPES]
        results.append((convolutions, resnet_step(count)))
    for one, other in zip(results[0][0], results[1][0]):
        assert all(np.array_equal(a, b) for a, b in zip(one, other))
    assert all(np.array_equal(results[0][1][name], results[1][1][name]) for name in results[0][1])


def test_they_set_the_threads_of_the_openmp_that_paddles_onednn_runs_on():
    path = os.path.join(os.path.dirname(paddle.__file__), "libs", "libiomp5.so")
    intel = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # the runtime Paddle loaded
    for threads in (2, 1):
        use_cpu_operators(True, threads)
        convolve(*inputs(*SHAPES[1][:2]), 1)
        assert intel.omp_get_max_threads() == threads


def test_onednn_numerics_compute_their_reference_bits_and_say_so():
    result = dnsd("info", "--check-numerics", "--device", "cpu", "--cpu-numerics", "onednn")
    assert result.returncode == 0, result.stderr
    assert "CPU numerics:         onednn (MKL_DEBUG_CPU_TYPE=5, MKL_CBWR=AVX2,STRICT)" in result.stdout
    assert "this machine computes the reference bits" in result.stdout


def test_a_run_records_its_numerics_re_trains_bit_for_bit_and_exports(tiny_archive, tmp_path):
    run_dir = str(tmp_path / "run")
    result = dnsd("--data-file", tiny_archive, "--output-dir", run_dir, *TINY_RUN, "--cpu-numerics", "onednn",
                  "--keep-every", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "Compiling" not in result.stdout  # the build is quiet
    [session] = read_json(os.path.join(run_dir, "environment.json"))["entries"]
    assert session["settings"]["cpu_numerics"] == "onednn"
    # Each epoch again from the checkpoint it started from, as a resume takes it: the same bits.
    audit = dnsd("audit", run_dir, "--all")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert audit.stdout.count("bit-identical") >= 2
    # The exported graph holds Paddle's convolution, which every engine runs, and gives the checkpoint's output.
    export = dnsd("export", "--checkpoint", os.path.join(run_dir, "best.pdckpt"), "--format", "onnx",
                  "--export-prefix", str(tmp_path / "exported" / "model"))
    assert export.returncode == 0, export.stderr
    assert "dnsd_conv2d" not in (tmp_path / "exported" / "model.onnx").read_bytes().decode("latin-1")


def without_a_compiler(folder):
    """A PATH of this machine's programs, its C++ compilers left out."""
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for name in os.listdir(directory) if os.path.isdir(directory) else ():
            if not (folder / name).exists() and not any(name.startswith(c) or f"-{c}" in name for c in ("g++", "c++")):
                os.symlink(os.path.join(directory, name), folder / name)
    return str(folder)


def test_without_a_compiler_or_the_headers_it_is_one_line(tiny_archive, tmp_path, monkeypatch):
    environment = {key: value for key, value in os.environ.items() if key != "CXX"}
    environment["PATH"] = without_a_compiler(tmp_path / "bin")
    environment["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # nothing built here before
    asked = dnsd("--data-file", tiny_archive, "--output-dir", str(tmp_path / "asked"), *TINY_RUN, "--cpu-numerics",
                 "onednn", env=environment)
    assert_one_line_error(asked, "no C++ compiler was found (g++); install one", "or pass --cpu-numerics portable")
    assert not os.path.exists(tmp_path / "asked" / "last.pdckpt")
    # The default trains at half the speed with Paddle's kernels, says why in one line, and records what it ran.
    default = dnsd("--data-file", tiny_archive, "--output-dir", str(tmp_path / "default"), *TINY_RUN, "--epochs", "1",
                   env=environment)
    assert default.returncode == 0, default.stderr
    assert default.stderr.splitlines() == ["DNSD: portable CPU numerics, at half the speed of DNSD's CPU operators: "
                                           "DNSD's CPU operators are compiled on first use, and no C++ compiler was "
                                           "found (g++); install one (e.g. apt install g++)"]
    [session] = read_json(os.path.join(tmp_path, "default", "environment.json"))["entries"]
    assert session["settings"]["cpu_numerics"] == "portable"
    # Its config says auto, which DNSD's operators would make onednn here: the audit re-trains as the run computed.
    audit = dnsd("audit", str(tmp_path / "default"))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "bit-identical" in audit.stdout
    monkeypatch.setattr(operators, "onednn_headers", lambda: None)
    with pytest.raises(InputError, match="pip install 'onednn-devel==2025.0.0'"):
        operators.toolchain()


def test_a_path_that_paddles_builder_would_hand_a_shell_unquoted_is_refused_in_one_line(tmp_path):
    folder = str(tmp_path / "a home; touch pwned" / "operators")
    with pytest.raises(InputError, match="holds a space or a shell character .*; set XDG_CACHE_HOME to a folder"):
        operators.check_shell_safe(folder)
    operators.check_shell_safe(str(tmp_path / "a_home-2.0" / "operators"))


def test_the_build_is_found_by_a_new_process_without_building_again():
    use_cpu_operators(True)  # built in this process's cache, if not before
    [built] = glob.glob(cache_folder("extensions", "operators-*", "**", "*.so"), recursive=True)
    before = os.stat(built).st_mtime_ns
    code = "from DNSD.system.device import configure_cpu; print(configure_cpu(1, 'onednn')['cpu_numerics'])"
    started = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert started.stdout.strip() == "onednn", started.stderr
    assert os.stat(built).st_mtime_ns == before


def test_real_images_train_to_the_same_error_as_paddles_convolution(tmp_path):
    archive = real_archive()
    runs = {}
    for numerics in ("portable", "onednn"):
        run_dir = str(tmp_path / numerics)
        result = dnsd("--data-file", archive, "--output-dir", run_dir, "--depth", "8", "--epochs", "1",
                      "--train-images", "1000", "--val-size", "200", "--cpu-numerics", numerics)
        assert result.returncode == 0, result.stderr
        runs[numerics] = read_json(os.path.join(run_dir, "summary.json"))
    # One epoch from the same seed: float32 rounding alone separates them (10 of the 200 images at most).
    assert abs(runs["onednn"]["best_val_error"] - runs["portable"]["best_val_error"]) <= 5.0


def test_two_ranks_train_with_it_to_the_weights_rank_0_saved(tiny_archive, tmp_path):
    use_cpu_operators(True)  # built before the ranks start, which then only load it
    run_dir, log_dir = str(tmp_path / "run"), str(tmp_path / "log")
    result = launch(log_dir, "--data-file", tiny_archive, "--output-dir", run_dir, *RUN, "--cpu-numerics", "onednn")
    logs = [(tmp_path / "log" / f"workerlog.{rank}").read_text() for rank in range(2)]
    assert result.returncode == 0, result.stdout[-3000:] + "\n".join(logs)
    path = os.path.join(run_dir, "last.pdckpt")
    saved = weights_digest(restore_model(read_state(path), path))
    for rank, log in enumerate(logs):
        assert re.findall(r"rank (\d) of 2 ends with weights sha256 (\w+)", log) == [(str(rank), saved)]
    assert read_json(os.path.join(run_dir, "environment.json"))["entries"][0]["settings"]["cpu_numerics"] == "onednn"
