"""--launcher: a sweep's workers started through submitit, as processes of this machine (local) or the tasks of one
Slurm job array (slurm). A task stopped by its time limit or a preemption saves its run and is requeued to resume it."""
import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time

from DNSD.errors import InputError, TrainingStopped, one_line
from DNSD.sweeps.grid import progress, read_sweep, run_state, sweep_runs
from DNSD.sweeps.workers import Worker
from DNSD.system.nvidia_smi import read_gpus

SUBMITIT_FOLDER = "submitit"  # in the sweep folder: submitit's scripts, pickles and each task's log
LOCAL_TIME_LIMIT = 7 * 24 * 60  # minutes: submitit stops a local task at its limit (2 minutes by default)
MAX_WORKERS = 10_000
ARRAY_PARALLELISM = 256  # submitit's default: the tasks of the array that run at once
NVIDIA_SMI_SECONDS = 30
SAVE_SECONDS = 60  # what a training process gets to save and stop before the task is requeued
SBATCH_SECONDS = 120  # sbatch answers in seconds; one that hangs (a stuck controller) is stopped


class SweepTask:
    """One worker, as a submitit task (submitit calls its checkpoint before a time limit or a preemption)."""

    def __init__(self, folder, passed, summarize=None):
        self.folder, self.passed, self.summarize, self.worker = folder, passed, summarize, None

    def __call__(self, index):
        self.worker = Worker(self.folder, self.passed, self.summarize)
        self.worker.work()

    def checkpoint(self, index):
        """The run in training saves and stops; the requeued task claims it again and resumes it."""
        import submitit

        if self.worker is not None:  # stopped even between runs: it claims no other
            self.worker.stop(signal.SIGTERM)
            if self.worker.child is not None:
                wait_for_exit(self.worker.child.pid, SAVE_SECONDS)
        return submitit.helpers.DelayedSubmission(SweepTask(self.folder, self.passed, self.summarize), index)

    def __getstate__(self):
        return {"folder": self.folder, "passed": self.passed, "summarize": self.summarize, "worker": None}


def wait_for_exit(pid, seconds):
    """Wait for a child to exit without reaping it (WNOWAIT): the Popen.wait that the signal interrupted still owns
    its exit status."""
    deadline = time.monotonic() + seconds
    try:
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None and time.monotonic() < deadline:
            time.sleep(0.2)
    except ChildProcessError:  # reaped already
        pass


def sbatch_options(pairs):
    """{option: value} of --sbatch KEY=VALUE flags."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--sbatch {pair}: expected KEY=VALUE, e.g. --sbatch account=myproject")
        options[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return options


def executor(kind, folder, options):
    """submitit's executor of the launcher, its parameters set from the --launcher flags."""
    try:
        import submitit
    except ImportError:
        raise InputError(f"--launcher {kind} needs submitit: pip install 'dnsd[slurm]' (or pip install "
                         "submitit)") from None
    logs = os.path.join(folder, SUBMITIT_FOLDER, "%j")
    if kind == "local":
        chosen = submitit.LocalExecutor(logs)
        chosen.update_parameters(timeout_min=options.time_limit or LOCAL_TIME_LIMIT)
        return chosen
    class TimedSlurmExecutor(submitit.SlurmExecutor):
        """submitit's, with sbatch run under coreutils' timeout: DNSD calls no other Slurm command."""

        def _make_submission_command(self, submission_file_path):
            return ["timeout", "--kill-after=5", str(SBATCH_SECONDS), *super()._make_submission_command(
                submission_file_path)]

    try:
        chosen = TimedSlurmExecutor(logs)
    except RuntimeError:
        raise InputError("--launcher slurm: srun is not on this machine's PATH; submit from a Slurm login node, or "
                         "use --launcher local") from None
    gpus, parallel = options.gpus_per_task, options.array_parallelism
    parameters = {"job_name": "dnsd-sweep", "gpus_per_node": 1 if gpus is None else gpus, "ntasks_per_node": 1,
                  "array_parallelism": parallel or ARRAY_PARALLELISM,
                  "additional_parameters": sbatch_options(options.sbatch)}
    if options.partition:
        parameters["partition"] = options.partition
    if options.time_limit:
        parameters["time"] = options.time_limit
    chosen.update_parameters(**parameters)
    return chosen


