"""Evaluation (DNSD/engine/evaluation.py): error, accuracy and per-class accuracy against a count by hand."""
import numpy as np
import paddle
import pytest

from DNSD.datasets.pipeline import Dataset, Normalizer
from DNSD.engine.evaluation import evaluate


class Fixed(paddle.nn.Layer):
    """A 'model' that predicts the class written in each image's first pixel."""

    def forward(self, images):
        return paddle.nn.functional.one_hot(images[:, 0, 0, 0].astype("int64"), 3)


def test_error_and_per_class_accuracy_are_counted_over_every_image_in_batches():
    predictions = np.array([0, 1, 2, 2, 1, 0, 0])
    labels = np.array([0, 1, 2, 1, 1, 2, 0])
    images = np.zeros((7, 3, 32, 32), np.uint8)
    images[:, 0, 0, 0] = predictions
    result = evaluate(Fixed(), Dataset(images, labels), Normalizer(np.zeros((3, 32, 32)), 1.0), batch_size=3,
                      classes=("a", "b", "c"))
    # By hand: class a 2 of 2 right, b 2 of 3, c 1 of 2; 5 of 7 in all.
    assert result["images"] == 7
    assert result["accuracy"] == pytest.approx(100 * 5 / 7) and result["error"] == pytest.approx(100 * 2 / 7)
    assert result["per_class_accuracy"] == pytest.approx({"a": 100.0, "b": 100 * 2 / 3, "c": 50.0})


def test_a_class_without_images_has_no_accuracy():
    images = np.zeros((2, 3, 32, 32), np.uint8)
    result = evaluate(Fixed(), Dataset(images, np.array([0, 0])), Normalizer(np.zeros((3, 32, 32)), 1.0), 8,
                      ("a", "b", "c"))
    assert result["per_class_accuracy"] == {"a": 100.0, "b": None, "c": None}
