"""`--mode predict` and `TrainedModel.predict`: image files to top-k classes, from a checkpoint or an exported model,
and images that cannot be used reported by name while the others are predicted."""
import csv
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import DNSD
from DNSD.datasets.cifar import read_archive
from helpers import ROOT, assert_one_line_error, dnsd


def write_png(path, pixels_chw):
    Image.fromarray(np.ascontiguousarray(pixels_chw.transpose(1, 2, 0))).save(path)
    return path


def read_csv(text):
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture(scope="module")
def mini_checkpoint(tmp_path_factory):
    """A ResNet-8 trained for one epoch on the real CIFAR-10 subset, and 12 of its test images as PNG files."""
    from helpers import real_archive

    archive = real_archive()
    root = tmp_path_factory.mktemp("mini")
    result = dnsd("--data-file", archive, "--depth", "8", "--epochs", "1", "--val-size", "500", "--train-images",
                  "4500", "--output-dir", str(root / "run"))
    assert result.returncode == 0, result.stderr
    _, test, _ = read_archive(archive)
    folder = root / "images"
    folder.mkdir()
    paths = [write_png(str(folder / f"{index:02d}.png"), test.images[index]) for index in range(12)]
    return str(root / "run" / "best.pdckpt"), paths, test.images[:12]


@pytest.mark.slow
def test_predict_gives_the_top_1_class_of_the_eval_path_on_real_images(mini_checkpoint):
    checkpoint, paths, images = mini_checkpoint
    result = dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", os.path.dirname(paths[0]))
    assert result.returncode == 0, result.stderr
    header, *rows = read_csv(result.stdout)
    trained = DNSD.load_checkpoint(checkpoint)
    import paddle

    # The logits of the evaluation path: the checkpoint's model in eval mode on the normalised test images.
    logits = trained.model(paddle.to_tensor(trained.normalize(images))).numpy()
    assert [row[0] for row in rows] == paths
    assert [row[1] for row in rows] == [trained.classes[index] for index in logits.argmax(axis=1)]


