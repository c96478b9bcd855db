"""The bookkeeping of training, as pycls's meters: the running totals of an epoch's steps, and the epoch's record
in metrics.jsonl, VisualDL and the console."""
import time
from dataclasses import asdict, dataclass

from DNSD.engine.run_folder import append_record


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

    def add(self, loss_sum, correct, active_blocks, images, seconds):
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

    def record(self, epoch, val_error, lr, seconds_after):
        """The epoch's line of metrics.jsonl; seconds_after: time spent after the last step (validation)."""
        return {"epoch": epoch, "train_loss": self.loss, "train_error": 100.0 - 100.0 * self.correct / self.seen,
                "mean_active_blocks": self.active_blocks / self.steps, "val_error": val_error, "lr": lr,
                "epoch_seconds": self.seconds + seconds_after, "images_per_second": self.images_per_second}

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


def log_epoch(writer, run_dir, record, improved, epochs):
    """Write an epoch's record to metrics.jsonl and VisualDL, and its line to the console."""
    append_record(run_dir, record)
    for key, value in record.items():
        if key != "epoch":
            writer.add_scalar(tag=key, value=value, step=record["epoch"])
    # Networks without stochastic depth have no blocks to drop, and log 0.
    active = f"active blocks {record['mean_active_blocks']:.2f}  " if record["mean_active_blocks"] else ""
    best = " (best)" if improved else ""
    print(f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  "
          f"train error {record['train_error']:.2f} %  val error {record['val_error']:.2f} %{best}  "
          f"lr {record['lr']:g}  {active}{record['epoch_seconds']:.0f} s  {record['images_per_second']:.0f} img/s",
          flush=True)
