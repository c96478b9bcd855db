"""Re-training a position of a run as it trained it, in a temporary folder, and what the re-training ends with:
its weights, its chain digest, its epoch's record, its predictions of the validation images."""
import copy
import tempfile

import numpy as np
import paddle

from DNSD.audits.verdicts import Retrained
from DNSD.datasets import load_splits
from DNSD.errors import InputError, TrainingStopped
from DNSD.models import build_model
from DNSD.runs.chain import exact_fields, link, state_tensors
from DNSD.runs.checkpoint import check_resume_state, check_same_data, restore_model
from DNSD.runs.folder import BRANCH_START
from DNSD.system.device import describe_device
from DNSD.training.evaluation import probabilities
from DNSD.training.loop import Diverged, Interrupted, Trainer
from DNSD.training.ranks import host_weights


def splits(run, normalizer):
    """The run's data with a checkpoint's normaliser (None: fitted, as a new run does), read once."""
    key = None if normalizer is None else b"".join(array.tobytes() for array in normalizer.values())
    if key not in run.data:
        run.data[key] = load_splits(run.config, normalizer)
    return run.data[key]


def retrain(run, target, device, nudge=0.0):
    """The target re-trained from its start in a temporary folder, removed after; nudge (+inf or -inf): from start
    weights each moved one unit in the last place that way, a difference of rounding alone, to measure its noise."""
    config = copy.deepcopy(run.config)
    config.run.keep_every = 0  # nothing of the temporary folder is kept
    path, state = target.start or (None, None)
    # Training changes the history and totals it starts from, and a target is re-trained more than once.
    state = copy.deepcopy(state)
    data = splits(run, state and state["normalizer"])
    if state:
        check_same_data(state, data, path)
    elif target.entry and target.entry["data"]["sha256"] != data.identity["sha256"]:
        raise InputError(f"{data.identity['file']} is not the archive {run.folder} was trained on (sha256 "
                         f"{target.entry['data']['sha256'][:12]}...); pass that archive with --data-file")
    with tempfile.TemporaryDirectory(prefix="dnsd-audit-") as folder:
        config.run.output_dir = folder
        if state:
            model = restore_model(state, path)
            check_resume_state(state, model, path, -(-len(data.train) // config.train.batch_size))
        else:
            paddle.seed(config.run.seed)  # the initialisation, as a new run draws it
            model = build_model(config.model, data.num_classes)
        if nudge:
            model.set_state_dict({name: np.nextafter(array, nudge) if array.dtype.kind == "f" else array
                                  for name, array in host_weights(model).items()})
        branched = run.branch is not None and path == run.path(BRANCH_START)
        trainer = Trainer(config, folder, data, model, state, branched=branched, origin=run.origin)
        trainer.estimated = True  # the run's cost to train is not the audit's: audit() says what it re-trains
        how = ", its weights moved by one unit in the last place to measure the rounding noise" if nudge else ""
        print(f"DNSD: auditing {target.name()} of {run.folder}: re-training it from "
              f"{path or f'the initialisation of seed {config.run.seed}'} on {describe_device(device)}{how}",
              flush=True)
        try:
            trainer.train(until=target.epoch, within=target.step)
        except (Diverged, Interrupted) as stopped:
            raise TrainingStopped(f"the audit's re-training stopped: {stopped.what}; nothing in {run.folder} was "
                                  "changed", stopped.exit_code, stopped.label) from None
        record, state = trainer.history[-1] if not target.step else None, trainer.state()
        return Retrained(state_tensors(state), exact_fields(state),
                         record["state_sha256"] if record else link(trainer.chain, state), record,
                         record["epoch_seconds"] if record else trainer.meter.seconds, data.identity)


def predictions(run, data, weights):
    """The classes a model of these weights predicts for the validation images, every block active."""
    model = build_model(run.config.model, data.num_classes)
    model.set_state_dict(weights)
    return probabilities(model, data.val.images, run.config.train.batch_size, data.normalizer).argmax(axis=1)
