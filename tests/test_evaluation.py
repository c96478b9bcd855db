"""Evaluation (DNSD/training/evaluation.py): error, accuracy and per-class accuracy against a count by hand."""
import numpy as np
import paddle
import pytest

from DNSD.datasets.pipeline import Dataset, Normalizer
from DNSD.training.evaluation import evaluate


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


class Scores(paddle.nn.Layer):
    """A 'model' whose scores for the 7 classes are the first 7 pixels of each image's first row."""

    def forward(self, images):
        return images[:, 0, 0, :7]


def test_top5_error_and_the_confusion_matrix_by_hand():
    scores = np.array([[9, 8, 7, 6, 5, 4, 3],    # label 0: first, in the top 5
                       [9, 8, 7, 6, 5, 4, 3],    # label 4: fifth, in the top 5
                       [9, 8, 7, 6, 5, 4, 3],    # label 5: sixth, out of the top 5
                       [1, 2, 3, 4, 5, 6, 7],    # label 6: first
                       [1, 2, 3, 4, 5, 6, 7],    # label 0: seventh, out
                       [3, 9, 1, 2, 4, 5, 6]])   # label 1: first
    labels = np.array([0, 4, 5, 6, 0, 1])
    images = np.zeros((6, 3, 32, 32), np.uint8)
    images[:, 0, 0, :7] = scores
    classes = tuple("abcdefg")
    result = evaluate(Scores(), Dataset(images, labels), Normalizer(np.zeros((3, 32, 32)), 1.0), 4, classes)
    assert result["top5_error"] == pytest.approx(100 * 2 / 6) and result["error"] == pytest.approx(100 * 3 / 6)
    expected = np.zeros((7, 7), int)
    for label, predicted in zip(labels, [0, 0, 0, 6, 6, 1]):
        expected[label, predicted] += 1
    assert result["confusion_matrix"] == expected.tolist()
    # The rows sum to each class's images and the diagonal gives the per-class accuracy reported.
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == result["images"]
    for index, name in enumerate(classes):
        total = matrix[index].sum()
        assert result["per_class_accuracy"][name] == (pytest.approx(100 * matrix[index, index] / total) if total
                                                      else None)


def test_with_fewer_than_5_classes_every_class_is_in_the_top_5():
    images = np.zeros((3, 3, 32, 32), np.uint8)
    images[:, 0, 0, 0] = [0, 1, 2]
    result = evaluate(Fixed(), Dataset(images, np.array([1, 1, 2])), Normalizer(np.zeros((3, 32, 32)), 1.0), 8,
                      ("a", "b", "c"))
    assert result["top5_error"] == 0.0 and result["error"] == pytest.approx(100 / 3)
