"""The typed config: the paper's defaults, precedence, the YAML files and every validation error."""
import os

import pytest
import yaml

from DNSD.config import build_config, config_from_dict, stated_values
from DNSD.errors import InputError
from DNSD.main import mode_parser
from DNSD.runs.folder import default_run_dir
from DNSD.schema import Config, config_fields, flag_name
from helpers import ROOT

CONFIGS = os.path.join(ROOT, "configs")


def resolved(argv, config_file=None):
    args = mode_parser("train")[0].parse_args(argv)
    return build_config(stated_values(config_file or args.config, args, args.override))


def test_defaults_are_the_papers_recipe():
    config = Config()
    assert (config.model.depth, config.model.survival_last, config.model.survival_mode) == (110, 0.5, "linear")
    assert config.model.residual_scaling == "test"
    assert (config.train.epochs, config.train.batch_size, config.train.lr) == (500, 128, 0.1)
    assert config.train.lr_decay_at == [0.5, 0.75] and config.train.lr_decay_factor == 0.1
    assert (config.train.momentum, config.train.nesterov, config.train.weight_decay) == (0.9, True, 1e-4)
    assert (config.data.val_size, config.data.normalization, config.data.augment) == (5000, "pixel", True)


def test_shipped_configs_load_and_say_what_they_claim():
    paper = resolved(["--config", os.path.join(CONFIGS, "resnet110_sd.yaml")])
    assert paper == Config()
    baseline = resolved(["--config", os.path.join(CONFIGS, "resnet110_baseline.yaml")])
    assert baseline.model.survival_last == 1.0 and baseline.model.depth == 110
    cifar100 = resolved(["--config", os.path.join(CONFIGS, "resnet110_sd_cifar100.yaml")])
    assert cifar100.data.dataset == "cifar100" and cifar100.model == paper.model and cifar100.train == paper.train
    folders = {default_run_dir(os.path.join(CONFIGS, f"{name}.yaml"), {}, config)
               for name, config in (("resnet110_sd", paper), ("resnet110_baseline", baseline),
                                    ("resnet110_sd_cifar100", cifar100))}
    assert folders == {"runs/resnet110_sd-ResNet-110", "runs/resnet110_baseline-ResNet-110",
                       "runs/resnet110_sd_cifar100-ResNet-110"}
    quick = resolved(["--config", os.path.join(CONFIGS, "quick.yaml")])
    assert quick.model.depth < 110 and quick.train.epochs < 50


def test_every_field_has_its_own_flag_and_help():
    names = [f.name for _, f, _ in config_fields()]
    assert len(names) == len(set(names))
    help_text = mode_parser("train")[0].format_help()
    for _, f, _ in config_fields():
        assert flag_name(f) in help_text
        assert f.metadata["help"]


def test_precedence_defaults_then_file_then_flags_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"epochs": 7, "lr": 0.2, "batch_size": 64}, "run": {"seed": 3}}))
    config = resolved(["--config", str(path), "--epochs", "9", "--lr", "0.3", "-o", "train.lr=0.4"])
    assert config.train.batch_size == 64  # file over default
    assert config.train.epochs == 9  # flag over file
    assert config.train.lr == 0.4  # -o over flag
    assert config.run.seed == 3
    assert config.train.momentum == 0.9  # default where nobody spoke


def test_list_bool_and_optional_values_from_the_command_line():
    config = resolved(["--lr-decay-at", "0.3,0.6,0.9", "--no-nesterov", "--data-file", "x.tar.gz",
                       "-o", "data.augment=false", "-o", "model.survival_mode=uniform"])
    assert config.train.lr_decay_at == [0.3, 0.6, 0.9]
    assert config.train.nesterov is False and config.data.augment is False
    assert config.data.data_file == "x.tar.gz" and config.model.survival_mode == "uniform"
    assert resolved(["-o", "train.lr_decay_at=[0.2, 0.4]"]).train.lr_decay_at == [0.2, 0.4]


