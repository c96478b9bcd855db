"""A run's chain of custody: each epoch's record seals `state_sha256`, a digest of the whole state the next epoch
starts from (weights and batch-norm statistics, optimiser accumulators, scheduler, counters and totals, best so far,
normaliser, class names, data, recipe) together with the digest before it, so that no part of a checkpoint can be
changed without breaking the chain at that epoch. Every random draw is a function of (seed, epoch, step), which the
recipe and the counters seal: no generator holds state of its own. A branch's chain starts from branch.json, which
seals the source's digest at the branch point."""
import hashlib
import json

import numpy as np

from DNSD.changes import recipe

GENESIS = hashlib.sha256(b"dnsd-chain/1").hexdigest()  # what a new run's first epoch builds on
TIMING = ("seconds",)  # the totals that are wall time, not computation


def state_tensors(state):
    """{"part:name": array} of a state's tensors, each part in its own order: weights and batch-norm statistics (the
    state dict's), the optimiser's accumulators (by structured name; its copy of the scheduler is the scheduler's),
    the normaliser."""
    parts = {"model": state["model"], "normalizer": state["normalizer"],
             "optimizer": {key: value for key, value in state["optimizer"].items() if hasattr(value, "shape")}}
    return {f"{part}:{name}": np.ascontiguousarray(value.numpy() if hasattr(value, "numpy") else value)
            for part, arrays in parts.items() for name, value in arrays.items()}


def exact_fields(state):
    """What a state holds that any numerics compute alike: the recipe, the data, the classes, the counters and the
    learning rate (the tensors, the totals and the errors are rounding's)."""
    config, scheduler = state["config"], state.get("scheduler") or {}
    return {"recipe": recipe(config if isinstance(config, dict) else config.to_dict()),
            "data_sha256": (state.get("data") or {}).get("sha256"), "num_classes": state["num_classes"],
            "classes": list(state["classes"]), "epochs_done": state["epochs_done"], "step": state.get("step", 0),
            "scheduler": {key: scheduler.get(key) for key in ("last_epoch", "last_lr")}}


def state_digest(state):
    """sha256 of everything a state computes from here on, in a form that no Paddle version or process changes."""
    totals = {key: value for key, value in (state.get("totals") or {}).items() if key not in TIMING}
    fields = {**exact_fields(state), "scaler": state.get("scaler"), "totals": totals, "best": state.get("best")}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    for name, array in sorted(state_tensors(state).items()):  # by name: the order Paddle keeps them in may vary
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def link(previous, state):
    """The chain's digest at a state: its own digest sealed with the one before (GENESIS, a branch's origin, or the
    last epoch's)."""
    return hashlib.sha256(f"{previous}\0{state_digest(state)}".encode()).hexdigest()


def position_link(state):
    """The chain's digest at a checkpoint, built on the link it says it follows (absent before DNSD 1.6.0: None)."""
    return link(state["chain"], state) if isinstance(state.get("chain"), str) else None


def branch_origin(branch):
    """What a branch's first epoch builds on: the source's digest at the branch point and the changes, as branch.json
    holds them (its path to the source is where it came from, not what it computes)."""
    sealed = {key: branch.get(key) for key in ("state_sha256", "epochs_done", "step", "changes")}
    return hashlib.sha256(json.dumps(sealed, sort_keys=True).encode()).hexdigest()


def sealed_link(state):
    """The link the checkpoint's own history seals for it (an epoch's end: its last record's), or None where there is
    none to compare (within an epoch, or a record from before DNSD 1.6.0)."""
    history = state.get("history") or []
    record = history[-1] if history and not state.get("step") else None
    return record.get("state_sha256") if isinstance(record, dict) else None


def breaks_chain(state):
    """Whether a checkpoint's state differs from what its own records seal: altered after it was written."""
    sealed = sealed_link(state)
    return sealed is not None and position_link(state) != sealed
