"""The exported inference model, loaded by Paddle alone, gives the evaluation path's probabilities."""
import os

import numpy as np
import paddle

from DNSD.datasets.cifar import read_archive
from DNSD.datasets.pipeline import Normalizer
from DNSD.runs.checkpoint import read_state, restore_model
from helpers import assert_one_line_error, dnsd, read_json


def test_exported_model_gives_the_probabilities_of_the_eval_path(trained_run, tiny_archive, tmp_path):
    checkpoint = os.path.join(trained_run[0], "best.pdckpt")
    prefix = str(tmp_path / "inference" / "model")
    result = dnsd("--mode", "export", "--checkpoint", checkpoint, "--export-prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert prefix in result.stdout
    _, test, _ = read_archive(tiny_archive)
    state = read_state(checkpoint)
    model = restore_model(state, checkpoint)
    model.eval()
    logits = model(paddle.to_tensor(Normalizer.from_state(state["normalizer"])(test.images)))
    expected = paddle.nn.functional.softmax(logits, axis=1).numpy()
    exported = paddle.jit.load(prefix)
    exported.eval()
    probabilities = exported(paddle.to_tensor(test.images.transpose(0, 2, 3, 1))).numpy()  # uint8, as image files
    assert probabilities.shape == (40, 10)
    assert np.abs(probabilities - expected).max() <= 1e-4
    assert read_json(f"{prefix}-info.json")["classes"][0] == "airplane"


def test_export_without_checkpoint_is_refused():
    assert_one_line_error(dnsd("--mode", "export"), "the following arguments are required: --checkpoint")
