"""Training: the paper's recipe, the best-validation checkpoint, and the test error of that checkpoint at the end."""
import json
import math
import os
import shutil
import time

import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from DNSD.checkpoint import load_checkpoint, restore_model, save_checkpoint, write_json
from DNSD.data import augment, batches, load_cifar
from DNSD.errors import InputError
from DNSD.eval import evaluate, format_report, report_checkpoint
from DNSD.model import build_model
from DNSD.runtime import random_generators, select_device
from DNSD.stochastic_depth import sample_gates

RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "last.pdckpt", "best.pdckpt", "best.test.json", "vdl")
PROGRESS_EVERY = 10  # steps between progress-bar updates; each one waits for the device


def prepare_run_dir(output_dir, overwrite):
    """Create the run folder; refuse one that holds a run unless overwrite, and fail early if it is not writable."""
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(output_dir, name))]
    if existing and not overwrite:
        raise InputError(f"{output_dir} already holds a run ({existing[0]}); pass --overwrite to replace it or "
                         "choose another --output-dir")
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise InputError(f"cannot write to output folder {output_dir} ({error.strerror}); choose another "
                         "--output-dir") from None
    for name in existing:
        path = os.path.join(output_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return output_dir


def decay_epochs(train_config):
    """0-based epochs from which each learning-rate decay applies.

    The authors' schedule decays when the 1-based epoch reaches fraction * epochs (250 and 375 of 500), so the
    0-based milestone is one less. Rounding first keeps 0.1 * 30 from becoming 3.0000000000000004.
    """
    return [math.ceil(round(fraction * train_config.epochs, 9)) - 1 for fraction in train_config.lr_decay_at]


def build_optimizer(train_config, model):
    """Nesterov SGD with L2 weight decay on every parameter, and the step schedule, both Paddle's own."""
    rates = [train_config.lr * train_config.lr_decay_factor ** i for i in range(len(train_config.lr_decay_at) + 1)]
    scheduler = paddle.optimizer.lr.PiecewiseDecay(decay_epochs(train_config), rates)
    optimizer = paddle.optimizer.Momentum(scheduler, momentum=train_config.momentum, parameters=model.parameters(),
                                          use_nesterov=train_config.nesterov, weight_decay=train_config.weight_decay)
    return optimizer, scheduler


def train_one_epoch(model, optimizer, data, config, rngs, progress):
    """One pass over the shuffled training split; returns loss, error (%) and mean number of active blocks."""
    model.train()
    train = data.train
    loss_sum = paddle.zeros([])
    correct = paddle.zeros([], dtype="int64")
    active_blocks = 0
    seen = 0
    step = 0
    started = time.perf_counter()
    for step, indices in enumerate(batches(len(train), config.train.batch_size, rngs["shuffle"]), start=1):
        images = data.normalizer(train.images[indices])
        if config.data.augment:
            images = augment(images, rngs["augment"])
        gates = sample_gates(model.survival_probabilities, rngs["gates"])
        labels = paddle.to_tensor(train.labels[indices])
        logits = model(paddle.to_tensor(images), gates)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        # Zeroed rather than freed gradients: a block dropped in this step then still gets weight decay and momentum,
        # as every parameter did in the authors' optimiser.
        optimizer.clear_grad(set_to_zero=True)
        loss_sum += loss.detach() * len(indices)
        correct += (logits.argmax(axis=1) == labels).astype("int64").sum()
        active_blocks += int(gates.sum())
        seen += len(indices)
        progress.update(1)
        if step % PROGRESS_EVERY == 0:
            progress.set_postfix(loss=f"{loss_sum.item() / seen:.3f}",
                                 img_s=f"{seen / (time.perf_counter() - started):.0f}")
    return {
        "train_loss": loss_sum.item() / seen,
        "train_error": 100.0 - 100.0 * correct.item() / seen,
        "mean_active_blocks": active_blocks / step,
    }


def train(config):
    """Train as config says; returns the summary (best epoch, its validation and test error)."""
    run_dir = prepare_run_dir(config.run.output_dir, config.run.overwrite)
    device = select_device(config.run.device)
    rngs = random_generators(config.run.seed)
    data = load_cifar(config.data, rngs["split"])
    paddle.seed(config.run.seed)
    model = build_model(config.model, data.num_classes)
    optimizer, scheduler = build_optimizer(config.train, model)
    with open(os.path.join(run_dir, "config.yaml"), "w") as stream:
        stream.write(config.to_yaml())

    from visualdl import LogWriter

    print(f"DNSD: ResNet-{config.model.depth} ({model.num_blocks} blocks, expected active "
          f"{model.survival_probabilities.sum():.2f}), {len(data.train):,} train / {len(data.val):,} val / "
          f"{len(data.test):,} test images, {config.train.epochs} epochs on {device}; run folder {run_dir}")
    best = {"epoch": 0, "val_error": math.inf}
    steps_per_epoch = len(batches(len(data.train), config.train.batch_size))
    with LogWriter(logdir=os.path.join(run_dir, "vdl")) as writer, \
            open(os.path.join(run_dir, "metrics.jsonl"), "a") as metrics_file:
        for epoch in range(1, config.train.epochs + 1):
            started = time.perf_counter()
            lr = optimizer.get_lr()
            with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config.train.epochs}", unit="batch",
                      leave=False, disable=None) as progress:
                record = {"epoch": epoch, **train_one_epoch(model, optimizer, data, config, rngs, progress)}
            train_seconds = time.perf_counter() - started
            record["val_error"] = evaluate(model, data.val, data.normalizer, config.train.batch_size,
                                           data.classes)["error"]
            scheduler.step()
            record.update(lr=lr, epoch_seconds=time.perf_counter() - started,
                          images_per_second=len(data.train) / train_seconds)
            improved = record["val_error"] < best["val_error"]
            if improved:
                best = {"epoch": epoch, "val_error": record["val_error"]}
            log_epoch(writer, metrics_file, record, improved, config.train.epochs)
            state = {"config": config.to_dict(), "num_classes": data.num_classes, "classes": data.classes,
                     "normalizer": data.normalizer.state(), "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                     "metrics": record, "best": best}
            save_checkpoint(os.path.join(run_dir, "last.pdckpt"), state)
            if improved:
                save_checkpoint(os.path.join(run_dir, "best.pdckpt"), state)
    return finish(run_dir, data, config)


def log_epoch(writer, metrics_file, record, improved, epochs):
    metrics_file.write(json.dumps(record) + "\n")
    metrics_file.flush()
    for key, value in record.items():
        if key != "epoch":
            writer.add_scalar(tag=key, value=value, step=record["epoch"])
    print(f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  train error {record['train_error']:.2f} %"
          f"  val error {record['val_error']:.2f} %{' (best)' if improved else ''}  lr {record['lr']:g}  "
          f"active blocks {record['mean_active_blocks']:.2f}  {record['epoch_seconds']:.0f} s  "
          f"{record['images_per_second']:.0f} img/s", flush=True)


def finish(run_dir, data, config):
    """Test the best-validation checkpoint, as the paper reports, and write the run's summary."""
    best_path = os.path.join(run_dir, "best.pdckpt")
    state = load_checkpoint(best_path)
    model = restore_model(state, best_path)
    result = report_checkpoint(model, state, best_path, data, "test", config.train.batch_size)
    summary = {"best_epoch": state["epoch"], "best_val_error": state["best"]["val_error"],
               "test_error": result["error"], "checkpoint": os.path.abspath(best_path)}
    write_json(os.path.join(run_dir, "summary.json"), summary)
    print(format_report(result, "test"))
    print(f"best epoch {summary['best_epoch']}: val error {summary['best_val_error']:.2f} %, "
          f"test error {summary['test_error']:.2f} %  ({best_path})")
    return summary
