"""Which config key may change when, as the schema declares beside each key (schema.FIXED, TRAINING, SETTING, DEVICE):
on a resume or an evaluation, on a branch, within a sweep, for an exported model; and so which runs are repeats of
one configuration."""
from DNSD.config import build_config, flat_config
from DNSD.errors import InputError
from DNSD.schema import DEVICE, SETTING, TRAINING, fields_by_key

CHECKPOINT = "the checkpoint"


def declared(key, name):
    return fields_by_key()[key][0].metadata[name]


def setting(key):
    """Whether a key leaves what a run computes as it is (where it lives and computes, how it saves and reports)."""
    return declared(key, "changes") in (SETTING, DEVICE)


def device_keys(key, f):
    """The keys of where a model computes: what predict, export and info take."""
    return f.metadata["changes"] == DEVICE


def data_and_device_keys(key, f):
    """The keys an evaluation of a checkpoint takes: the data file and where it computes."""
    return key == "data.data_file" or device_keys(key, f)


def may_branch(key):
    """A branch continues the same model on the same data: it may change how training goes on, and the settings."""
    return declared(key, "changes") == TRAINING or setting(key)


def for_checkpoint(config, stated, purpose, within=CHECKPOINT):
    """A checkpoint's config (or a sweep's, within names it) with the stated values applied; a stated value that
    would change what was trained is refused, naming the key."""
    current = flat_config(config)
    for key, value in stated.items():
        if value != current[key] and not setting(key):
            branch = " or continue in a new folder with --branch NEW_DIR" if purpose == "--resume" and \
                within == CHECKPOINT and may_branch(key) else ""
            raise InputError(f"{key} is {current[key]!r} in {within}; {purpose} cannot change it to {value!r} "
                             f"(leave it out{branch})")
    return build_config({**current, **stated})


def for_branch(config, stated):
    """A checkpoint's config with the stated changes of a branch, and those changes as {key: {"from", "to"}}; a
    change to the model or the data is refused, naming the key."""
    current = flat_config(config)
    changes = {}
    for key, value in stated.items():
        if value != current[key] and key != "run.output_dir":
            if not may_branch(key):
                raise InputError(f"{key} is {current[key]!r} in the checkpoint; a branch continues the same model on "
                                 f"the same data and cannot change it to {value!r} (leave it out)")
            changes[key] = {"from": current[key], "to": value}
    return build_config({**current, **stated}), changes


def experiment(nested):
    """What a {section: {key: value}} config computes, as {"section.key": value}: all but each run's own values
    (the seed) and the settings. Runs with equal experiments are repeats of one configuration."""
    return {key: value for key, value in flat_config(nested).items()
            if not declared(key, "per_run") and not setting(key)}


def recipe(config):
    """What a config (or its {section: {key: value}} dict) computes, the seed included: {"section.key": value} of
    every key that is not a setting."""
    return {key: value for key, value in flat_config(config).items() if not setting(key)}


def sweep_refusal(key):
    """Why a key cannot vary within a sweep, or None where it can."""
    return declared(key, "sweep") or ("it does not change what a run computes" if setting(key) else None)


def passed_on(key):
    """Whether a sweep's worker passes this command's value of a key on to the runs it trains: a setting that is not
    each run's own."""
    return setting(key) and not declared(key, "per_run")
