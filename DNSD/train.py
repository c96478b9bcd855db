"""Training: the paper's recipe, the best-validation checkpoint, and the test error of that checkpoint at the end.

A run can stop at any step (a signal, a kill) and continue from its last checkpoint as if it had not: the checkpoint
holds the weights, the optimiser and scheduler, and the position in the epoch with its running totals; every random
draw is derived from (seed, epoch, step), so nothing else is needed to redo the same steps.
"""
import contextlib
import json
import math
import os
import signal
import sys
import time

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm
from visualdl import LogWriter

from DNSD.architectures import build_model
from DNSD.checkpoint import load_checkpoint, restore_model, save_checkpoint
from DNSD.files import write_json, write_text
from DNSD.config import for_branch, for_checkpoint
from DNSD.data import TrainingBatches, load_cifar, prefetched
from DNSD.device import describe_device, select_run_device
from DNSD.errors import DNSDError, InputError, TrainingStopped
from DNSD.eval import evaluate, format_report, report_checkpoint
from DNSD.run_folder import check_writable, refuse_existing_run, remove, remove_temporaries, run_lock, written_files
from DNSD.runtime import Ranks, generator, join_ranks, weights_digest
from DNSD.stochastic_depth import sample_gates

PROGRESS_EVERY = 10  # steps between progress-bar updates


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


