"""A checkpoint's evaluation on a split and its report file beside it, and the console lines of a result."""
import os

from DNSD.config import config_from_dict
from DNSD.datasets import load_splits
from DNSD.files import write_json
from DNSD.inference.runtimes import open_model
from DNSD.runs.checkpoint import open_checkpoint, restore_model
from DNSD.runs.folder import check_writable
from DNSD.system.device import select_run_device
from DNSD.training.evaluation import evaluate, evaluate_scores

MAX_CLASSES_SHOWN = 20


def report_path(stem, split, data=None, trained_on=None, separator="."):
    """Where an evaluation is written: stem (a checkpoint's path without .pdckpt) and the split, e.g. best.test.json;
    on other data than the run trained on (data and trained_on: archive identities), a name that says which, e.g.
    best.test.cifar-10-python-3a1f09c2.json, so that the run's own report is never replaced."""
    if data and trained_on and data["sha256"] != trained_on["sha256"]:
        archive = os.path.basename(data["file"]).split(".")[0]
        return f"{stem}{separator}{split}{separator}{archive}-{data['sha256'][:8]}.json"
    return f"{stem}{separator}{split}.json"


def format_report(result, split, report_file):
    """The console lines of a result: the error, then the per-class accuracy where the classes are few enough to read
    (CIFAR-10's 10; CIFAR-100's 100 stay in the report file)."""
    lines = [f"{split} error {result['error']:.2f} % (accuracy {result['accuracy']:.2f} %), top-5 error "
             f"{result['top5_error']:.2f} %, on {result['images']:,} images"]
    per_class = result["per_class_accuracy"]
    if len(per_class) <= MAX_CLASSES_SHOWN:
        lines.append("per-class accuracy:")
        lines += [f"  {name:<12} {accuracy:6.2f} %" for name, accuracy in per_class.items() if accuracy is not None]
    else:
        lines.append(f"  per-class accuracy of the {len(per_class)} classes: {report_file}")
    return "\n".join(lines)


def write_report(model, state, checkpoint_path, data, split, batch_size):
    """Evaluate a checkpoint's model on one split and write the report beside the checkpoint (checked writable
    first, so that an evaluation is never computed to be lost); the result names the report."""
    path = report_path(os.path.splitext(checkpoint_path)[0], split, data.identity, state.get("data"))
    check_writable(os.path.dirname(os.path.abspath(path)))
    dataset = data.test if split == "test" else data.val
    result = evaluate(model, dataset, data.normalizer, batch_size, data.classes)
    result.update(split=split, checkpoint=os.path.abspath(checkpoint_path), epoch=state["epochs_done"],
                  data=data.identity, report=path)
    write_json(path, result)
    return result


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
