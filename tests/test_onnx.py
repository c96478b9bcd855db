"""Deployment: dnsd export's ONNX and Paddle forms give the checkpoint's probabilities for every architecture, predict
and eval run through them with any engine, a converter that changes the model is refused, and an engine that
crashes on this machine is passed over in one line."""
import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from DNSD.datasets.cifar import read_archive
from DNSD.inference import export as exporting
from DNSD.inference.runtimes import ExportedModel, open_model
from helpers import ROOT, TINY_RUN, assert_one_line_error, dnsd, read_json
from test_predict import write_png

pytest.importorskip("paddle2onnx")
pytest.importorskip("onnxruntime")

ARCHITECTURES = {
    "resnet, test-time scaling": [],
    "resnet, inverted scaling, per-sample drop path": ["--drop-mode", "sample", "--residual-scaling", "train"],
    "diracnet, folded": ["--arch", "diracnet", "--depth", "10"],
    "vanillanet, merged": ["--arch", "vanillanet", "--depth", "4", "--deep-training-epochs", "1"],
}


def export(checkpoint, prefix, *extra):
    result = dnsd("export", "--checkpoint", checkpoint, "--export-prefix", prefix, *extra)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_exports_to_onnx_and_paddle_with_the_checkpoints_probabilities(name, tiny_archive,
                                                                                          tmp_path):
    run_dir = str(tmp_path / "run")
    trained = dnsd("--data-file", tiny_archive, "--output-dir", run_dir, *TINY_RUN, *ARCHITECTURES[name])
    assert trained.returncode == 0, trained.stderr
    # The last checkpoint: VanillaNet's activations are linear by then (1 deep-training epoch), so it merges.
    checkpoint, prefix = os.path.join(run_dir, "last.pdckpt"), str(tmp_path / "exported" / "model")
    export(checkpoint, prefix)
    info = read_json(prefix + "-info.json")
    assert info["folded"] == (name.split(",")[0] != "resnet")
    # ONNX Runtime's own logger at warning level finds nothing to say of the file (no unused constant, no dead node).
    code = ("import sys, onnxruntime\noptions = onnxruntime.SessionOptions()\noptions.log_severity_level = 1\n"
            "onnxruntime.InferenceSession(sys.argv[1], options, providers=['CPUExecutionProvider'])")
    opened = subprocess.run([sys.executable, "-c", code, prefix + ".onnx"], capture_output=True, text=True,
                            env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    assert opened.returncode == 0 and "Initializing session" in opened.stderr, opened.stderr  # the logger spoke
    assert not [line for line in opened.stderr.splitlines() if "[W:" in line or "[E:" in line], opened.stderr
    images = read_archive(tiny_archive)[1].images.transpose(0, 2, 3, 1)
    expected = open_model(checkpoint=checkpoint).predict(images)
    for engine in ("onnxruntime", "paddle-inference", "dygraph"):
        exported = ExportedModel(prefix, engine)
        assert exported.engine == engine and exported.classes == tuple(info["classes"])
        assert np.abs(exported.predict(images) - expected).max() <= 1e-4, engine


def write_images(folder, images):
    folder.mkdir()
    for index, pixels in enumerate(images):
        write_png(str(folder / f"{index:03d}.png"), pixels)
    return str(folder)


def top_1(result):
    return {row[0]: row[1] for row in list(csv.reader(io.StringIO(result.stdout)))[1:]}


@pytest.mark.slow
def test_predict_and_eval_through_the_onnx_file_agree_with_the_checkpoint(mini_archive, tmp_path):
    run_dir = str(tmp_path / "run")
    trained = dnsd("--data-file", mini_archive, "--output-dir", run_dir, "--depth", "20", "--epochs", "1",
                   "--train-images", "500", "--val-size", "100", "--no-test-every-epoch")
    assert trained.returncode == 0, trained.stderr
    prefix = str(tmp_path / "exported" / "model")
    export(run_dir, prefix, "--format", "onnx")
    assert sorted(os.listdir(tmp_path / "exported")) == ["model-info.json", "model.onnx"]
    folder = write_images(tmp_path / "images", read_archive(mini_archive)[1].images[:50])
    by_checkpoint = dnsd("predict", "--checkpoint", run_dir, "--images", folder)
    by_onnx = dnsd("predict", "--model", prefix + ".onnx", "--images", folder)
    assert by_checkpoint.returncode == by_onnx.returncode == 0, by_onnx.stderr
    assert top_1(by_onnx) == top_1(by_checkpoint) and len(top_1(by_onnx)) == 50
    checkpoint_eval = dnsd("eval", "--checkpoint", run_dir)
    onnx_eval = dnsd("eval", "--model", prefix + ".onnx")
    assert checkpoint_eval.returncode == onnx_eval.returncode == 0, onnx_eval.stderr
    report = read_json(prefix + "-evaluation-test.json")
    best = read_json(os.path.join(run_dir, "best.test.json"))
    assert report["engine"] == "onnxruntime"
    assert report["images"] == best["images"] == len(read_archive(mini_archive)[1])
    assert report["confusion_matrix"] == best["confusion_matrix"]
    assert onnx_eval.stdout.splitlines()[0] == checkpoint_eval.stdout.splitlines()[0]


def test_an_onnx_model_that_differs_from_the_checkpoint_is_refused_and_nothing_written(trained_run, tmp_path,
                                                                                      monkeypatch):
    import onnx
    from onnx import numpy_helper

    convert = exporting.to_onnx

    def changing_converter(prefix):  # a converter that gets one weight wrong
        convert(prefix)
        model = onnx.load(prefix + ".onnx")
        weights = [node.attribute[0].t for node in model.graph.node if node.op_type == "Constant"]
        weight = max(weights, key=lambda tensor: np.prod(tensor.dims))  # paddle2onnx keeps weights as constants
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
        onnx.save(model, prefix + ".onnx")

    monkeypatch.setattr(exporting, "to_onnx", changing_converter)
    folder = tmp_path / "exported"
    folder.mkdir()
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    result = dnsd("export", "--checkpoint", checkpoint, "--export-prefix", str(folder / "model"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "ONNX model's probabilities differ from the checkpoint's" in result.stderr
    assert os.listdir(folder) == []


@pytest.mark.slow
def test_an_engine_that_crashes_here_is_passed_over_in_one_line(trained_run, tiny_archive, tmp_path):
    prefix = str(tmp_path / "exported" / "model")
    export(trained_run[0], prefix)
    crashing = tmp_path / "crashing" / "onnxruntime"
    crashing.mkdir(parents=True)
    (crashing / "__init__.py").write_text("import os\nos.abort()\n")  # as a library that dies in its native code
    folder = write_images(tmp_path / "images", read_archive(tiny_archive)[1].images[:4])
    env = {**os.environ, "PYTHONPATH": f"{crashing.parent}:{ROOT}", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "DNSD", "predict", "--model", prefix, "--images", folder]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("DNSD: ")]
    assert len(lines) == 1 and "onnxruntime failed on this machine" in lines[0], result.stderr
    assert "running it with paddle-inference" in lines[0]
    expected = dnsd("predict", "--checkpoint", trained_run[0], "--images", folder)
    assert top_1(result) == top_1(expected)
    remembered = read_json(tmp_path / "cache" / "dnsd" / "engines.json")
    assert sum(verdict is not None for verdict in remembered.values()) >= 1  # not tried again next time
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and again.stdout == result.stdout


def test_an_engine_that_cannot_run_the_files_is_refused_in_one_line(trained_run, tiny_archive, tmp_path):
    prefix = str(tmp_path / "exported" / "model")
    export(trained_run[0], prefix, "--format", "onnx")
    folder = write_images(tmp_path / "images", read_archive(tiny_archive)[1].images[:1])
    result = dnsd("predict", "--model", prefix, "--engine", "paddle-inference", "--images", folder)
    assert_one_line_error(result, "its files run with onnxruntime")
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    result = dnsd("predict", "--checkpoint", checkpoint, "--engine", "onnxruntime", "--images", folder)
    assert_one_line_error(result, "export the checkpoint")


@pytest.mark.slow
def test_the_python_api_loads_an_onnx_model_with_the_checkpoints_predict(trained_run, tiny_archive, tmp_path):
    import DNSD

    prefix = str(tmp_path / "exported" / "model")
    export(trained_run[0], prefix)
    images = read_archive(tiny_archive)[1].images[:8].transpose(0, 2, 3, 1)
    checkpoint = DNSD.load_checkpoint(os.path.join(trained_run[0], "best.pdckpt"))
    exported = DNSD.load_model(prefix + ".onnx")
    assert exported.engine == "onnxruntime" and exported.classes == checkpoint.classes
    assert np.abs(exported.predict(images) - checkpoint.predict(images)).max() <= 1e-4
    with pytest.raises(ValueError, match="uint8 RGB images of shape"):
        exported.predict(images.transpose(0, 3, 1, 2))


def inference_benchmark(tmp_path, engine_timeout):
    """The inference section of scripts/benchmark.py on a small network: (its process, its measurements)."""
    output = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "scripts/benchmark.py", "--sections", "inference", "--depth", "8",
                             "--batch-size", "8", "--steps", "1", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                             "--engine-timeout", str(engine_timeout), "--output", str(output)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result, json.loads(output.read_text())["inference_images_per_second"]


@pytest.mark.slow
def test_the_inference_benchmark_prints_a_line_per_engine(tmp_path):
    result, measured = inference_benchmark(tmp_path, engine_timeout=120)
    assert set(measured) == {"dygraph", "paddle-inference", "paddle-inference-onednn", "onnxruntime"}
    for engine, figures in measured.items():
        line = next(line for line in result.stderr.splitlines() if line.startswith(f"inference {engine}: "))
        if "failed" in figures:  # oneDNN crashes on some CPUs: reported, never taken for a figure
            assert line == f"inference {engine}: failed ({figures['failed']})"
            continue
        ratio = figures["median"] / measured["dygraph"]["median"]
        assert line.startswith(f"inference {engine}: {figures['median']:.1f} images/s ({ratio:.2f} x dygraph)")
        assert figures["largest_difference"] <= 1e-4


@pytest.mark.slow
def test_an_engine_that_does_not_answer_in_time_is_reported_as_failed(tmp_path):
    result, measured = inference_benchmark(tmp_path, engine_timeout=0)
    assert "median" in measured["dygraph"]
    for engine in ("paddle-inference", "paddle-inference-onednn", "onnxruntime"):
        assert measured[engine] == {"failed": "no answer within 0 s"}
        assert f"inference {engine}: failed (no answer within 0 s)" in result.stderr


@pytest.mark.slow
def test_an_evaluation_leaves_no_file_jit_load_misreads_and_a_remembered_failure_is_tried_again(
        trained_run, tiny_archive, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    prefix = str(tmp_path / "exported" / "model")
    export(trained_run[0], prefix)
    evaluated = dnsd("eval", "--model", prefix, "--engine", "dygraph", "--data-file", tiny_archive)
    assert evaluated.returncode == 0, evaluated.stderr
    # Paddle's jit.load takes PREFIX*.NAME.json for a method of the model: no report may be named so.
    assert os.path.isfile(prefix + "-evaluation-test.json")
    assert not [name for name in os.listdir(tmp_path / "exported") if re.fullmatch(r"model[^.]*\.[^.]+\.json", name)]
    cache = tmp_path / "cache" / "dnsd" / "engines.json"
    remembered = read_json(cache)
    assert remembered and all(verdict is None for verdict in remembered.values())
    cache.write_text(json.dumps({key: "a failure remembered from before" for key in remembered}))
    folder = write_images(tmp_path / "images", read_archive(tiny_archive)[1].images[:4])
    predicted = dnsd("predict", "--model", prefix, "--engine", "dygraph", "--images", folder)
    assert predicted.returncode == 0, predicted.stderr
    assert top_1(predicted) == top_1(dnsd("predict", "--checkpoint", trained_run[0], "--images", folder))
