"""Which key may change when (DNSD/changes.py, reading what DNSD/schema.py declares beside each key): a resume and an
evaluation change only settings, a branch also how training goes on, a sweep varies only what a run computes."""
import pytest

from DNSD.changes import experiment, for_branch, for_checkpoint, passed_on, sweep_refusal
from DNSD.config import build_config
from DNSD.errors import InputError
from DNSD.schema import fields_by_key

TRAINED = build_config({"model.depth": 8, "train.epochs": 4})


def test_a_resume_may_change_where_a_run_computes_and_saves_but_not_what_it_computes():
    config = for_checkpoint(TRAINED, {"run.device": "cpu", "run.checkpoint_every": 2}, "--resume")
    assert (config.run.checkpoint_every, config.train.epochs) == (2, 4)
    with pytest.raises(InputError, match="train.lr is 0.1 in the checkpoint; --resume cannot .* --branch NEW_DIR"):
        for_checkpoint(TRAINED, {"train.lr": 0.01}, "--resume")
    with pytest.raises(InputError, match=r"model.depth .*\(leave it out\)$"):  # no branch changes the model
        for_checkpoint(TRAINED, {"model.depth": 14}, "--resume")
    with pytest.raises(InputError, match=r"in the sweep in runs/s; --resume .*\(leave it out\)$"):
        for_checkpoint(TRAINED, {"train.lr": 0.01}, "--resume", "the sweep in runs/s")


def test_a_branch_may_change_how_training_goes_on_but_not_the_model_or_the_data():
    config, changes = for_branch(TRAINED, {"train.lr": 0.01, "data.augment": False, "run.output_dir": "b"})
    assert config.train.lr == 0.01 and changes == {"train.lr": {"from": 0.1, "to": 0.01},
                                                   "data.augment": {"from": True, "to": False}}
    for key, value in (("model.survival_last", 0.2), ("data.val_size", 10), ("run.seed", 1)):
        with pytest.raises(InputError, match=f"{key} .* a branch continues the same model on the same data"):
            for_branch(TRAINED, {key: value})


def test_runs_that_differ_in_their_seed_or_settings_are_repeats_and_others_are_not():
    same = build_config({"model.depth": 8, "train.epochs": 4, "run.seed": 3, "run.device": "cpu",
                         "run.output_dir": "elsewhere", "data.prefetch": 0}).to_dict()
    assert experiment(same) == experiment(TRAINED.to_dict())
    assert experiment(build_config({"model.depth": 8, "train.epochs": 5}).to_dict()) != experiment(TRAINED.to_dict())


def test_a_sweep_varies_what_a_run_computes_and_its_workers_pass_on_only_shared_settings():
    assert sweep_refusal("model.survival_last") is None and sweep_refusal("train.lr") is None
    refused = [key for key in fields_by_key() if sweep_refusal(key)]
    assert {"data.dataset", "data.data_file", "run.seed", "run.output_dir", "run.device",
            "train.lr_decay_at"} <= set(refused)
    assert passed_on("run.device") and passed_on("data.data_file")
    assert not any(passed_on(key) for key in ("run.output_dir", "run.overwrite", "run.seed", "train.lr"))