@pytest.mark.parametrize("argv, key, allowed", [
    (["--depth", "21"], "model.depth", "6n+2"),
    (["--depth", "2"], "model.depth", "6n+2"),
    (["--arch", "diracnet"], "model.depth", "6n+4"),
    (["--arch", "vanillanet", "--depth", "2"], "model.depth", "3 to 64"),
    (["--arch", "densenet"], "model.arch", "resnet, diracnet, vanillanet"),
    (["--width", "2"], "model.width", "applies to --arch diracnet, vanillanet only"),
    (["--arch", "diracnet", "--depth", "34", "--drop-mode", "sample"], "model.drop_mode", "--arch resnet only"),
    (["--survival-last", "0"], "model.survival_last", "(0, 1]"),
    (["--survival-last", "1.5"], "model.survival_last", "(0, 1]"),
    (["--survival-mode", "exponential"], "model.survival_mode", "linear, uniform"),
    (["--batch-size", "0"], "train.batch_size", "from 1 to 65,536"),
    (["--epochs", "-1"], "train.epochs", "from 1 to 100,000"),
    (["--lr-decay-at", "0.75,0.5"], "train.lr_decay_at", "increasing"),
    (["--lr-decay-at", "0.5,1.5"], "train.lr_decay_at", "increasing"),
    (["--lr", "0"], "train.lr", "> 0"),
    (["--val-size", "0"], "data.val_size", ">= 1"),
    (["--epochs", "ten"], "train.epochs", "an integer"),
    (["--epochs", "2.5"], "train.epochs", "an integer"),
    (["--lr", "fast"], "train.lr", "a finite number"),
    (["--lr", "inf"], "train.lr", "a finite number"),
    (["-o", "train.weight_decay=nan"], "train.weight_decay", "a finite number"),
    (["-o", "train.epochz=3"], "train.epochz", "train.epochs"),
    (["-o", "training.epochs=3"], "training.epochs", "train.epochs"),
    (["-o", "train.epochs"], "train.epochs", "section.key=value"),
])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(argv, key, allowed):
    with pytest.raises(InputError) as error:
        resolved(argv)
    message = str(error.value)
    assert key in message and allowed in message and "\n" not in message


@pytest.mark.parametrize("content, expected", [
    ({"train": {"epoch": 3}}, "did you mean train.epochs"),
    ({"trainer": {"epochs": 3}}, "unknown config key trainer"),
    ({"train": {"epochs": "many"}}, "train.epochs: got 'many', expected an integer"),
    ({"model": {"depth": 21}}, "model.depth"),
    ({"train": 5}, "must be a mapping"),
    ([1, 2], "must be a mapping"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(InputError) as error:
        resolved(["--config", str(path)])
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_exponent_notation_reads_as_a_number_in_files_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  weight_decay: 5e-4\n")
    assert resolved(["--config", str(path), "--lr", "2e-1"]).train.weight_decay == 5e-4
    assert resolved(["--lr", "2e-1"]).train.lr == 0.2


def test_file_that_is_not_yaml_or_missing(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: {epochs: [1,\n  model: :")
    with pytest.raises(InputError, match="not valid YAML"):
        resolved(["--config", str(path)])
    with pytest.raises(InputError, match="cannot read config file"):
        resolved(["--config", str(tmp_path / "missing.yaml")])


def test_config_round_trips_through_its_dict():
    config = resolved(["--depth", "20", "--lr-decay-at", "0.4,0.8", "--seed", "9"])
    assert config_from_dict(config.to_dict()) == config
    assert config_from_dict(yaml.safe_load(config.to_yaml())) == config


def test_the_keys_that_counted_steps_across_the_run_are_read_under_their_new_names(tmp_path):
    """Before 1.5.0 "step" meant a step within an epoch in checkpoints and a step across the run in two keys."""
    from DNSD.config import load_yaml

    old = tmp_path / "old.yaml"
    old.write_text("run:\n  checkpoint_every_steps: 7\n  eval_every_steps: 200\n")
    config = config_from_dict(load_yaml(str(old)))
    assert (config.run.checkpoint_every_iterations, config.run.eval_every_iterations) == (7, 200)
    assert "every_steps" not in config.to_yaml()