def visible_gpus():
    """The indices of the GPUs this process may use: CUDA_VISIBLE_DEVICES's where it lists numbers, else
    nvidia-smi's; none on a machine without an NVIDIA GPU."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [entry.strip() for entry in listed.split(",") if entry.strip()]
        return [int(entry) for entry in entries] if all(entry.isdigit() for entry in entries) else []
    smi = shutil.which("nvidia-smi")
    return list(range(len(read_gpus(smi, NVIDIA_SMI_SECONDS)[1]))) if smi else []


def submit_array(chosen, task, workers):
    """The jobs of a Slurm array, or one line naming sbatch, its exit code and its first line of output."""
    import submitit

    said = io.StringIO()
    slurm = sys.modules[type(chosen).__mro__[1].__module__]
    # submitit submits an array through a new SlurmExecutor of its module's: for the call, the timed one
    plain, slurm.SlurmExecutor = slurm.SlurmExecutor, type(chosen)
    try:
        with contextlib.redirect_stderr(said):  # submitit prints a failed sbatch's output; it goes in the line
            return chosen.map_array(task, range(workers))
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as error:
        failed = error.__cause__ if isinstance(error.__cause__, subprocess.CalledProcessError) else None
        code = failed and failed.returncode
        output = (failed and (failed.stderr or failed.output)) or said.getvalue() or str(error)
        first = next((line.strip() for line in str(output).splitlines() if line.strip()), "no output")
        what = f"did not answer within {SBATCH_SECONDS} s and was stopped" if code in (124, 137) else \
            f"failed (exit {code})" if code else "printed no job id"
        raise InputError(f"sbatch {what}: {one_line(first, 200)}; check the --sbatch options and the cluster, then "
                         "start the same command again") from None
    finally:
        slurm.SlurmExecutor = plain


def launch(kind, folder, passed, options, summarize=None):
    """Start the workers; local ones are waited for, Slurm's array is left to the queue. summarize: as work()'s."""
    recorded = read_sweep(folder)
    runs = sweep_runs(folder, recorded["grid"], recorded["seeds"])
    left = sum(run_state(run_dir) != "finished" for _, _, run_dir in runs)
    gpus = visible_gpus() if kind == "local" else []
    for flag, value, low, high in (("--workers", options.workers, 1, MAX_WORKERS),
                                   ("--gpus-per-task", options.gpus_per_task, 0, 64),
                                   ("--array-parallelism", options.array_parallelism, 1, MAX_WORKERS),
                                   ("--time-limit", options.time_limit, 1, 366 * 24 * 60)):
        if value is not None and not low <= value <= high:
            raise InputError(f"{flag} {value}: expected {low} to {high}")
    workers = options.workers or (max(1, len(gpus)) if kind == "local" else left)
    if not left:
        print(f"DNSD sweep: nothing left to train ({progress(runs)}); no worker started")
        return
    chosen = executor(kind, folder, options)
    if kind == "slurm":
        jobs = submit_array(chosen, SweepTask(folder, passed, summarize), workers)
        print(f"DNSD sweep: Slurm job array {jobs[0].job_id.split('_')[0]} of {workers} task(s) submitted for "
              f"{left} run(s) left; logs in {os.path.join(folder, SUBMITIT_FOLDER)}; progress: dnsd summary --runs "
              f"{folder}")
        return
    jobs = []
    for index in range(workers):
        if gpus:  # one GPU per worker, in turn
            chosen.update_parameters(gpus_per_node=1, visible_gpus=[gpus[index % len(gpus)]])
        jobs.append(chosen.submit(SweepTask(folder, passed, summarize), index))
    print(f"DNSD sweep: {workers} local worker(s) for {left} run(s) left; logs in "
          f"{os.path.join(folder, SUBMITIT_FOLDER)}", flush=True)
    failed = []
    for index, job in enumerate(jobs):
        try:
            job.result()
        except Exception as error:  # submitit raises the task's own failure as FailedJobError
            failed.append(f"worker {index} ({job.paths.stdout}): {one_line(str(error).strip().splitlines()[-1])}")
    if failed:
        raise TrainingStopped(f"{len(failed)} of {workers} workers failed: {'; '.join(failed)}")
    print(f"DNSD sweep: {progress(runs)}")
