"""The training loop: the paper's optimiser and schedule, one step per mini-batch, validation and checkpoints at
each epoch's end.

A run can stop at any step (a signal, a kill) and continue from its last checkpoint as if it had not: the checkpoint
holds the weights, the optimiser and scheduler, and the position in the epoch with its running totals; every random
draw is derived from (seed, epoch, step), so nothing else is needed to redo the same steps.
"""
import contextlib
import math
import os
import signal

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from DNSD.datasets.pipeline import TrainingBatches, prefetched
from DNSD.errors import DNSDError, InputError, TrainingStopped, one_line
from DNSD.models.batch_norm import use_synced_batch_norm
from DNSD.runs.chain import GENESIS, link, position_link
from DNSD.runs.checkpoint_file import save_checkpoint
from DNSD.runs.folder import BEST, KEPT, LAST
from DNSD.system.signals import stop_requests
from DNSD.training.best import BestCheckpoint
from DNSD.training.evaluation import evaluate
from DNSD.training.meters import (
    StepSchedule,
    Stopwatch,
    TrainingMeter,
    UnreadStep,
    estimate_line,
    log_epoch,
    log_evaluation_point,
    open_dashboard,
    step_record,
)
from DNSD.training.optimizer import build_optimizer, renamed
from DNSD.training.ranks import Ranks, check_shards, weights_digest


class Diverged(TrainingStopped):
    """Training stopped on a number that is no longer finite; kept: {checkpoint name: (epochs done, step)} of the
    checkpoints in the run folder to go on from."""

    def __init__(self, what, kept):
        super().__init__(f"{what}; training stopped")
        self.what, self.kept = what, kept


class Interrupted(TrainingStopped):
    """A signal stopped training after it saved where it stood."""

    def __init__(self, what, signum, saved):
        super().__init__(f"{what}: saved {saved}", exit_code=128 + signum, label="stopped")
        self.what, self.saved = what, saved


def non_finite_tensors(tensors):
    """How many of the tensors hold a NaN or an infinity: computed on the device, read back once."""
    tensors = [tensor for tensor in tensors if isinstance(tensor, paddle.Tensor)]
    finite = paddle.stack([paddle.isfinite(tensor).all() for tensor in tensors])
    return int((~finite).astype("int32").sum())