def test_the_csv_has_k_classes_per_image_in_input_order(trained_run, tiny_archive, tmp_path):
    _, test, _ = read_archive(tiny_archive)
    paths = [write_png(str(tmp_path / name), test.images[index]) for index, name in enumerate(["b.png", "a.png",
                                                                                               "c.png"])]
    output = tmp_path / "predictions.csv"
    result = dnsd("--mode", "predict", "--checkpoint", os.path.join(trained_run[0], "best.pdckpt"), "--images",
                  *paths, "--top-k", "3", "--output", str(output))
    assert result.returncode == 0, result.stderr
    header, *rows = read_csv(output.read_text())
    assert header == ["path", "class_1", "probability_1", "class_2", "probability_2", "class_3", "probability_3"]
    assert [row[0] for row in rows] == paths  # as given, not sorted
    for row in rows:
        probabilities = [float(value) for value in row[2::2]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-5
        assert len(set(row[1::2])) == 3


@pytest.mark.slow
def test_the_exported_model_gives_the_checkpoints_probabilities(trained_run, tiny_archive, tmp_path):
    _, test, _ = read_archive(tiny_archive)
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(8):
        write_png(str(folder / f"{index}.png"), test.images[index])
    checkpoint, prefix = os.path.join(trained_run[0], "best.pdckpt"), str(tmp_path / "exported" / "model")
    assert dnsd("--mode", "export", "--checkpoint", checkpoint, "--export-prefix", prefix).returncode == 0
    by_checkpoint = dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", str(folder), "--top-k", "10")
    by_export = dnsd("--mode", "predict", "--model", prefix, "--images", str(folder), "--top-k", "10")
    assert by_checkpoint.returncode == by_export.returncode == 0, by_export.stderr

    def table(result):
        rows = read_csv(result.stdout)[1:]
        return {row[0]: {name: float(p) for name, p in zip(row[1::2], row[2::2])} for row in rows}

    expected, exported = table(by_checkpoint), table(by_export)
    assert list(expected) == list(exported) and len(expected) == 8
    for path in expected:
        assert exported[path] == pytest.approx(expected[path], abs=1e-5)


def test_a_folder_with_a_non_image_and_a_large_image(trained_run, tiny_archive, tmp_path):
    _, test, _ = read_archive(tiny_archive)
    folder = tmp_path / "images"
    folder.mkdir()
    write_png(str(folder / "a.png"), test.images[0])
    Image.fromarray(np.ascontiguousarray(test.images[1].transpose(1, 2, 0))).resize((64, 64)).save(folder / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    refused = dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", str(folder))
    assert refused.returncode == 3
    assert re.search(r"cannot predict .*b\.jpg: it is 64x64 RGB, not 32x32 RGB; pass --resize", refused.stderr)
    assert "skipped 1 file(s) that are not PNG or JPEG" in refused.stderr and "notes.txt" in refused.stderr
    assert [row[0] for row in read_csv(refused.stdout)[1:]] == [str(folder / "a.png")]
    accepted = dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", str(folder), "--resize")
    assert accepted.returncode == 0, accepted.stderr
    assert [row[0] for row in read_csv(accepted.stdout)[1:]] == [str(folder / "a.png"), str(folder / "b.jpg")]
    assert accepted.stderr.count("resized 1 image(s) to 32x32") == 1


def test_a_damaged_image_is_named_and_the_others_predicted_or_strict_stops(trained_run, tiny_archive, tmp_path):
    _, test, _ = read_archive(tiny_archive)
    good = write_png(str(tmp_path / "good.png"), test.images[0])
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(Path(good).read_bytes()[:60])
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    result = dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", str(damaged), good)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith(f"DNSD: cannot predict {damaged}: it cannot be read as an image") for line in lines)
    assert lines[-1].startswith("DNSD: error: 1 of 2 images could not be predicted")
    assert "Traceback" not in result.stderr
    assert [row[0] for row in read_csv(result.stdout)[1:]] == [good]
    output = tmp_path / "out.csv"
    strict = dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", str(damaged), good, "--strict",
                  "--output", str(output))
    assert_one_line_error(strict, f"cannot predict {damaged}", "--strict")
    assert not output.exists()


def test_predict_refuses_what_it_cannot_do(trained_run, tmp_path):
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    image = write_png(str(tmp_path / "a.png"), np.zeros((3, 32, 32), np.uint8))
    assert_one_line_error(dnsd("--mode", "predict", "--images", image), "--checkpoint", "--model")
    assert_one_line_error(dnsd("--mode", "predict", "--checkpoint", checkpoint), "required: --images")
    assert_one_line_error(dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", str(tmp_path / "no.png")),
                          "no such file or folder")
    assert_one_line_error(dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", image, "--top-k", "11"),
                          "--top-k 11", "10 classes")
    assert_one_line_error(dnsd("--mode", "predict", "--model", str(tmp_path / "nothing"), "--images", image),
                          "no exported DNSD model")
    assert_one_line_error(dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", image, "-o",
                               "model.depth=20"), "model.depth", "dnsd predict")
    prefix = str(tmp_path / "exported" / "model")
    assert dnsd("--mode", "export", "--checkpoint", checkpoint, "--export-prefix", prefix).returncode == 0
    assert_one_line_error(dnsd("--mode", "predict", "--model", prefix, "--images", image, "-o", "model.depth=20"),
                          "model.depth", "exported model is fixed")
    assert_one_line_error(dnsd("--mode", "eval", "--checkpoint", checkpoint, "--images", image),
                          "--images is a flag of dnsd predict")


def test_the_api_predicts_what_the_command_line_does(trained_run, tiny_archive, tmp_path):
    _, test, _ = read_archive(tiny_archive)
    paths = [write_png(str(tmp_path / f"{index}.png"), test.images[index]) for index in range(5)]
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    trained = DNSD.load_checkpoint(checkpoint)
    probabilities = trained.predict(test.images[:5].transpose(0, 2, 3, 1))
    assert probabilities.shape == (5, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    result = dnsd("--mode", "predict", "--checkpoint", checkpoint, "--images", *paths, "--top-k", "1")
    rows = read_csv(result.stdout)[1:]
    assert [row[1] for row in rows] == [trained.classes[index] for index in probabilities.argmax(axis=1)]
    assert [float(row[2]) for row in rows] == pytest.approx(probabilities.max(axis=1).tolist(), abs=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        trained.predict(test.images[:5])  # channels first: refused, not silently wrong


def test_the_documented_example_runs(trained_run, tiny_archive, tmp_path, monkeypatch):
    text = Path(ROOT, "docs", "using-a-model.md").read_text()
    section = text[text.index("## From Python"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    _, test, _ = read_archive(tiny_archive)
    (tmp_path / "photos").mkdir()
    for index in range(3):
        write_png(str(tmp_path / "photos" / f"{index}.png"), test.images[index])
    (tmp_path / "runs" / "quick-ResNet-20").mkdir(parents=True)
    shutil.copy(os.path.join(trained_run[0], "best.pdckpt"), tmp_path / "runs" / "quick-ResNet-20" / "best.pdckpt")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(example, "using-a-model.md", "exec"), namespace)
    assert namespace["probabilities"].shape == (3, 10)
    assert namespace["best"] == [namespace["trained"].classes[index]
                                 for index in namespace["probabilities"].argmax(axis=1)]
