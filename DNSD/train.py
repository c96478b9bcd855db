"""`--mode train`: its flags, and the path they choose: a new run, the continuation of one (--resume) or a branch of
one (--resume --branch), all in training/run.py; or a worker of a sweep, which --seeds without a grid is too."""
import yaml

from DNSD.config import SWEEP_SECTION, add_config_flags, build_config, explicit_values, stated_values
from DNSD.errors import InputError
from DNSD.reporting.tables import summarize_sweep
from DNSD.runs.folder import default_run_dir, sweep_folders
from DNSD.sweeps.grid import open_sweep, parse_seeds, read_grid, resume_sweep, worker_overrides
from DNSD.sweeps.launchers import launch
from DNSD.sweeps.workers import work
from DNSD.training.run import resume, start


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
        launch(args.launcher, folder, passed, args, summarize_sweep)
    else:
        work(folder, passed, summarize_sweep)


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
        start(config)