class Trainer:
    """Trains a model on a run's data as its config says, writing its checkpoints into run_dir (rank 0 alone);
    state: a checkpoint's, to continue from (branched: as a new run with its own schedule and best epoch);
    environment: the seal of this session's manifest entry, which each epoch's record names; origin: what a new
    run's or a branch's chain of custody starts from (chain.py)."""

    def __init__(self, config, run_dir, data, model, state=None, ranks=Ranks(), branched=False, environment=None,
                 origin=GENESIS):
        self.config, self.run_dir, self.data, self.model, self.ranks = config, run_dir, data, model, ranks
        self.environment = environment
        # The chain of custody (chain.py): the link of the last epoch's end, which positions after it build on, and
        # the link that end built on, which a checkpoint of it names.
        self.chain = self.chain_before = origin
        check_shards(len(data.train), config.train.batch_size, ranks.world_size)
        use_synced_batch_norm(config.train.sync_batch_norm and ranks.world_size > 1)
        self.optimizer, self.scheduler = build_optimizer(config.train, model)
        amp = config.train.amp
        self.autocast = contextlib.nullcontext if amp == "off" else lambda: paddle.amp.auto_cast(dtype=amp)
        # float16 needs loss scaling to keep small gradients; bfloat16 has float32's range and does not.
        self.scaler = paddle.amp.GradScaler() if amp == "float16" else None
        # The blocks a step drops are the same on every rank, but they leave parameters without a gradient, which
        # the all-reduce must be told to expect.
        self.network = paddle.DataParallel(model, find_unused_parameters=True) if ranks.world_size > 1 else model
        # Where the run stands: epochs finished, batches of the next one done, and its running totals.
        self.epochs_done, self.step, self.meter = 0, 0, TrainingMeter()
        self.estimated = False  # the console's estimate of the run's cost, said once a session
        self.unread = []  # UnreadStep of each step since the last read
        self.history = []
        self.best_checkpoint = BestCheckpoint(config.run.best_on_tie, bool(config.run.eval_every_iterations))
        # With run.eval_every_iterations: the validation and test error measured every so many iterations.
        self.evaluation_points = []
        # The tensors whose mean absolute gradient each step adds to the epoch's record (the paper's Figure 7).
        self.watched = [(f"{label}.{name}", parameter) for label, layer in model.first_convolutions().items()
                        for name, parameter in layer.named_parameters()]
        self.saved = {}  # the checkpoints in the run folder: (epochs done, step) of what each holds
        self.restored_optimizer = {}  # a resumed optimiser's state until its first step (restore)
        if state is not None:
            self.restore(state, branched)

    def restore(self, state, branched):
        try:  # checked field by field before (checkpoint.check_resume_state); Paddle checks the rest its own ways
            self.optimizer.set_state_dict(renamed(state["optimizer"], self.model, to_structured=False))
            self.scheduler.set_state_dict(state["scheduler"])
            if self.scaler:
                self.scaler.load_state_dict(state["scaler"])
        except Exception as error:
            raise InputError(f"the checkpoint's optimiser or scheduler state cannot be restored "
                             f"({type(error).__name__}: {one_line(error, 150)}); use another checkpoint") from None
        # Paddle 2.6 keeps restored accumulators aside until the first step, leaving them out of state_dict() till
        # then: a checkpoint saved before that step (a resume at an epoch's last step) takes them from here.
        self.restored_optimizer = state["optimizer"]
        self.epochs_done, self.step = state["epochs_done"], state["step"]
        self.meter, self.history = TrainingMeter(**state["totals"]), state["history"]
        self.evaluation_points = state.get("points", [])
        self.chain_before = state.get("chain") or GENESIS  # a checkpoint at the epoch's end names its own, as read
        if branched:
            # A branch follows its own config's schedule from here, and picks its best among its own epochs.
            self.scheduler.step(self.epochs_done)
        else:
            # Within an epoch, the rest of it builds on the epoch before; at an epoch's end, on this checkpoint.
            self.chain = (state.get("chain") if self.step else position_link(state)) or GENESIS
            self.best_checkpoint.best = dict(state["best"])
            self.saved[LAST] = (self.epochs_done, self.step)
            if self.best_checkpoint.position():
                self.saved[BEST] = self.best_checkpoint.position()

    def state(self):
        """Everything a checkpoint needs to evaluate this model or to continue this run exactly."""
        return {"config": self.config.to_dict(), "num_classes": self.data.num_classes, "classes": self.data.classes,
                "normalizer": self.data.normalizer.state(), "model": self.model.state_dict(),
                "optimizer": {**self.restored_optimizer, **renamed(self.optimizer.state_dict(), self.model)},
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "epochs_done": self.epochs_done, "step": self.step, "totals": self.meter.state(),
                "history": self.history, "points": self.evaluation_points, "best": self.best_checkpoint.best,
                "data": self.data.identity, "paddle_version": paddle.__version__,
                "chain": self.chain if self.step else self.chain_before}

    def path(self, name):
        return os.path.join(self.run_dir, name)

    def train(self, until=None, within=0):
        """Train until epoch `until` (default: the last) is done, or until a signal asks to stop; within: stop after
        that step of epoch `until` instead (dnsd audit re-trains to a checkpoint saved within an epoch)."""
        log = open_dashboard(self.run_dir, self.history, self.evaluation_points) if self.ranks.writes else \
            contextlib.nullcontext()
        with stop_requests() as requests, log as writer:
            while self.epochs_done < (until or self.config.train.epochs):
                last_step = within if within and self.epochs_done + 1 == until else None
                stopped = self.train_epoch(requests, writer, last_step)
                if last_step and not stopped:
                    break
                if not stopped:
                    self.end_epoch(writer)
                    stopped = bool(self.ranks.sum([len(requests)])[0])  # a signal during validation
                if stopped:
                    self.stop(requests)
        if self.ranks.world_size > 1:
            print(f"DNSD: rank {self.ranks.rank} of {self.ranks.world_size} ends with weights sha256 "
                  f"{weights_digest(self.model)}", flush=True)

    def train_epoch(self, requests, writer, last_step=None):
        """The remaining steps of the current epoch (up to last_step), measuring the evaluation points of
        run.eval_every_iterations on the way; returns whether a rank was asked to stop (after its step)."""
        config, epoch = self.config, self.epochs_done + 1
        batches = TrainingBatches(self.data, config.train.batch_size, config.data.augment, config.run.seed, epoch,
                                  self.step, self.ranks.rank, self.ranks.world_size)
        self.model.begin_epoch(epoch)
        self.model.train()  # once an epoch: validation left it in eval mode
        steps = self.step + len(batches)
        # The stream is closed however the epoch ends, and with it the thread that prepares the epoch's batches.
        with tqdm(total=steps, initial=self.step, desc=f"epoch {epoch}/{config.train.epochs}", unit="batch",
                  leave=False, disable=None if self.ranks.writes else True) as progress, \
                contextlib.closing(prefetched(batches, config.data.prefetch, config.data.pin_memory)) as stream:
            stopwatch = Stopwatch()
            schedule = StepSchedule(epoch, config.train.epochs, steps, config.run.checkpoint_every_iterations,
                                    config.run.eval_every_iterations)
            for (images, labels, host_batch), batch_size in zip(stream, batches.sizes):
                self.train_step(images, labels, batch_size, stopwatch.lap, host_batch)
                progress.update(1)
                # A single process answers a signal at once; data-parallel ranks must agree on the step, at a read.
                due = schedule.due(self.step, signalled=bool(requests) and self.ranks.world_size == 1)
                if due.read and self.read_and_measure(due, requests, writer, progress, stopwatch):
                    return True
                if due.save:
                    self.save(LAST)
                    stopwatch.lap()  # a checkpoint's time is not training time
                if self.step == last_step:
                    if self.unread:
                        self.read_steps()
                    break
        return False

    def read_and_measure(self, due, requests, writer, progress, stopwatch):
        """Read the steps since the last read, and measure an evaluation point where one is due; returns whether to
        stop."""
        stopped = self.read_steps(bool(requests))
        progress.set_postfix(loss=f"{self.meter.loss:.3f}", img_s=f"{self.meter.images_per_second:.0f}")
        if not self.estimated and self.ranks.writes:
            tqdm.write(estimate_line(self.meter, len(self.data.train), self.config.train.epochs - self.epochs_done))
            self.estimated = True
        # Measured before stopping: a resumed run goes on from the next step and would never measure it.
        if due.measure:
            self.measure_evaluation_point(writer, due.iteration)
            stopwatch.lap()  # a point's time is not training time
        return stopped

    def train_step(self, images, labels, batch_size, elapsed=lambda: 0.0, host_batch=()):
        """One optimiser step on this rank's share of a mini-batch of batch_size images. Nothing is read back from
        the device: the step's loss and correct count wait there for read_steps. elapsed: the step's wall time;
        host_batch: what images and labels were copied from, kept as long as the step's results."""
        activity = self.model.begin_step(self.config.run.seed, self.epochs_done + 1, self.step, batch_size,
                                         self.ranks.shard(batch_size))
        with self.autocast():
            logits = self.network(images)
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        # The all-reduce averages the ranks' gradients: scaled so, each rank's loss adds up to the global batch's mean.
        loss = loss_sum * (self.ranks.world_size / batch_size)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)  # the gradients as the loss gives them, for the magnitudes
        # Before the optimiser adds weight decay; a block the step dropped has a zero gradient.
        with paddle.no_grad():
            magnitudes = [parameter.grad.abs().mean() for _, parameter in self.watched]
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.clear_grad(set_to_zero=True)
        self.restored_optimizer = {}
        self.step += 1
        correct = (logits.argmax(axis=1) == labels).astype("float32").sum()
        results = paddle.stack([loss_sum.detach().astype("float32"), correct, *magnitudes])
        self.unread.append(UnreadStep(results, np.asarray(activity, np.float64), batch_size, elapsed(), host_batch))

    def read_steps(self, stop_requested=False):
        """Fetch the unread steps' results in one read and sum them over the ranks in one all-reduce, with each
        step's block activity (which the ranks must agree on) and any stop request; returns that request. The read
        waits for the device, which then holds no queued copy of a step's batch: the host's may go."""
        steps, self.unread = self.unread, []
        record = step_record(len(self.watched), len(steps[0].activity) if steps else 0)
        rows = np.zeros(0, record)
        if steps:  # the one read of the device; each row laid out as the record names it
            results = paddle.stack([step.results for step in steps]).numpy().astype(np.float64)
            activity = np.stack([step.activity for step in steps])
            rows = np.concatenate([results, activity], axis=1).view(record).ravel()
        stopped, summed = self.ranks.sum([stop_requested], rows)
        first_step = self.step - len(steps) + 1
        if not np.array_equal(summed["activity"], rows["activity"] * self.ranks.world_size):
            raise DNSDError(f"the data-parallel ranks drew different gates at epoch {self.epochs_done + 1}, between "
                            f"steps {first_step} and {self.step}; they must derive them from the same run.seed")
        for index, (row, step) in enumerate(zip(summed, steps)):
            if not math.isfinite(row["loss"] / step.images):
                self.step = first_step + index  # the step that diverged, for the message
                self.diverged(f"the training loss became {row['loss'] / step.images}")
            # Every rank holds the same all-reduced gradients: their sum over the ranks counts them world_size times.
            magnitudes = {name: value / self.ranks.world_size
                          for (name, _), value in zip(self.watched, row["gradients"])}
            self.meter.add(row["loss"], row["correct"], step.activity.sum(), step.images, step.seconds, magnitudes)
        return bool(stopped[0])

    def error_on(self, split):
        """The model's error (%) on a split of the run's data, every block active."""
        return evaluate(self.model, split, self.data.normalizer, self.config.train.batch_size, self.data.classes,
                        self.ranks)["error"]

    def measure_evaluation_point(self, writer, iteration):
        """The validation and test error at this step (run.eval_every_iterations, the authors' protocol for SVHN): a
        point with a new lowest validation error is saved as best.pdckpt, with the model as it is within its epoch."""
        self.ranks.share_statistics(self.model)
        val_error, test_error = self.error_on(self.data.val), self.error_on(self.data.test)
        self.model.train()
        point = {"epoch": self.epochs_done + 1, "step": self.step, "iteration": iteration, "val_error": val_error,
                 "test_error": test_error, "weights_sha256": weights_digest(self.model)}
        if self.environment:
            point["environment_sha256"] = self.environment
        self.evaluation_points.append(point)
        improved = self.best_checkpoint.at_point(point)
        point["state_sha256"] = link(self.chain, self.state())
        if improved:
            self.save(BEST)
        if self.ranks.writes:
            log_evaluation_point(writer, self.run_dir, point, improved)

    def end_epoch(self, writer):
        """Validate, keep the best and the last checkpoints, and log the epoch."""
        stopwatch = Stopwatch()
        epoch, point = self.epochs_done + 1, self.evaluation_points[-1] if self.evaluation_points else {}
        if (point.get("epoch"), point.get("step")) == (epoch, self.step):
            # A point was measured after the epoch's last step: the same model, so the same errors.
            val_error, test_error = point["val_error"], point["test_error"]
        else:
            self.ranks.share_statistics(self.model)
            val_error = self.error_on(self.data.val)
            test_error = self.error_on(self.data.test) if self.config.run.test_every_epoch else None
        record = self.meter.record(epoch, val_error, self.optimizer.get_lr(), stopwatch.lap(),
                                   test_error if self.config.run.test_every_epoch else None)
        # The weights as the epoch's checkpoints hold them, for dnsd audit: one read from the device an epoch.
        record["weights_sha256"] = weights_digest(self.model)
        if self.environment:
            record["environment_sha256"] = self.environment
        self.scheduler.step()
        improved = self.best_checkpoint.at_epoch_end(epoch, val_error)
        self.history.append(record)
        self.epochs_done, self.step, self.meter = epoch, 0, TrainingMeter()
        record["state_sha256"] = link(self.chain, self.state())  # the checkpoints below hold this state
        self.chain_before, self.chain = self.chain, record["state_sha256"]
        if improved:
            self.save(BEST)
        if epoch % self.config.run.checkpoint_every == 0 or epoch == self.config.train.epochs:
            self.save(LAST)
        if self.config.run.keep_every and epoch % self.config.run.keep_every == 0:
            self.save(KEPT.format(epoch))
        if self.ranks.writes:
            log_epoch(writer, self.run_dir, record, improved, self.config.train.epochs)

    def save(self, name):
        """Write a checkpoint, never one that holds a NaN or an infinity: weights, batch-norm statistics and the
        optimiser's state are checked first, and training stops with the earlier checkpoints as they were."""
        if not self.ranks.writes:
            return
        state = self.state()
        broken = non_finite_tensors([*state["model"].values(), *state["optimizer"].values()])
        if broken:
            self.diverged(f"{broken} of the model's and the optimiser's tensors became non-finite (NaN or infinite)")
        save_checkpoint(self.path(name), state)
        if name in (LAST, BEST):  # what a divergence's message offers to go on from
            self.saved[name] = (self.epochs_done, self.step)

    def diverged(self, what):
        """Stop a run whose numbers are no longer finite, with what it kept to go on from at a lower rate."""
        when = (f"at epoch {self.epochs_done + 1}, step {self.step}" if self.step
                else f"by the end of epoch {self.epochs_done}")
        raise Diverged(f"{what} {when}", dict(self.saved))

    def stop(self, requests):
        """Save where the run stands and end it as the signal asked."""
        self.save(LAST)
        # The other ranks wait for the checkpoint: the launcher ends every rank once one has exited.
        self.ranks.barrier()
        signum = requests[0] if requests else signal.SIGTERM
        raise Interrupted(f"{signal.Signals(signum).name} at epoch {self.epochs_done + 1}, step {self.step}", signum,
                          self.path(LAST))
