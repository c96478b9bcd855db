"""A run's life, top to bottom: the device, the ranks, the data, the lock, the folder, the trainer, and the finish:
the test error of the best-validation checkpoint, as the paper reports. A run starts new, continues (resume) or
starts from another run's checkpoint with changed training keys (branch)."""
import os
import shutil
import sys

import paddle

from DNSD.changes import for_branch, for_checkpoint
from DNSD.datasets import load_splits
from DNSD.errors import InputError, TrainingStopped
from DNSD.files import atomic_write, write_json, write_text
from DNSD.models import build_model
from DNSD.runs.chain import GENESIS, branch_origin, breaks_chain, position_link
from DNSD.runs.checkpoint import check_resume_state, check_same_data, read_state, restore_model
from DNSD.runs.folder import (
    BEST,
    BRANCH,
    BRANCH_START,
    CONFIG,
    EVALUATION_POINTS,
    LAST,
    SUMMARY,
    branched_at,
    read_evaluation_points,
    read_records,
    refuse_existing_run,
    remove,
    remove_temporaries,
    write_records,
    written_files,
)
from DNSD.runs.locks import run_lock
from DNSD.runs.manifest import append_manifest, describe_environment
from DNSD.system.device import describe_device, select_run_device
from DNSD.system.signals import stop_requests
from DNSD.training.best import ties
from DNSD.training.evaluation import format_report, write_report
from DNSD.training.loop import Diverged, Interrupted, Trainer
from DNSD.training.meters import counted, hyperparameters, write_final_dashboard
from DNSD.training.ranks import Ranks, join_ranks


def this_command():
    """How the user starts DNSD again: as they did (`bash run.sh` says so through DNSD_PROGRAM; `dnsd` where the
    one on PATH is this one), else through this interpreter (a virtual environment's, which has Paddle)."""
    if os.environ.get("DNSD_PROGRAM"):
        return os.environ["DNSD_PROGRAM"]
    if os.path.basename(sys.argv[0]) == "dnsd":
        found = shutil.which("dnsd")
        return "dnsd" if found and os.path.samefile(found, sys.argv[0]) else sys.argv[0]
    return f"{sys.executable} -m DNSD"


def where_it_runs(device, ranks):
    """The device, Paddle's build and, in a data-parallel run, the number of processes, for the start line."""
    described = describe_device(device)
    return described if ranks.world_size == 1 else f"{ranks.world_size} data-parallel processes, each on {described}"


@stop_requests()  # from the start: a signal before the first step is answered after it, saved
def start(config):
    """Start a new run as config says; returns its summary (best epoch, validation and test error)."""
    run_dir = config.run.output_dir
    # First the device: a machine whose GPU Paddle cannot use is refused before anything is written.
    device = select_run_device(config.run)
    ranks = join_ranks()
    # The data before the lock: a bad archive leaves no trace, not even a new folder.
    data = load_splits(config)
    # A relative data_file would name another file from another folder: the run keeps the resolved path.
    config.data.data_file = data.identity["file"] if config.data.data_file else None
    with run_lock(run_dir, take=ranks.writes):
        refuse_existing_run(run_dir, config.run.overwrite)
        # Every rank has checked the run folder before rank 0 changes it.
        ranks.barrier()
        environment = None
        if ranks.writes:
            remove(written_files(run_dir))
            write_text(os.path.join(run_dir, CONFIG), config.to_yaml())
            environment = append_manifest(run_dir, describe_environment(device, config.run, data.identity,
                                                                        ranks.world_size))
        paddle.seed(config.run.seed)
        model = build_model(config.model, data.num_classes)
        if ranks.writes:
            print(f"DNSD: {model.name()}, {len(data.train):,} train / {len(data.val):,} val / "
                  f"{len(data.test):,} test images, {counted(config.train.epochs, 'epoch')} on "
                  f"{where_it_runs(device, ranks)}; "
                  f"run folder {run_dir}")
        train(Trainer(config, run_dir, data, model, ranks=ranks, environment=environment))
        return finish(run_dir, data, config, ranks)


def resume_source(target):
    """The checkpoint --resume continues from: RUN_DIR/last.pdckpt, or the .pdckpt file named."""
    if target.endswith(".pdckpt"):
        return target
    path = os.path.join(target, LAST)
    if os.path.isfile(path):
        return path
    again = f"start it again with: {this_command()} --config {os.path.join(target, CONFIG)} --overwrite"
    if os.path.isfile(os.path.join(target, BEST)):
        raise InputError(f"{target} holds no {LAST}, but a {BEST}: continue from it with: {this_command()} "
                         f"--resume {os.path.join(target, BEST)}, or {again}")
    if os.path.isfile(os.path.join(target, CONFIG)):
        raise InputError(f"{target} holds no checkpoint: the run stopped before its first one; {again}")
    raise InputError(f"{target} holds no run to resume (no {LAST}); pass the output folder of a training run")


def file_version(path):
    status = os.stat(path) if os.path.isfile(path) else None
    return status and (status.st_ino, status.st_size, status.st_mtime_ns)


