"""The bookkeeping of training, as pycls's meters: the running totals of an epoch's steps, and the epoch's record
in metrics.jsonl, VisualDL and the console; what is due after a step (StepSchedule), and what a step leaves on the
device for the next read (UnreadStep).

The VisualDL log is derived from the records: VisualDL shows one log file per folder (the newest), and a file cannot
be reopened to add to it, so a resumed run and a finished one write the whole log again from metrics.jsonl and
points.jsonl, the finished one with its hyperparameters and final metrics for VisualDL's hyperparameter view."""
import collections
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import paddle
from tqdm import tqdm

from DNSD.runs.folder import EVALUATION_POINTS, VISUALDL, append_record, remove
from DNSD.system.console import imported_without_home
from DNSD.training.evaluation import percent

LogWriter = imported_without_home("visualdl").LogWriter


@dataclass
class TrainingMeter:
    """The totals of the steps of an epoch so far, summed over the data-parallel ranks. A checkpoint holds them
    (as `totals`), so that a run resumed within an epoch reports the epoch as one that was not interrupted."""

    loss_sum: float = 0.0
    correct: int = 0
    active_blocks: float = 0.0
    steps: int = 0
    seen: int = 0
    seconds: float = 0.0  # wall time of the steps, waiting for data included: what images per second should mean
    gradients: dict = field(default_factory=dict)  # per watched tensor, the sum over steps of its mean |gradient|
    # The mean loss of each step: dnsd audit compares a re-trained epoch with these, step by step.
    step_losses: list = field(default_factory=list)

    def add(self, loss_sum, correct, active_blocks, images, seconds, gradients=None):
        self.step_losses.append(float(loss_sum) / images)
        for name, value in (gradients or {}).items():
            self.gradients[name] = self.gradients.get(name, 0.0) + float(value)
        self.loss_sum += float(loss_sum)
        self.correct += int(correct)
        self.active_blocks += float(active_blocks)
        self.steps += 1
        self.seen += images
        self.seconds += seconds

    @property
    def loss(self):
        return self.loss_sum / self.seen

    @property
    def images_per_second(self):
        return self.seen / self.seconds

    def record(self, epoch, val_error, lr, seconds_after, test_error=None):
        """The epoch's line of metrics.jsonl; seconds_after: time spent after the last step (validation and test);
        test_error: measured at the epoch's end (run.test_every_epoch), or None."""
        record = {"epoch": epoch, "train_loss": self.loss, "train_error": percent(self.seen - self.correct, self.seen),
                  "mean_active_blocks": self.active_blocks / self.steps, "val_error": val_error, "lr": lr,
                  "epoch_seconds": self.seconds + seconds_after, "images_per_second": self.images_per_second}
        if self.gradients:
            record["gradients"] = {name: total / self.steps for name, total in self.gradients.items()}
        record["step_losses"] = list(self.step_losses)
        return record if test_error is None else {**record, "test_error": test_error}

    def state(self):
        return asdict(self)


class Stopwatch:
    """Seconds since the last lap."""

    def __init__(self):
        self.start = time.perf_counter()

    def lap(self):
        now = time.perf_counter()
        elapsed, self.start = now - self.start, now
        return elapsed


# The final metrics of a run in VisualDL's hyperparameter view: summary.json's keys, logged as scalars "final/KEY".
FINAL_METRICS = ("test_error", "best_val_error", "last_test_error")


def _log_epoch_scalars(writer, record):
    for key, value in record.items():
        if key != "epoch" and isinstance(value, (int, float)):  # not the digests
            writer.add_scalar(tag=key, value=value, step=record["epoch"])
    for name, value in record.get("gradients", {}).items():
        writer.add_scalar(tag=f"gradients/{name}", value=value, step=record["epoch"])


def _log_evaluation_point_scalars(writer, point):
    for key in ("val_error", "test_error"):
        writer.add_scalar(tag=f"points/{key}", value=point[key], step=point["iteration"])


def open_dashboard(run_dir, records=(), points=()):
    """A new VisualDL log for the run, replacing any earlier one, holding the records and points so far."""
    remove([os.path.join(run_dir, VISUALDL)] if os.path.isdir(os.path.join(run_dir, VISUALDL)) else [])
    writer = LogWriter(logdir=os.path.join(run_dir, VISUALDL))
    for record in records:
        _log_epoch_scalars(writer, record)
    for point in points:
        _log_evaluation_point_scalars(writer, point)
    return writer


def _hyperparameter(value):
    """A config value as VisualDL's hyperparameter view takes it: a number, or text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "unset" if value is None else str(value)


def hyperparameters(config_dict):
    """{"section.key": value} of a config's every key, as VisualDL takes them."""
    return {f"{section}.{key}": _hyperparameter(value) for section, entries in config_dict.items()
            for key, value in entries.items()}


