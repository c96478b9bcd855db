"""`--mode train`: a new run, the continuation of one (--resume), or a branch of one (--resume --branch), each ending
with the test error of its best-validation checkpoint, as the paper reports."""
import os

import paddle
import yaml

from DNSD.config import SWEEP_SECTION, add_config_flags, build_config, explicit_values, stated_values
from DNSD.datasets import load_splits
from DNSD.engine.checkpoint import check_resume_state, check_same_data, load_checkpoint, restore_model
from DNSD.engine.device import describe_device, select_run_device
from DNSD.engine.ranks import Ranks, join_ranks
from DNSD.engine.meters import hyperparameters, write_final_dashboard
from DNSD.engine.run_folder import (BEST, BRANCH, CONFIG, LAST, POINTS, SUMMARY, default_run_dir, for_branch,
                                    for_checkpoint, read_points, read_records, refuse_existing_run, remove,
                                    remove_temporaries, sweep_folders, write_records, written_files)
from DNSD.engine.locks import run_lock
from DNSD.engine.manifest import append_manifest, describe_environment
from DNSD.engine.launchers import launch
from DNSD.engine.sweep import open_sweep, parse_seeds, read_grid, resume_sweep, worker_overrides
from DNSD.engine.workers import work
from DNSD.engine.trainer import Trainer, this_command
from DNSD.errors import InputError
from DNSD.engine.reports import format_report, write_report
from DNSD.files import write_json, write_text
from DNSD.models import build_model


def where_it_runs(device, ranks):
    """The device, Paddle's build and, in a data-parallel run, the number of processes, for the start line."""
    described = describe_device(device)
    return described if ranks.world_size == 1 else f"{ranks.world_size} data-parallel processes, each on {described}"


def train(config):
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
                  f"{len(data.test):,} test images, {config.train.epochs} epochs on {where_it_runs(device, ranks)}; "
                  f"run folder {run_dir}")
        Trainer(config, run_dir, data, model, ranks=ranks, environment=environment).train()
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


def resume(target, stated, branch_dir=None):
    """Continue a run from its last checkpoint or the one named; with branch_dir, a new run there from that
    checkpoint with the stated changes, the source left as it is."""
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
    data = load_splits(config, state["normalizer"])
    check_same_data(state, data, path)
    with run_lock(run_dir, take=ranks.writes):
        if file_version(path) != written:  # the run that held the folder saved again before it ended
            state = load_checkpoint(path)
        if branch_dir:
            refuse_existing_run(branch_dir, config.run.overwrite)
        model = restore_model(state, path)
        check_resume_state(state, model, path, -(-len(data.train) // config.train.batch_size))
        trainer = Trainer(config, run_dir, data, model, state, ranks, branched=bool(branch_dir))
        if ranks.writes:
            if branch_dir:
                remove(written_files(branch_dir))
                write_text(trainer.path(CONFIG), config.to_yaml())
                write_json(trainer.path(BRANCH), {"from": os.path.abspath(path), "epochs_done": state[
                    "epochs_done"], "step": state["step"], "changes": changes})
            else:
                remove_temporaries(run_dir)
            trainer.environment = append_manifest(run_dir, describe_environment(device, config.run, data.identity,
                                                                                ranks.world_size))
            # Lines written after the checkpoint belong to work that is about to be redone.
            write_records(run_dir, trainer.history)
            if config.run.eval_every_steps:  # a point measured after the checkpoint is measured again
                write_records(run_dir, trainer.points, POINTS)
            what = f"branching {path} into {run_dir}" if branch_dir else f"resuming {run_dir}"
            print(f"DNSD: {what} at epoch {trainer.epochs_done + 1}, step {trainer.step}, on "
                  f"{where_it_runs(device, ranks)}")
        trainer.train()
        return finish(run_dir, data, config, ranks)


def last_test_error(run_dir, best_state, best_result, data, config):
    """The test error at the last epoch (the paper reports the best-validation one; the last one shows what picking
    it gained): the best checkpoint's when it is the last epoch's, else last.pdckpt's, evaluated as best.pdckpt is."""
    if best_state["epochs_done"] == config.train.epochs:  # a finished run's last.pdckpt is its last epoch's
        return best_result["error"]
    path = os.path.join(run_dir, LAST)
    state = load_checkpoint(path)
    return write_report(restore_model(state, path), state, path, data, "test", config.train.batch_size)["error"]


def finish(run_dir, data, config, ranks=Ranks()):
    """Test the best-validation checkpoint, as the paper reports, and write the run's summary (rank 0 alone)."""
    if not ranks.writes:
        return None
    best_path = os.path.join(run_dir, BEST)
    state = load_checkpoint(best_path)
    model = restore_model(state, best_path)
    result = write_report(model, state, best_path, data, "test", config.train.batch_size)
    best_val_error = state["best"]["val_error"]
    records, points = read_records(run_dir, ["val_error"]), read_points(run_dir)
    summary = {"best_epoch": state["best"]["epoch"], "best_val_error": best_val_error,
               "test_error": result["error"], "last_test_error": last_test_error(run_dir, state, result, data, config),
               "checkpoint": os.path.abspath(best_path), "data": data.identity,
               "best_on_tie": config.run.best_on_tie,
               # Every epoch that reached the lowest validation error: the earliest and the latest are the two rules.
               "tied_best_epochs": [record["epoch"] for record in records if record["val_error"] == best_val_error]}
    if points:  # run.eval_every_steps: the best is a point, and the ties are points
        summary["best_iteration"] = state["best"]["iteration"]
        summary["tied_best_epochs"] = sorted({point["epoch"] for point in points
                                              if point["val_error"] == best_val_error})
        summary["tied_best_iterations"] = [point["iteration"] for point in points
                                           if point["val_error"] == best_val_error]
    write_json(os.path.join(run_dir, SUMMARY), summary)
    write_final_dashboard(run_dir, records, points, hyperparameters(config.to_dict()), summary)
    print(format_report(result, "test", result["report"]))
    where = f"step {summary['best_iteration']} (epoch {summary['best_epoch']})" if points else \
        f"epoch {summary['best_epoch']}"
    print(f"best {where}: val error {summary['best_val_error']:.2f} %, "
          f"test error {summary['test_error']:.2f} %  ({best_path})")
    return summary


def add_arguments(parser):
    parser.add_argument("--resume", nargs="?", const="", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR (default: --output-dir) from its last.pdckpt, or from the "
                             "checkpoint named (RUN_DIR/best.pdckpt)")
    parser.add_argument("--branch", metavar="NEW_DIR",
                        help="with --resume: start a new run in NEW_DIR from that checkpoint, with changed training "
                             "keys (e.g. -o train.lr=0.01), the source run left as it is")
    parser.add_argument("--seeds", metavar="SEEDS",
                        help="one run per seed (0,1,2 or 0-3), a sweep without a grid: into OUTPUT_DIR/seed-K, then "
                             "their summary; --resume OUTPUT_DIR continues the unfinished ones")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    add_sweep_arguments(parser)
    add_config_flags(parser)


def add_sweep_arguments(parser):
    group = parser.add_argument_group("sweeps and clusters (docs/sweeps.md)")
    group.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="train every combination of the swept values (repeatable; also a config file's sweep: "
                            "section) times --seeds, each run in OUTPUT_DIR/KEY=VALUE,.../seed-K; the same command "
                            "started again, here or on another machine, shares the runs")
    group.add_argument("--launcher", choices=("local", "slurm"),
                       help="start the sweep's workers through submitit: processes of this machine, or a Slurm job "
                            "array (default: this command is one worker)")
    group.add_argument("--workers", type=int, metavar="N",
                       help="workers to start (default: local, one per visible GPU or 1; slurm, one per run left)")
    group.add_argument("--partition", help="Slurm partition")
    group.add_argument("--time-limit", type=int, metavar="MINUTES",
                       help="each task's time limit; a task that reaches it saves its run and is requeued")
    group.add_argument("--gpus-per-task", type=int, metavar="N", help="GPUs of each Slurm task (default: 1)")
    group.add_argument("--array-parallelism", type=int, metavar="N", help="Slurm tasks that run at once (default: 256)")
    group.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                       help="another sbatch option, e.g. --sbatch account=myproject (repeatable)")