@stop_requests()
def resume(target, stated, branch_dir=None):
    """Continue a run from its last checkpoint or the one named; with branch_dir, a new run there from that
    checkpoint with the stated changes, the source left as it is."""
    path = resume_source(target)
    run_dir = branch_dir or os.path.dirname(path) or "."
    written = file_version(path)
    state = read_state(path)
    if branch_dir:
        config, changes = for_branch(state["config"], {**stated, "run.output_dir": branch_dir})
    else:
        config = for_checkpoint(state["config"], {**stated, "run.output_dir": run_dir}, "--resume")
    device = select_run_device(config.run)
    ranks = join_ranks()
    data = load_splits(config, state["normalizer"])
    check_same_data(state, data, path)
    with run_lock(run_dir, take=ranks.writes):
        if file_version(path) != written:  # the run that held the folder saved again before it ended
            state = read_state(path)
        if branch_dir:
            refuse_existing_run(branch_dir, config.run.overwrite)
        model = restore_model(state, path)
        check_resume_state(state, model, path, -(-len(data.train) // config.train.batch_size))
        if breaks_chain(state):
            raise InputError(f"{path} does not hold the state its run sealed for epoch {state['epochs_done']} "
                             "(state_sha256): it was altered after it was written; continue from another checkpoint")
        # A branch seals the source's state at the branch point, and keeps that checkpoint as its first epoch's start.
        branch = branch_dir and {"from": os.path.abspath(path), "epochs_done": state["epochs_done"],
                                 "step": state["step"], "changes": changes, "state_sha256": position_link(state)}
        trainer = Trainer(config, run_dir, data, model, state, ranks, branched=bool(branch_dir),
                          origin=branch_origin(branch) if branch else GENESIS)
        if ranks.writes:
            if branch_dir:
                remove(written_files(branch_dir))
                write_text(trainer.path(CONFIG), config.to_yaml())
                atomic_write(trainer.path(BRANCH_START), lambda temporary: shutil.copyfile(path, temporary))
                write_json(trainer.path(BRANCH), branch)
            else:
                remove_temporaries(run_dir)
            trainer.environment = append_manifest(run_dir, describe_environment(device, config.run, data.identity,
                                                                                ranks.world_size))
            # Lines written after the checkpoint belong to work that is about to be redone.
            write_records(run_dir, trainer.history)
            if config.run.eval_every_iterations:  # a point measured after the checkpoint is measured again
                write_records(run_dir, trainer.evaluation_points, EVALUATION_POINTS)
            what = f"branching {path} into {run_dir}" if branch_dir else f"resuming {run_dir}"
            print(f"DNSD: {what} at epoch {trainer.epochs_done + 1}, step {trainer.step}, on "
                  f"{where_it_runs(device, ranks)}")
        train(trainer)
        return finish(run_dir, data, config, ranks)


def train(trainer):
    """Train to the last epoch; a stop says how to go on from what the run folder kept (the trainer knows no
    command)."""
    try:
        trainer.train()
    except Diverged as stopped:
        raise TrainingStopped(f"{stopped.what}; training stopped, {lower_rate(trainer, stopped.kept)}") from None
    except Interrupted as stopped:
        again = this_command() if trainer.ranks.world_size == 1 else "the same paddle.distributed.launch command and"
        raise TrainingStopped(f"{stopped}; continue with: {again} --resume {trainer.run_dir}", stopped.exit_code,
                              stopped.label) from None


def lower_rate(trainer, kept):
    """How to go on at a tenth of the learning rate: from the kept checkpoints in a branch, or from the start."""
    lower = f"{trainer.config.train.lr * 0.1:g}"
    if not kept:
        return (f"no checkpoint had been written; to start again with a lower learning rate: {this_command()} "
                f"--config {trainer.path(CONFIG)} --overwrite -o train.lr={lower}")
    listed = " and ".join(f"{trainer.path(name)} (epoch {epochs + (step > 0)}{f', step {step}' if step else ''})"
                          for name, (epochs, step) in sorted(kept.items()))
    source = trainer.path(LAST if LAST in kept else BEST)
    return (f"kept {listed}; to go on with a lower learning rate: {this_command()} --resume {source} --branch "
            f"{trainer.run_dir}-lr{lower} -o train.lr={lower}")


def last_test_error(run_dir, best_state, best_result, data, config):
    """The test error at the last epoch (the paper reports the best-validation one; the last one shows what picking
    it gained): the best checkpoint's when it is the last epoch's, else last.pdckpt's, evaluated as best.pdckpt is."""
    if best_state["epochs_done"] == config.train.epochs:  # a finished run's last.pdckpt is its last epoch's
        return best_result["error"]
    path = os.path.join(run_dir, LAST)
    state = read_state(path)
    return write_report(restore_model(state, path), state, path, data, "test", config.train.batch_size)["error"]


def finish(run_dir, data, config, ranks=Ranks()):
    """Test the best-validation checkpoint, as the paper reports, and write the run's summary (rank 0 alone)."""
    if not ranks.writes:
        return None
    best_path = os.path.join(run_dir, BEST)
    state = read_state(best_path)
    model = restore_model(state, best_path)
    result = write_report(model, state, best_path, data, "test", config.train.batch_size)
    records, points = read_records(run_dir, ["val_error"]), read_evaluation_points(run_dir)
    summary = {"best_epoch": state["best"]["epoch"], "best_val_error": state["best"]["val_error"],
               "test_error": result["error"], "last_test_error": last_test_error(run_dir, state, result, data, config),
               "checkpoint": os.path.abspath(best_path), "data": data.identity,
               "images": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
               "best_on_tie": config.run.best_on_tie,
               **ties(state["best"], records, points, branched_at(run_dir) or (0, 0))}
    write_json(os.path.join(run_dir, SUMMARY), summary)
    write_final_dashboard(run_dir, records, points, hyperparameters(config.to_dict()), summary)
    print(format_report(result, "test", result["report"]))
    where = f"step {summary['best_iteration']} (epoch {summary['best_epoch']})" if points else \
        f"epoch {summary['best_epoch']}"
    print(f"best {where}: val error {summary['best_val_error']:.2f} %, "
          f"test error {summary['test_error']:.2f} %  ({best_path})")
    return summary