@contextlib.contextmanager
def stop_requests():
    """Turn SIGINT and SIGTERM into a request that the loop answers after the current step; a second SIGINT
    interrupts at once."""
    requests = []

    def request(signum, frame):
        requests.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {signum: signal.signal(signum, request) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requests
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def fresh_totals():
    return {"loss_sum": 0.0, "correct": 0, "active_blocks": 0, "steps": 0, "seen": 0, "seconds": 0.0}


def renamed(optimizer_state, model, to_structured=True):
    """The optimiser's state with its keys' parameter names (conv2d_28.w_0_velocity_0) turned into the model's
    structured ones (stages.0.1.conv1.weight_velocity_0), or back. Paddle names parameters from a process-wide
    counter, so the same network built after another in one process gets other names; a checkpoint must not depend
    on that. Keys of no parameter (the scheduler's) stay as they are."""
    names = {parameter.name: name for name, parameter in model.named_parameters()}
    names = names if to_structured else {name: parameter for parameter, name in names.items()}
    result = {}
    for key, value in optimizer_state.items():
        cuts = [index for index, character in enumerate(key) if character == "_" and key[:index] in names]
        result[names[key[:cuts[0]]] + key[cuts[0]:] if cuts else key] = value
    return result


def non_finite_tensors(tensors):
    """How many of the tensors hold a NaN or an infinity: computed on the device, read back once."""
    tensors = [tensor for tensor in tensors if isinstance(tensor, paddle.Tensor)]
    finite = paddle.stack([paddle.isfinite(tensor).all() for tensor in tensors])
    return int((~finite).astype("int32").sum())


class Trainer:
    def __init__(self, config, run_dir, data, model, state=None, ranks=Ranks(), branched=False):
        self.config, self.run_dir, self.data, self.model, self.ranks = config, run_dir, data, model, ranks
        check_shards(len(data.train), config.train.batch_size, ranks.world_size)
        self.optimizer, self.scheduler = build_optimizer(config.train, model)
        # float16 needs loss scaling to keep small gradients; bfloat16 has float32's range and does not.
        self.scaler = paddle.amp.GradScaler() if config.train.amp == "float16" else None
        # Every parameter gets a zero gradient now, and clear_grad(set_to_zero=True) keeps it allocated: a block that a
        # step drops is then still updated by weight decay and momentum, as in the authors' optimiser, from the first
        # step of a run and of a resumed run alike.
        (0 * sum(p.sum() for p in model.parameters() if not p.stop_gradient)).backward()
        # The blocks a step drops are the same on every rank, but they leave parameters without a gradient, which
        # the all-reduce must be told to expect.
        self.network = paddle.DataParallel(model, find_unused_parameters=True) if ranks.world_size > 1 else model
        self.steps_per_epoch = math.ceil(len(data.train) / config.train.batch_size)
        # Where the run stands: epochs finished, batches of the next one done, and its running totals.
        self.epochs_done, self.step, self.totals = 0, 0, fresh_totals()
        self.history, self.best = [], {"epoch": 0, "val_error": math.inf}
        # The checkpoints in the run folder, by name: (epochs done, step) of what each holds.
        self.saved = {}
        if state is not None:
            self.optimizer.set_state_dict(renamed(state["optimizer"], model, to_structured=False))
            self.scheduler.set_state_dict(state["scheduler"])
            if self.scaler:
                self.scaler.load_state_dict(state["scaler"])
            self.epochs_done, self.step = state["epochs_done"], state["step"]
            self.totals, self.history = state["totals"], state["history"]
            if branched:
                # A branch follows its own config's schedule from here, and picks its best among its own epochs.
                self.scheduler.step(self.epochs_done)
            else:
                self.best = state["best"]
                self.saved["last.pdckpt"] = (self.epochs_done, self.step)
                if self.best["epoch"]:
                    self.saved["best.pdckpt"] = (self.best["epoch"], 0)

    def state(self):
        """Everything a checkpoint needs to evaluate this model or to continue this run exactly."""
        return {"config": self.config.to_dict(), "num_classes": self.data.num_classes, "classes": self.data.classes,
                "normalizer": self.data.normalizer.state(), "model": self.model.state_dict(),
                "optimizer": renamed(self.optimizer.state_dict(), self.model),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "epochs_done": self.epochs_done, "step": self.step, "totals": self.totals,
                "history": self.history, "best": self.best, "data": self.data.identity,
                "paddle_version": paddle.__version__}

    def path(self, name):
        return os.path.join(self.run_dir, name)

    def save(self, name):
        """Write a checkpoint, never one that holds a NaN or an infinity: weights, batch-norm statistics and the
        optimiser's state are checked first, and training stops with the earlier checkpoints as they were."""
        if not self.ranks.writes:
            return
        tensors = [*self.model.state_dict().values(), *self.optimizer.state_dict().values()]
        broken = non_finite_tensors(tensors)
        if broken:
            self.diverged(f"{broken} of the model's and the optimiser's tensors became non-finite (NaN or infinite)")
        save_checkpoint(self.path(name), self.state())
        self.saved[name] = (self.epochs_done, self.step)

    def diverged(self, what):
        """Stop a run whose numbers are no longer finite, naming what is kept and the command that goes on from it."""
        kept = [f"{self.path(name)} (epoch {epochs + (step > 0)}{f', step {step}' if step else ''})"
                for name, (epochs, step) in sorted(self.saved.items())]
        source = self.path("last.pdckpt") if "last.pdckpt" in self.saved else self.path("best.pdckpt")
        lower = self.config.train.lr * 0.1
        way_on = (f"; to go on with a lower learning rate: {this_command()} --resume {source} --branch "
                  f"{self.run_dir}-lr{lower:g} -o train.lr={lower:g}" if kept else
                  f"; to start again with a lower learning rate: {this_command()} --config "
                  f"{self.path('config.yaml')} --overwrite -o train.lr={lower:g}")
        when = (f"at epoch {self.epochs_done + 1}, step {self.step}" if self.step
                else f"by the end of epoch {self.epochs_done}")
        raise TrainingStopped(f"{what} {when}; training stopped, "
                              f"{'kept ' + ' and '.join(kept) if kept else 'no checkpoint had been written'}{way_on}")

    def run(self):
        epochs = self.config.train.epochs
        log = LogWriter(logdir=self.path("vdl")) if self.ranks.writes else contextlib.nullcontext()
        with stop_requests() as requests, log as writer:
            while self.epochs_done < epochs:
                batches = TrainingBatches(self.data, self.config.train.batch_size, self.config.data.augment,
                                          self.config.run.seed, self.epochs_done + 1, self.step, self.ranks)
                self.model.begin_epoch(self.epochs_done + 1)
                self.model.train()  # once an epoch: validation left it in eval mode
                with tqdm(total=self.steps_per_epoch, initial=self.step, desc=f"epoch {self.epochs_done + 1}/{epochs}",
                          unit="batch", leave=False, disable=None if self.ranks.writes else True) as progress:
                    tick = time.perf_counter()
                    for images, labels in prefetched(batches, self.config.data.prefetch, self.config.data.pin_memory):
                        stop = self.train_step(images, labels, bool(requests))
                        # Wall time per step, waiting for data included: what images per second should mean.
                        self.totals["seconds"] += time.perf_counter() - tick
                        progress.update(1)
                        if self.step % PROGRESS_EVERY == 0:
                            progress.set_postfix(loss=f"{self.totals['loss_sum'] / self.totals['seen']:.3f}",
                                                 img_s=f"{self.totals['seen'] / self.totals['seconds']:.0f}")
                        if stop:
                            self.stop(requests)
                        every = self.config.run.checkpoint_every_steps
                        if every and (self.epochs_done * self.steps_per_epoch + self.step) % every == 0:
                            self.save("last.pdckpt")
                        tick = time.perf_counter()
                self.end_epoch(writer)
                if self.ranks.sum([len(requests)])[0]:
                    self.stop(requests)
        if self.ranks.world_size > 1:
            print(f"DNSD: rank {self.ranks.rank} of {self.ranks.world_size} ends with weights sha256 "
                  f"{weights_digest(self.model)}", flush=True)

    def train_step(self, images, labels, stop_requested=False):
        """One optimiser step on this rank's share of a mini-batch; returns whether any rank was asked to stop."""
        size = self.config.train.batch_size
        batch_images = min(size, len(self.data.train) - self.step * size)  # global; an epoch's last is short
        # Per-example gates are drawn for the global mini-batch; each rank takes the columns of its examples.
        per_example = self.model.gates_per_example
        gates = sample_gates(self.model.survival_probabilities,
                             generator(self.config.run.seed, "gates", self.epochs_done + 1, self.step),
                             batch_images if per_example else None)
        local_gates = gates[:, self.ranks.shard(batch_images)] if per_example else gates
        active_blocks = gates.mean(axis=1) if per_example else gates.astype(np.float64)
        amp = self.config.train.amp
        with paddle.amp.auto_cast(enable=amp != "off", dtype="float16" if amp == "off" else amp):
            logits = self.network(images, local_gates)
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
        # The all-reduce averages the ranks' gradients: scaled so, each rank's loss adds up to the global batch's mean.
        loss = loss_sum * (self.ranks.world_size / batch_images)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        correct = (logits.argmax(axis=1) == labels).astype("int64").sum()
        # One small all-reduce a step: the global loss and accuracy, any stop request, and each block's share of open
        # gates, to check that the ranks agree.
        summed = self.ranks.sum([loss_sum.item(), correct.item(), stop_requested, *active_blocks])
        if not np.array_equal(summed[3:], active_blocks * self.ranks.world_size):
            raise DNSDError(f"the data-parallel ranks drew different gates at epoch {self.epochs_done + 1}, step "
                            f"{self.step + 1}; they must derive them from the same run.seed")
        loss_value = summed[0] / batch_images
        if not math.isfinite(loss_value):
            self.step += 1  # the step that diverged, for the message
            self.diverged(f"the training loss became {loss_value}")
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.clear_grad(set_to_zero=True)
        self.step += 1
        totals = self.totals
        totals["loss_sum"] += float(summed[0])
        totals["correct"] += int(summed[1])
        totals["active_blocks"] += float(active_blocks.sum())
        totals["steps"] += 1
        totals["seen"] += batch_images
        return bool(summed[2])

    def end_epoch(self, writer):
        started = time.perf_counter()
        totals = self.totals
        self.ranks.share_statistics(self.model)
        val_error = evaluate(self.model, self.data.val, self.data.normalizer, self.config.train.batch_size,
                             self.data.classes, self.ranks)["error"]
        epoch = self.epochs_done + 1
        record = {"epoch": epoch, "train_loss": totals["loss_sum"] / totals["seen"],
                  "train_error": 100.0 - 100.0 * totals["correct"] / totals["seen"],
                  "mean_active_blocks": totals["active_blocks"] / totals["steps"], "val_error": val_error,
                  "lr": self.optimizer.get_lr(), "epoch_seconds": totals["seconds"] + time.perf_counter() - started,
                  "images_per_second": totals["seen"] / totals["seconds"]}
        self.scheduler.step()
        improved = val_error < self.best["val_error"]
        if improved:
            self.best = {"epoch": epoch, "val_error": val_error}
        self.history.append(record)
        self.epochs_done, self.step, self.totals = epoch, 0, fresh_totals()
        if improved:
            self.save("best.pdckpt")
        if epoch % self.config.run.checkpoint_every == 0 or epoch == self.config.train.epochs:
            self.save("last.pdckpt")
        if self.ranks.writes:
            log_epoch(writer, self.path("metrics.jsonl"), record, improved, self.config.train.epochs)

    def stop(self, requests):
        self.save("last.pdckpt")
        # The other ranks wait for the checkpoint: the launcher ends every rank once one has exited.
        self.ranks.barrier()
        signum = requests[0] if requests else signal.SIGTERM
        again = this_command() if self.ranks.world_size == 1 else "the same paddle.distributed.launch command and"
        raise TrainingStopped(f"{signal.Signals(signum).name} at epoch {self.epochs_done + 1}, step {self.step}: saved "
                              f"{self.path('last.pdckpt')}; continue with: {again} --resume {self.run_dir}",
                              exit_code=128 + signum, label="stopped")


def check_shards(num_images, batch_size, world_size):
    """Refuse a mini-batch that cannot give every data-parallel rank at least one image."""
    last_batch = num_images % batch_size or batch_size
    if min(batch_size, last_batch) < world_size:
        raise InputError(f"{world_size} data-parallel processes need at least {world_size} images in every "
                         f"mini-batch, but train.batch_size {batch_size} with {num_images} training images leaves "
                         f"{min(batch_size, last_batch)}; change --batch-size or --val-size")


def log_epoch(writer, metrics_path, record, improved, epochs):
    # Networks without stochastic depth have no blocks to drop, and log 0.
    active = f"active blocks {record['mean_active_blocks']:.2f}  " if record["mean_active_blocks"] else ""
    with open(metrics_path, "a") as stream:
        stream.write(json.dumps(record) + "\n")
    for key, value in record.items():
        if key != "epoch":
            writer.add_scalar(tag=key, value=value, step=record["epoch"])
    print(f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  train error {record['train_error']:.2f} %"
          f"  val error {record['val_error']:.2f} %{' (best)' if improved else ''}  lr {record['lr']:g}  "
          f"{active}{record['epoch_seconds']:.0f} s  "
          f"{record['images_per_second']:.0f} img/s", flush=True)


def set_up(config, normalizer_state=None):
    """The data of a run, split by its seed: its own statistics, or a checkpoint's."""
    return load_cifar(config.data, generator(config.run.seed, "split"), normalizer_state)


def where_it_runs(device, ranks):
    """The device, Paddle's build and, in a data-parallel run, the number of processes, for the start line."""
    described = describe_device(device)
    return described if ranks.world_size == 1 else f"{ranks.world_size} data-parallel processes, each on {described}"


def this_command():
    """How the user starts DNSD again: the running interpreter (a virtual environment's, which has Paddle)."""
    return f"{sys.executable} -m DNSD"


def train(config):
    """Start a new run as config says; returns its summary (best epoch, validation and test error)."""
    run_dir = config.run.output_dir
    # First the device: a machine whose GPU Paddle cannot use is refused before anything is written.
    device = select_run_device(config.run)
    ranks = join_ranks()
    # The data before the lock: a bad archive leaves no trace, not even a new folder.
    data = set_up(config)
    # A relative data_file would name another file from another folder: the run keeps the resolved path.
    config.data.data_file = data.identity["file"] if config.data.data_file else None
    with run_lock(run_dir, take=ranks.writes):
        refuse_existing_run(run_dir, config.run.overwrite)
        # Every rank has checked the run folder before rank 0 changes it.
        ranks.barrier()
        if ranks.writes:
            remove(written_files(run_dir))
            write_text(os.path.join(run_dir, "config.yaml"), config.to_yaml())
        paddle.seed(config.run.seed)
        model = build_model(config.model, data.num_classes)
        if ranks.writes:
            print(f"DNSD: {model.name()}, {len(data.train):,} train / {len(data.val):,} val / "
                  f"{len(data.test):,} test images, {config.train.epochs} epochs on {where_it_runs(device, ranks)}; "
                  f"run folder {run_dir}")
        Trainer(config, run_dir, data, model, ranks=ranks).run()
        return finish(run_dir, data, config, ranks)


def resume_source(target):
    """The checkpoint --resume continues from: RUN_DIR/last.pdckpt, or the .pdckpt file named."""
    if target.endswith(".pdckpt"):
        return target
    path = os.path.join(target, "last.pdckpt")
    if os.path.isfile(path):
        return path
    again = f"start it again with: {this_command()} --config {os.path.join(target, 'config.yaml')} --overwrite"
    if os.path.isfile(os.path.join(target, "best.pdckpt")):
        raise InputError(f"{target} holds no last.pdckpt, but a best.pdckpt: continue from it with: {this_command()} "
                         f"--resume {os.path.join(target, 'best.pdckpt')}, or {again}")
    if os.path.isfile(os.path.join(target, "config.yaml")):
        raise InputError(f"{target} holds no checkpoint: the run stopped before its first one; {again}")
    raise InputError(f"{target} holds no run to resume (no last.pdckpt); pass the output folder of a training run")


def file_version(path):
    status = os.stat(path) if os.path.isfile(path) else None
    return status and (status.st_ino, status.st_size, status.st_mtime_ns)


def check_same_data(state, data, path):
    """A resume must train on the data the run began with, whatever the file is called now."""
    trained_on = state.get("data")
    if trained_on and trained_on["sha256"] != data.identity["sha256"]:
        raise InputError(f"{data.identity['file']} is not the archive {path} was trained on ({trained_on['file']}, "
                         f"{trained_on['bytes']:,} bytes, sha256 {trained_on['sha256'][:12]}...); pass that archive "
                         "with --data-file")


def resume(target, stated, branch_dir=None):
    """Continue a run from its last checkpoint (or the checkpoint named), in its folder; stated values may change
    only what keeps the result. With branch_dir: a new run in branch_dir that starts from that checkpoint with
    the stated changes (a lower learning rate after a divergence, more epochs), the source left as it is."""
    path = resume_source(target)
    run_dir = branch_dir or os.path.dirname(path) or "."
    written = file_version(path)
    state = load_checkpoint(path)
    if branch_dir:
        config, changes = for_branch(state["config"], {**stated, "run.output_dir": branch_dir})
    else:
        config = for_checkpoint(state["config"], {**stated, "run.output_dir": run_dir}, "--resume")
    device = select_run_device(config.run)
    ranks = join_ranks()
    data = set_up(config, state["normalizer"])
    check_same_data(state, data, path)
    with run_lock(run_dir, take=ranks.writes):
        if file_version(path) != written:  # the run that held the folder saved again before it ended
            state = load_checkpoint(path)
        if branch_dir:
            refuse_existing_run(branch_dir, config.run.overwrite)
        model = restore_model(state, path)
        trainer = Trainer(config, run_dir, data, model, state, ranks, branched=bool(branch_dir))
        if ranks.writes:
            if branch_dir:
                remove(written_files(branch_dir))
                write_text(trainer.path("config.yaml"), config.to_yaml())
                write_json(trainer.path("branch.json"), {"from": os.path.abspath(path), "epochs_done": state[
                    "epochs_done"], "step": state["step"], "changes": changes})
            else:
                remove_temporaries(run_dir)
            # Lines written after the checkpoint belong to work that is about to be redone.
            write_text(trainer.path("metrics.jsonl"), "".join(json.dumps(record) + "\n" for record in trainer.history))
            what = f"branching {path} into {run_dir}" if branch_dir else f"resuming {run_dir}"
            print(f"DNSD: {what} at epoch {trainer.epochs_done + 1}, step {trainer.step} of "
                  f"{trainer.steps_per_epoch}, on {where_it_runs(device, ranks)}")
        trainer.run()
        return finish(run_dir, data, config, ranks)


def finish(run_dir, data, config, ranks=Ranks()):
    """Test the best-validation checkpoint, as the paper reports, and write the run's summary (rank 0 alone)."""
    if not ranks.writes:
        return None
    best_path = os.path.join(run_dir, "best.pdckpt")
    state = load_checkpoint(best_path)
    model = restore_model(state, best_path)
    result = report_checkpoint(model, state, best_path, data, "test", config.train.batch_size)
    summary = {"best_epoch": state["best"]["epoch"], "best_val_error": state["best"]["val_error"],
               "test_error": result["error"], "checkpoint": os.path.abspath(best_path), "data": data.identity}
    write_json(os.path.join(run_dir, "summary.json"), summary)
    print(format_report(result, "test", result["report"]))
    print(f"best epoch {summary['best_epoch']}: val error {summary['best_val_error']:.2f} %, "
          f"test error {summary['test_error']:.2f} %  ({best_path})")
    return summary