def work_on_sweep(folder, args, explicit):
    """Be a worker of the sweep in folder, or start its workers through --launcher."""
    passed = worker_overrides(explicit)
    if args.launcher:
        launch(args.launcher, folder, passed, args)
    else:
        work(folder, passed)


def execute(args):
    if args.branch is not None and args.resume is None:
        raise InputError("--branch NEW_DIR starts from a checkpoint: give it with --resume RUN_DIR (or a .pdckpt)")
    if args.seeds is not None and args.resume is not None:
        raise InputError("--resume OUTPUT_DIR continues the seeds its sweep lists; leave out --seeds")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    stated = stated_values(args.config, args, args.override)
    config = build_config(stated)
    explicit = explicit_values(args, args.override)
    grid = read_grid(args.config, args.sweep, explicit)
    if (args.launcher or args.workers is not None) and not (grid or seeds or args.resume is not None):
        raise InputError("--launcher and --workers start a sweep's workers: give the grid with --sweep KEY=V1,V2 "
                         "or the seeds with --seeds")
    if args.workers is not None and not args.launcher:
        raise InputError("--workers N starts workers through --launcher local or slurm; without it, this command is "
                         "one worker (start it N times)")
    slurm_only = [flag for flag, value in (("--partition", args.partition), ("--sbatch", args.sbatch),
                                           ("--gpus-per-task", args.gpus_per_task),
                                           ("--array-parallelism", args.array_parallelism)) if value]
    if slurm_only and args.launcher != "slurm":
        raise InputError(f"{slurm_only[0]} is an option of the Slurm job array: give it with --launcher slurm")
    if args.print_config:
        print(config.to_yaml(), end="")
        if grid:
            print(yaml.safe_dump({SWEEP_SECTION: grid}, sort_keys=False), end="")
    elif args.resume is not None:
        if not (args.resume or config.run.output_dir):
            raise InputError("--resume needs the run's folder: --resume RUN_DIR (its start line named it)")
        target = args.resume or config.run.output_dir
        if sweep_folders([target]) and args.branch is None:
            resume_sweep(target, {key: value for key, value in stated.items() if key != "run.output_dir"})
            work_on_sweep(target, args, explicit)
        else:
            resume(target, stated, args.branch)
    elif grid or seeds is not None:
        if config.run.output_dir is None:
            config.run.output_dir = default_run_dir(args.config, explicit, config, numbered=False)
        open_sweep(config, grid, seeds or [config.run.seed])
        work_on_sweep(config.run.output_dir, args, explicit)
    else:
        if config.run.output_dir is None:
            config.run.output_dir = default_run_dir(args.config, explicit, config)
        train(config)
