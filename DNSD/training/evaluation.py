"""Evaluation of a model on a split: top-1 and top-5 error, accuracy, per-class accuracy and the confusion matrix;
a checkpoint's report file beside it, and the console lines of a result."""
import os

import numpy as np
import paddle
import paddle.nn.functional as F

from DNSD.datasets.pipeline import batches
from DNSD.files import write_json
from DNSD.runs.folder import check_writable
from DNSD.training.ranks import Ranks

TOP_K = 5  # the top-k error reported beside the top-1 error (ImageNet's and timm's k)


@paddle.no_grad()
def evaluate(model, dataset, normalizer, batch_size, classes, ranks=Ranks()):
    """Top-1 and top-5 error and accuracy (percent), per-class accuracy and confusion matrix ([true][predicted])
    of model on dataset, every block active; with several ranks, each predicts its shard and the counts are summed."""
    model.eval()
    shard = dataset.subset(ranks.shard(len(dataset)))
    k = min(TOP_K, len(classes))
    # The k best classes of each image, best first: the first is the prediction.
    ranked = [logits.topk(k, axis=1)[1].numpy() for logits in outputs(model, shard.images, batch_size, normalizer)]
    ranked = np.concatenate(ranked or [np.zeros((0, k), np.int64)])
    return measures(ranked, shard.labels, classes, len(dataset), ranks)


def evaluate_scores(scores, labels, classes):
    """evaluate's measures of class scores (N, classes) that another engine computed."""
    ranked = np.argsort(-scores, axis=1, kind="stable")[:, :min(TOP_K, len(classes))]
    return measures(ranked, labels, classes, len(labels))


def percent(count, total):
    """count / total in percent, in one division: 142 of 1,000 is 14.2, where 100 - 85.8 is 14.200000000000003."""
    return float(100.0 * int(count) / int(total))


def measures(ranked, labels, classes, images, ranks=Ranks()):
    """The measures of the k best classes of each image (ranked, best first) summed over the ranks."""
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (labels, ranked[:, 0]), 1)
    in_top_k = int((ranked == labels[:, None]).any(axis=1).sum())
    confusion, in_top_k = ranks.sum(confusion, [in_top_k])
    confusion, in_top_k = confusion.astype(np.int64), in_top_k[0]
    per_class_total, per_class_correct = confusion.sum(axis=1), np.diag(confusion)
    correct = int(per_class_correct.sum())
    return {
        "images": int(images),
        "error": percent(images - correct, images),
        "accuracy": percent(correct, images),
        "top5_error": percent(images - in_top_k, images),
        "per_class_accuracy": {name: percent(hit, total) if total else None
                               for name, hit, total in zip(classes, per_class_correct, per_class_total)},
        "confusion_matrix": confusion.tolist(),
    }


@paddle.no_grad()
def probabilities(model, images, batch_size, normalizer=None):
    """The class probabilities (softmax of the logits, float32 (N, classes)) of uint8 images (N, 3, 32, 32), in
    batches: normalised as training did by normalizer, or given as float pixel values to a model that normalises
    them itself (an exported one)."""
    model.eval()
    prepare = normalizer or (lambda pixels: pixels.astype(np.float32))
    return np.concatenate([F.softmax(logits, axis=1).numpy() for logits in outputs(model, images, batch_size, prepare)])


def outputs(model, images, batch_size, prepare):
    """The model's outputs for uint8 images, batch by batch, each batch prepared (normalised) on the host first."""
    for indices in batches(len(images), batch_size):
        yield model(paddle.to_tensor(prepare(images[indices])))


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