def write_final_dashboard(run_dir, records, points, hparams, summary):
    """The finished run's whole VisualDL log: its epochs and points, its hyperparameters and its final metrics."""
    with open_dashboard(run_dir, records, points) as writer:
        try:
            writer.add_hparams(hparams, [f"final/{key}" for key in FINAL_METRICS])
        except UnicodeEncodeError:  # VisualDL encodes the log's path as UTF-8, which an undecodable name is not
            print(f"DNSD: the dashboard's hyperparameter view is left out: VisualDL cannot name {run_dir} in this "
                  "locale's encoding (a UTF-8 locale, e.g. LC_ALL=C.UTF-8, has it)")
        for key in FINAL_METRICS:
            writer.add_scalar(tag=f"final/{key}", value=summary[key], step=records[-1]["epoch"])


def log_epoch(writer, run_dir, record, improved, epochs):
    """Write an epoch's record to metrics.jsonl and VisualDL, and its line to the console."""
    append_record(run_dir, record)
    _log_epoch_scalars(writer, record)
    # Networks without stochastic depth have no blocks to drop, and log 0.
    active = f"active blocks {record['mean_active_blocks']:.2f}  " if record["mean_active_blocks"] else ""
    best = " (best)" if improved else ""
    test = f"test error {record['test_error']:.2f} %  " if "test_error" in record else ""
    print(f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  "
          f"train error {record['train_error']:.2f} %  val error {record['val_error']:.2f} %{best}  {test}"
          f"lr {record['lr']:g}  {active}{record['epoch_seconds']:.0f} s  {record['images_per_second']:.0f} img/s",
          flush=True)


def log_evaluation_point(writer, run_dir, point, improved):
    """Write a point's record (run.eval_every_iterations) to points.jsonl and VisualDL, and its line to the console."""
    append_record(run_dir, point, EVALUATION_POINTS)
    _log_evaluation_point_scalars(writer, point)
    best = " (best)" if improved else ""
    tqdm.write(f"step {point['iteration']} (epoch {point['epoch']}, step {point['step']})  val error "
               f"{point['val_error']:.2f} %{best}  test error {point['test_error']:.2f} %")


def counted(number, noun):
    """'1 epoch', '3 epochs'."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def estimate_line(meter, images_per_epoch, epochs_left):
    """What the rest of a run costs on this device, from the speed of the epoch so far (meter): said once, early."""
    seconds = (epochs_left * images_per_epoch - meter.seen) / meter.images_per_second
    amount = next((f"{seconds / size:.1f} {unit}" for size, unit in ((86400, "days"), (3600, "hours"))
                   if seconds >= 2 * size), counted(math.ceil(seconds / 60), "minute"))
    left = f"the {counted(epochs_left, 'epoch')} left take" if epochs_left > 1 else "the epoch left takes"
    return (f"DNSD: at {meter.images_per_second:.0f} images/s on this device, {left} about {amount} of training, "
            f"besides evaluation")


# Steps between reads of the device's results (losses, correct counts): the progress bar is refreshed then, a
# non-finite loss is caught then, and data-parallel ranks check that they agree then. Between two reads, no step
# waits for the device, so that the host can queue the next step while the device computes this one.
READ_EVERY = 20

Due = collections.namedtuple("Due", "read save measure iteration")


@dataclass
class UnreadStep:
    """A step whose results wait on the device for the next read."""

    results: paddle.Tensor  # its loss (summed over its images), correct count and watched gradients, stacked
    activity: np.ndarray  # each block's share of open gates, the same on every rank
    images: int  # the whole mini-batch's
    seconds: float
    batch: tuple  # the host tensors its images were copied from: a copy may still be queued until the read


def step_record(watched, blocks):
    """A read step's numbers as the ranks sum them, by name: the results as the device stacked them, then the
    activity."""
    return np.dtype([("loss", np.float64), ("correct", np.float64), ("gradients", np.float64, (watched,)),
                     ("activity", np.float64, (blocks,))])


@dataclass
class StepSchedule:
    """What is due after step `step` (1-based) of an epoch of `steps`: a read of the device's results, a
    checkpoint, an evaluation point (every measure_every steps, as the authors; at the last step only of a run
    shorter than that, so that every run has a best checkpoint)."""

    epoch: int
    epochs: int
    steps: int
    checkpoint_every: int = 0
    measure_every: int = 0

    def due(self, step, signalled=False):
        iteration = (self.epoch - 1) * self.steps + step
        save = bool(self.checkpoint_every) and iteration % self.checkpoint_every == 0
        measure = bool(self.measure_every) and (iteration % self.measure_every == 0 or (
            self.epoch == self.epochs and step == self.steps and iteration < self.measure_every))
        read = step % READ_EVERY == 0 or step == self.steps or signalled or save or measure
        return Due(read, save, measure, iteration)
