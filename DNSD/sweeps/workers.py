"""A sweep's worker: any number of them, started anywhere the sweep folder is, share its runs without a coordinator.
Each claims the next run that is neither finished nor held by taking its lock, which the training process it starts
inherits; it resumes a run that a dead worker left, and ends when a pass over the runs finds nothing to claim."""
import contextlib
import ctypes
import os
import signal
import subprocess
import sys

from DNSD.errors import TrainingStopped
from DNSD.runs.folder import holds_run
from DNSD.runs.locks import INHERITED_LOCK, claim
from DNSD.sweeps.grid import BASE_CONFIG, format_value, grid_point_name, progress, read_sweep, run_state, sweep_runs

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def as_training_process():
    """In the training process, before it starts: a process group of its own, so that a terminal's Ctrl-C reaches
    the worker alone, which passes it on once (a second SIGINT would interrupt at once, unsaved); SIGTERM (and so
    save and stop) when the worker that started it dies; and SIGUSR2 ignored, which Slurm sends a job's processes
    before its time limit: submitit's handler in the worker answers it, stopping this process with SIGTERM.
    SIGINT and SIGTERM stay blocked, as the worker blocked them, until the run can answer them (stop_requests)."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, OSError):  # not Linux: a killed worker's run ends with its process group
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Worker:
    """Claims and trains a sweep's runs one at a time, each in a training process of its own; `passed`: the -o
    values of this command that may differ between runs (the device, threads, checkpoint intervals); summarize: what
    the worker that finds every run finished calls with the folder (it returns what to print)."""

    def __init__(self, folder, passed=(), summarize=None):
        self.folder, self.passed, self.summarize = folder, list(passed), summarize
        self.child, self.stopping, self.unsent, self.failed, self.last_run = None, None, [], [], None

    def command(self, point, seed, run_dir):
        """The training process of a claimed run: a resume where it has a checkpoint, else a new run (replacing what
        a run that died before its first checkpoint left)."""
        dnsd = [sys.executable, "-m", "DNSD", "train"]
        overrides = [item for key, value in self.passed for item in ("-o", f"{key}={value}")]
        if run_state(run_dir, claimed=True) == "stopped":
            return [*dnsd, "--resume", run_dir, *overrides]
        values = [item for key, value in point.items() for item in ("-o", f"{key}={format_value(value)}")]
        return [*dnsd, "--config", os.path.join(self.folder, BASE_CONFIG), *values, "-o", f"run.seed={seed}",
                "-o", f"run.output_dir={run_dir}", "-o", f"run.overwrite={format_value(bool(holds_run(run_dir)))}",
                *overrides]

    def train(self, point, seed, run_dir, runs):
        """Claim a run and train it in a process of its own, which inherits the lock; returns whether this worker
        trained it (the process's exit code) or None where it was finished or claimed by another."""
        descriptor = claim(run_dir)
        if descriptor is None:
            return None
        try:
            if run_state(run_dir, claimed=True) == "finished":
                return None
            # The training process inherits the mask, and with it waits until it can answer a signal. The mask is
            # this thread's only: another thread (Paddle's) may take a signal now, so that stop() runs before the
            # child exists and pass_on() sends it afterwards.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                if self.stopping:
                    return None
                print(f"DNSD sweep: {grid_point_name(point)} seed {seed} ({progress(runs)})", flush=True)
                self.last_run = run_dir
                self.child = subprocess.Popen(self.command(point, seed, run_dir), preexec_fn=as_training_process,
                                              pass_fds=(descriptor,),
                                              env={**os.environ, INHERITED_LOCK: str(descriptor)})
                self.pass_on()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        finally:
            os.close(descriptor)  # the training process holds the lock now
        try:
            return self.child.wait()
        finally:
            self.child = None

    def last_run_outcome(self):
        """What the signal left of the run this worker trained last, as its folder shows it."""
        if self.last_run is None:
            return "no run was in training"
        return {"finished": f"{self.last_run} finished first", "stopped": f"{self.last_run} saved and stopped",
                "new": f"{self.last_run} stopped before its first checkpoint"}[run_state(self.last_run, claimed=True)]

    def stop(self, signum, frame=None):
        """Stop after the current run has saved: the training process gets the signal and saves where it stands."""
        self.stopping = signum
        self.unsent.append(signum)
        self.pass_on()

    def pass_on(self):
        """Send the training process each signal not yet sent, once: a handler may run between any two lines here,
        but not inside list.pop."""
        child = self.child
        while child is not None:
            try:
                signum = self.unsent.pop(0)
            except IndexError:
                return
            child.send_signal(signum)

    def work(self):
        """Train runs until none is left to claim."""
        while True:
            recorded = read_sweep(self.folder)  # another command may have added points
            runs = sweep_runs(self.folder, recorded["grid"], recorded["seeds"])
            if self.stopping:
                break
            claimed = False
            for point, seed, run_dir in runs:
                if self.stopping:
                    break
                if run_dir in self.failed or run_state(run_dir) in ("finished", "held"):
                    continue
                code = self.train(point, seed, run_dir, runs)
                if code is None or run_state(run_dir) == "finished":
                    claimed |= code == 0
                elif not self.stopping:
                    self.failed.append(run_dir)
                    print(f"DNSD sweep: {run_dir} failed (exit {code}); the other runs go on", flush=True)
            if not claimed:
                break
        self.finish(runs)

    def finish(self, runs):
        if self.stopping:
            raise TrainingStopped(f"{signal.Signals(self.stopping).name}: {self.last_run_outcome()}; start the worker "
                                  f"again to go on ({progress(runs)})", exit_code=128 + self.stopping, label="stopped")
        states = {run_dir: run_state(run_dir) for _, _, run_dir in runs}
        if self.summarize and all(state == "finished" for state in states.values()):
            print(self.summarize(self.folder))
        elsewhere = [run_dir for run_dir, state in states.items() if state == "held"]
        print(f"DNSD sweep: nothing left to claim; {progress(runs)}"
              + (f"; training elsewhere: {', '.join(elsewhere)}" if elsewhere else ""))
        if self.failed:
            raise TrainingStopped(f"{len(self.failed)} run(s) of the sweep failed: {', '.join(self.failed)}; each "
                                  "folder's error.log and the lines above say why; the sweep's next worker retries "
                                  "them")


def work(folder, passed=(), summarize=None):
    """Be one worker of the sweep in folder until nothing is left to claim; SIGTERM and SIGINT stop it cleanly."""
    worker = Worker(folder, passed, summarize)
    previous = {signum: signal.signal(signum, worker.stop) for signum in STOP_SIGNALS}
    try:
        worker.work()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
