"""The Python API of DNSD/__init__.py: a config, a model, a trained checkpoint and its evaluation in a call each."""
import os

import numpy as np
import paddle
import pytest

import DNSD
from DNSD.errors import InputError
from helpers import ROOT, read_json, read_yaml


def test_load_config_reads_a_shipped_config_by_name_and_applies_overrides():
    config = DNSD.load_config("quick", {"train.epochs": 3, "model.survival_last": 0.8})
    shipped = read_yaml(os.path.join(ROOT, "configs", "quick.yaml"))
    assert config.model.depth == shipped["model"]["depth"]
    assert config.train.epochs == 3 and config.model.survival_last == 0.8
    assert DNSD.load_config().model.depth == 110
    with pytest.raises(InputError, match="did you mean train.epochs"):
        DNSD.load_config(overrides={"train.epoch": 3})


def test_build_model_gives_the_network_of_the_config_with_its_classes():
    model = DNSD.build_model(DNSD.load_config(overrides={"model.depth": 20, "data.dataset": "cifar100"}))
    assert model.name().startswith("ResNet-20 (9 blocks")
    model.eval()
    assert model(paddle.zeros([2, 3, 32, 32])).shape == [2, 100]


def test_load_checkpoint_and_evaluate_give_what_training_reported(trained_run, tiny_archive):
    run_dir = trained_run[0]
    checkpoint = os.path.join(run_dir, "best.pdckpt")
    summary = read_json(os.path.join(run_dir, "summary.json"))
    trained = DNSD.load_checkpoint(checkpoint)
    assert trained.classes[0] == "airplane" and trained.epoch == summary["best_epoch"]
    assert not trained.model.training
    from DNSD.datasets.cifar import read_archive

    _, test, _ = read_archive(tiny_archive)
    predicted = trained.model(paddle.to_tensor(trained.normalize(test.images))).argmax(axis=1).numpy()
    assert 100 - 100 * np.mean(predicted == test.labels) == pytest.approx(summary["test_error"])
    assert DNSD.evaluate(checkpoint)["error"] == summary["test_error"]


def test_an_unknown_attribute_of_the_package_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_function'"):
        _ = DNSD.no_such_function
