"""The model card of a run or a seeds folder, and loading a checkpoint through paddle.hub from the repository."""
import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest

import DNSD
from DNSD.api import load_config
from DNSD.errors import InputError
from DNSD.reporting.card import published
from helpers import ROOT, TINY_RUN, assert_one_line_error, dnsd, read_csv, read_json, read_yaml


@pytest.mark.slow
def test_the_card_of_a_seeds_folder_shows_the_summarys_mean_and_std_and_each_checkpoints_sha256(seeds_folder):
    result = dnsd("card", seeds_folder)
    assert result.returncode == 0, result.stderr
    card = Path(seeds_folder, "MODEL_CARD.md").read_text()
    # Seeds are a sweep without a grid: the card is of the one configuration they repeat, no grid named.
    assert card.startswith("# ResNet-8 on CIFAR-10, trained with DNSD\n") and "Swept" not in card
    assert dnsd("summary", "--runs", seeds_folder).returncode == 0
    [row] = read_csv(os.path.join(seeds_folder, "summary.csv"))
    assert f"| {float(row['test_error_mean']):.2f} ± {float(row['test_error_std']):.2f} |" in card
    assert "| 2 of 2 |" in card
    for seed in range(2):
        path = os.path.join(seeds_folder, f"seed-{seed}", "best.pdckpt")
        assert f"| `seed-{seed}/best.pdckpt` | {os.path.getsize(path):,} | " \
               f"`{hashlib.sha256(Path(path).read_bytes()).hexdigest()}` |" in card
    figure = re.search(r"!\[[^]]*\]\(([^)]+)\)", card).group(1)
    assert Path(seeds_folder, figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dnsd audit seed-0 --all" in card
    assert "Until then the results above are the run's own account" in card  # not verified by being written


def test_a_card_needs_a_finished_run(tmp_path, tiny_archive):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    Path(run_dir, "config.yaml").write_text(load_config().to_yaml())
    assert_one_line_error(dnsd("card", run_dir), "holds no finished run")
    assert_one_line_error(dnsd("card", str(tmp_path / "none")), "holds no run")


def test_the_papers_number_is_given_only_for_its_own_models_and_recipe():
    assert published(load_config("resnet110_sd")) == (5.25, "the paper's Table 1")
    assert published(load_config("resnet110_baseline"))[0] == 6.41
    assert published(load_config("resnet152_sd_svhn"))[0] == 1.75
    error, why = published(load_config("resnet110_sd", {"train.epochs": 10}))
    assert error == 5.25 and "not comparable" in why
    assert published(load_config("resnet110_sd", {"model.survival_mode": "uniform"}))[0] is None


@pytest.fixture(scope="module")
def resnet20_checkpoint(tiny_archive, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("hub") / "run")
    result = dnsd("train", "--config", "resnet20", "--data-file", tiny_archive, "--output-dir", run_dir, "--epochs",
                  "1", "--batch-size", "64", "--val-size", "40")
    assert result.returncode == 0, result.stderr
    return os.path.join(run_dir, "best.pdckpt")


@pytest.mark.slow
def test_paddle_hub_loads_a_checkpoint_from_the_repository_with_load_checkpoints_probabilities(resnet20_checkpoint):
    network = paddle.hub.load(ROOT, "resnet20", source="local", checkpoint=resnet20_checkpoint)
    assert not network.training
    images = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    with paddle.no_grad():
        inputs = paddle.to_tensor(network.normalize(images.transpose(0, 3, 1, 2)))
        probabilities = paddle.nn.functional.softmax(network(inputs), axis=1).numpy()
    np.testing.assert_allclose(probabilities, DNSD.load_checkpoint(resnet20_checkpoint).predict(images), atol=1e-6)
    assert list(network.classes) == list(DNSD.load_checkpoint(resnet20_checkpoint).classes)


@pytest.mark.slow
def test_every_shipped_config_but_a_sweep_is_a_hub_entry_and_another_models_checkpoint_is_refused(
        resnet20_checkpoint):
    shipped = sorted(name[:-5] for name in os.listdir(os.path.join(ROOT, "configs"))
                     if "sweep" not in read_yaml(os.path.join(ROOT, "configs", name)))
    assert sorted(paddle.hub.list(ROOT, source="local")) == sorted([*shipped, "from_checkpoint"])
    fresh = paddle.hub.load(ROOT, "resnet32", source="local")
    assert sum(1 for name, _ in fresh.named_parameters() if name.endswith("residual.0.weight")) == (32 - 2) // 2
    with pytest.raises(InputError, match="not the model of resnet110_sd; load it with the entry") as refused:
        paddle.hub.load(ROOT, "resnet110_sd", source="local", checkpoint=resnet20_checkpoint)
    entry = re.search(r"the entry '(\w+)'", str(refused.value)).group(1)
    assert load_config(entry).model.depth == 20


@pytest.mark.slow
def test_the_card_of_a_sweep_names_what_is_swept_and_has_a_row_per_point(tiny_archive, tmp_path):
    folder = str(tmp_path / "sweep")
    assert dnsd("train", "--data-file", tiny_archive, "--output-dir", folder, *TINY_RUN, "--epochs", "1",
                "--sweep", "survival_last=0.5,1").returncode == 0
    assert dnsd("card", folder).returncode == 0
    card = Path(folder, "MODEL_CARD.md").read_text()
    assert card.startswith("# A sweep of model.survival_last on CIFAR-10")
    assert "Swept: model.survival_last over 0.5, 1.0; each point with seeds 0." in card
    assert "| survival_last=0.5 | 1 of 1 |" in card and "| survival_last=1.0 | 1 of 1 |" in card


def test_the_card_of_one_run_says_what_it_saw_and_how_far_it_carries(trained_run, tiny_archive, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    result = dnsd("card", str(run_dir))
    assert result.returncode == 0, result.stderr
    card = Path(run_dir / "MODEL_CARD.md").read_text()
    summary = read_json(run_dir / "summary.json")
    assert "±" not in card and "| configuration |" not in card
    assert f"One run: test error {summary['test_error']:.2f} %" in card
    # The tiny archive: 200 training images, 40 of them held out for validation, 40 test images.
    assert "160 training, 40 validation and 40 test images, a subset of CIFAR-10's 50,000 and 10,000." in card
    command = read_json(run_dir / "environment.json")["entries"][0]["command"]
    assert f"Command: `{' '.join(command)}`" in card and "hours of training" in card
    limitations = card[card.index("## Limitations"):card.index("## Environment")]
    for what in ("a subset of the data set", "2 epochs, where the paper trains 500", "trained on a CPU",
                 "a single seed"):
        assert what in limitations, what
    assert "Apache-2.0" in card and "@inproceedings{huang2016deep," in card
    assert 'paddle.hub.load("PATH/TO/DNSD", "from_checkpoint"' in card  # ResNet-8: no shipped config has it
