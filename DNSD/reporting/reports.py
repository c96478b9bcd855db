"""The reports of `dnsd eval`: a checkpoint's, or an exported model's through its engine, each written beside it."""
import os

from DNSD.config import config_from_dict
from DNSD.datasets import load_splits
from DNSD.files import write_json
from DNSD.inference.runtimes import open_model
from DNSD.runs.checkpoint import open_checkpoint, restore_model
from DNSD.runs.folder import check_writable
from DNSD.system.device import select_run_device
from DNSD.training.evaluation import evaluate_scores, report_path, write_report


def checkpoint_report(checkpoint_path, split="test", stated=None):
    """A checkpoint's model evaluated on the test (or validation) split and its report written; stated: the
    user's config values, which may change only what keeps the model (data file, device)."""
    state, config = open_checkpoint(checkpoint_path, stated, "dnsd eval")
    select_run_device(config.run)
    model = restore_model(state, checkpoint_path)
    # The split is redrawn from the run's seed; the normalisation statistics are the ones training used.
    data = load_splits(config, state["normalizer"])
    return write_report(model, state, checkpoint_path, data, split, config.train.batch_size)


def model_report(path, split="test", stated=None, engine=None):
    """An exported model (PREFIX or PREFIX.onnx) evaluated by its engine on the split of the data it was trained
    on (the run's config, in PREFIX-info.json), and its report written beside it, e.g. PREFIX-evaluation-test.json."""
    stated = stated or {}
    data_file = stated.get("data.data_file")
    exported = open_model(path=path, engine=engine, stated={key: value for key, value in stated.items()
                                                            if key != "data.data_file"}, purpose="dnsd eval")
    config = config_from_dict(exported.info["config"], where=f" in {exported.prefix}-info.json")
    if data_file:
        config.data.data_file = data_file
    data = load_splits(config)
    # PREFIX-evaluation-test.json, whichever form and engine computed it: no dot in the name after the prefix, as
    # Paddle's jit.load takes PREFIX*.NAME.json for a saved method NAME of the model.
    report = report_path(exported.prefix + "-evaluation", split, data.identity, exported.info.get("data"), "-")
    check_writable(os.path.dirname(os.path.abspath(report)))
    dataset = data.test if split == "test" else data.val
    scores = exported.predict(dataset.images.transpose(0, 2, 3, 1))
    result = evaluate_scores(scores, dataset.labels, exported.classes)
    result.update(split=split, model=os.path.abspath(path), engine=exported.engine, data=data.identity, report=report)
    write_json(report, result)
    return result
