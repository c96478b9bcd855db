"""Evaluation of a model on a split: top-1 error, accuracy and per-class accuracy."""
import numpy as np
import paddle

from DNSD.datasets.pipeline import batches
from DNSD.engine.ranks import Ranks


@paddle.no_grad()
def evaluate(model, dataset, normalizer, batch_size, classes, ranks=Ranks()):
    """Top-1 error and accuracy (in percent) and per-class accuracy of model on dataset, every block active.

    With several data-parallel ranks, each predicts its shard of the dataset and the counts are summed.
    """
    model.eval()
    shard = dataset.subset(ranks.shard(len(dataset)))
    predictions = [model(paddle.to_tensor(normalizer(shard.images[indices]))).argmax(axis=1).numpy()
                   for indices in batches(len(shard), batch_size)]
    correct = np.concatenate(predictions or [np.zeros(0, np.int64)]) == shard.labels
    per_class_total, per_class_correct = ranks.sum([np.bincount(shard.labels, minlength=len(classes)),
                                                    np.bincount(shard.labels[correct], minlength=len(classes))])
    accuracy = 100.0 * per_class_correct.sum() / len(dataset)
    return {
        "images": int(len(dataset)),
        "error": float(100.0 - accuracy),
        "accuracy": float(accuracy),
        "per_class_accuracy": {name: float(100.0 * hit / total) if total else None
                               for name, hit, total in zip(classes, per_class_correct, per_class_total)},
    }
