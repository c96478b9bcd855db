"""How anyone can change a run folder with DNSD's public format (read_checkpoint, save_checkpoint, the manifest's seal
and the chain's position_link) so that its files agree with each other again: the forger of the audit's tests
(tests/test_audit*.py) and of its calibration (scripts/audit_power.py). None of it is a way around the audit: each
change still differs from what re-training its epoch computes."""
import json
import os

import yaml

from DNSD.config import config_from_dict
from DNSD.runs.chain import GENESIS, position_link
from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint
from DNSD.runs.manifest import seal
from DNSD.training.optimizer import rate_at


def path(run_dir, name):
    return os.path.join(run_dir, name)


def records(run_dir):
    with open(path(run_dir, "metrics.jsonl")) as stream:
        return [json.loads(line) for line in stream]


def write_records(run_dir, lines):
    with open(path(run_dir, "metrics.jsonl"), "w") as stream:
        stream.writelines(json.dumps(line) + "\n" for line in lines)


def checkpoints(run_dir):
    return sorted(name for name in os.listdir(run_dir) if name.endswith(".pdckpt"))


def change(run_dir, name, edit):
    """Apply edit to a checkpoint's state and seal the file again; returns the state."""
    state = read_checkpoint(path(run_dir, name))
    edit(state)
    save_checkpoint(path(run_dir, name), state)
    return state


def reseal_histories(run_dir, lines):
    """metrics.jsonl and every checkpoint's sealed history made these records."""
    write_records(run_dir, lines)
    for name in checkpoints(run_dir):
        change(run_dir, name, lambda state: state.update(history=lines[:len(state["history"])]))


def rechain(run_dir):
    """Seal every epoch's state into the records again, from the first epoch on (every epoch's checkpoint kept): the
    checkpoints then agree with the records whatever they hold."""
    lines, previous = records(run_dir), GENESIS
    for line in lines:
        kept = f"epoch-{line['epoch']}.pdckpt"
        state = change(run_dir, kept, lambda state, chain=previous: state.update(chain=chain))
        line["state_sha256"] = previous = position_link(state)
    for name in checkpoints(run_dir):
        def edit(state):
            done = state["epochs_done"]
            state.update(history=lines[:len(state["history"])],
                         chain=lines[done - 2 + bool(state.get("step"))]["state_sha256"]
                         if done - 1 + bool(state.get("step")) > 0 else GENESIS)
        change(run_dir, name, edit)
    write_records(run_dir, lines)


def claim(run_dir, key, value, reschedule=True):
    """Make the run say key was value: config.yaml and every checkpoint's config (reschedule: the learning rate where
    the claimed schedule puts it), the chain sealed again."""
    section, name = key.split(".")
    with open(path(run_dir, "config.yaml")) as stream:
        raw = yaml.safe_load(stream)
    raw.setdefault(section, {})[name] = value
    with open(path(run_dir, "config.yaml"), "w") as stream:
        stream.write(config_from_dict(raw).to_yaml())

    def edit(state):
        state["config"][section][name] = value
        if reschedule:
            state["scheduler"]["last_lr"] = rate_at(config_from_dict(state["config"]).train, state["epochs_done"])
    for checkpoint in checkpoints(run_dir):
        change(run_dir, checkpoint, edit)
    rechain(run_dir)


def claim_data(run_dir, identity):
    """Make the run say it trained on the archive of this identity ({"file", "bytes", "sha256"}): every checkpoint
    and manifest entry, the records and the chain sealed again."""
    for checkpoint in checkpoints(run_dir):
        change(run_dir, checkpoint, lambda state: state.update(data=dict(identity)))
    with open(path(run_dir, "environment.json")) as stream:
        manifest = json.load(stream)
    renamed = {}
    for entry in manifest["entries"]:
        old = entry["sha256"]
        entry["data"] = dict(identity)
        entry["sha256"] = renamed[old] = seal(entry)
    with open(path(run_dir, "environment.json"), "w") as stream:
        json.dump(manifest, stream)
    reseal_histories(run_dir, [{**line, "environment_sha256": renamed.get(line.get("environment_sha256"))}
                               for line in records(run_dir)])
    rechain(run_dir)


def claim_gpu(run_dir):
    """Append a sealed manifest entry that claims an H100 and name it in every record."""
    with open(path(run_dir, "environment.json")) as stream:
        manifest = json.load(stream)
    entry = json.loads(json.dumps(manifest["entries"][-1]))
    entry["device"].update(kind="gpu", gpus=[{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}],
                           driver="560.35.03")
    entry["sha256"] = seal(entry)
    manifest["entries"].append(entry)
    with open(path(run_dir, "environment.json"), "w") as stream:
        json.dump(manifest, stream)
    reseal_histories(run_dir, [{**line, "environment_sha256": entry["sha256"]} for line in records(run_dir)])


def forge_state(run_dir, epoch, edit):
    """Apply edit to the state of every checkpoint of an epoch's end, and seal its digests again everywhere."""
    from DNSD.training.ranks import weights_digest

    lines, forged = records(run_dir), None
    for name in checkpoints(run_dir):
        state = read_checkpoint(path(run_dir, name))
        if state["epochs_done"] == epoch and not state.get("step"):
            edit(state)
            save_checkpoint(path(run_dir, name), state)
            forged = state
    lines[epoch - 1]["weights_sha256"] = weights_digest(forged["model"])
    reseal_histories(run_dir, lines)
    rechain(run_dir)
