"""Sweeps (--sweep, a config's sweep: section): the grid, its folder and sweep.json, workers that share the runs
without a coordinator (started at once, killed, preempted), submitit's local and Slurm launchers, the summary and
Figure 8."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from DNSD.config import build_config
from DNSD.errors import InputError, TrainingStopped
from DNSD.runs.checkpoint_file import read_checkpoint
from DNSD.runs.locks import held
from DNSD.sweeps.grid import grid_point_name, grid_points, open_sweep, parse_sweep, read_sweep, sweep_runs
from DNSD.sweeps.launchers import SweepTask
from helpers import ROOT, assert_one_line_error, dnsd, read_csv, read_json

# ResNet-8 on a few of the real images: a run is seconds, and its weights are a fingerprint of what it computed.
RUN = ["--depth", "8", "--train-images", "200", "--val-size", "100", "--batch-size", "50", "--no-test-every-epoch"]
GRID = ["--sweep", "survival_last=0.5,1.0", "--sweep", "survival_mode=linear,uniform"]


def weights(run_dir, name="best.pdckpt"):
    return read_checkpoint(os.path.join(run_dir, name))["model"]


def same_weights(a, b):
    return set(a) == set(b) and all(np.array_equal(a[key], b[key]) for key in a)


def alone(archive, folder, point, epochs):
    """The run of one grid point trained on its own, as a user would without a sweep."""
    values = [f"-o{key}={value}" for key, value in point.items()]
    result = dnsd("--data-file", archive, *RUN, "--epochs", str(epochs), *values, "--output-dir", str(folder))
    assert result.returncode == 0, result.stderr
    return weights(folder)


def start_worker(archive, folder, *extra, epochs=1):
    command = [sys.executable, "-m", "DNSD", "train", "--data-file", archive, *RUN, "--epochs", str(epochs),
               "--output-dir", str(folder), *extra]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_grid_is_the_product_of_the_swept_values_and_names_each_point_by_them():
    grid = parse_sweep(["survival_last=0.5,1", "model.survival_mode=linear,uniform"])
    assert grid == {"model.survival_last": [0.5, 1.0], "model.survival_mode": ["linear", "uniform"]}
    assert [grid_point_name(point) for point in grid_points(grid)] == [
        "survival_last=0.5,survival_mode=linear", "survival_last=0.5,survival_mode=uniform",
        "survival_last=1.0,survival_mode=linear", "survival_last=1.0,survival_mode=uniform"]
    runs = sweep_runs("out", grid, [0, 1])
    assert len(runs) == 8 and [seed for _, seed, _ in runs] == [0] * 4 + [1] * 4  # whole curves first
    assert runs[5][2] == os.path.join("out", "survival_last=0.5,survival_mode=uniform", "seed-1")


@pytest.mark.parametrize("spec, fragment", [
    ("dataset=cifar10,cifar100", "one data set"), ("seed=0,1", "--seeds"), ("device=cpu,gpu", "does not change"),
    ("lr_decay_at=0.5", "takes a list"), ("survival_lst=0.5", "no such config key"), ("survival_last", "KEY=V1"),
    ("survival_last=0.5,0.5", "listed twice"), ("survival_last=0.5,x", "survival_last"),
    ("survival_last=0.5,[x", "cannot read the value")])
def test_a_key_that_cannot_be_swept_is_refused(spec, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_sweep([spec])


def test_cli_refusals_are_one_line(tiny_archive, tmp_path):
    common = ["--data-file", tiny_archive, "--output-dir", str(tmp_path / "s")]
    assert_one_line_error(dnsd(*common, "--sweep", "survival_last=0.5,1", "--survival-last", "0.2"),
                          "both swept and set")
    assert_one_line_error(dnsd(*common, "--sweep", "depth=8,9"), "model.depth", "6n+2")  # every point is checked
    assert_one_line_error(dnsd(*common, "--launcher", "local"), "--sweep KEY=V1,V2")
    assert_one_line_error(dnsd(*common, "--sweep", "survival_last=0.5", "--workers", "2"), "--launcher")
    assert_one_line_error(dnsd(*common, "--sweep", "survival_last=0.5", "--launcher", "local", "--partition", "gpu"),
                          "--partition is an option of the Slurm job array")
    assert not os.path.exists(tmp_path / "s" / "sweep.json")


def test_a_larger_grid_of_the_same_config_adds_points_and_another_config_is_refused(tiny_archive, tmp_path):
    folder = str(tmp_path / "sweep")
    config = build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": folder})
    open_sweep(config, {"model.survival_last": [0.5]}, [0])
    recorded = open_sweep(config, {"model.survival_last": [0.2, 0.5]}, [1])
    assert recorded["grid"] == {"model.survival_last": [0.5, 0.2]} and recorded["seeds"] == [0, 1]
    assert read_sweep(folder) == recorded
    other = build_config({"data.data_file": tiny_archive, "model.depth": 20, "run.output_dir": folder})
    with pytest.raises(InputError, match="sweep of another config"):
        open_sweep(other, {"model.survival_last": [0.5]}, [0])
    with pytest.raises(InputError, match="sweeps model.survival_last; this command sweeps model.survival_mode"):
        open_sweep(config, {"model.survival_mode": ["uniform"]}, [0])
    assert read_sweep(folder) == recorded


@pytest.mark.slow
def test_three_workers_share_a_grid_each_run_trained_once_as_it_would_be_alone(mini_archive, tmp_path):
    folder = tmp_path / "sweep"
    workers = [start_worker(mini_archive, folder, *GRID) for _ in range(3)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], outputs
    grid = read_sweep(str(folder))["grid"]
    for point in grid_points(grid):
        run_dir = folder / grid_point_name(point) / "seed-0"
        # The start line each training process prints names its run folder: one start per run, in all workers.
        assert sum(output.count(f"run folder {run_dir}\n") for output in outputs) == 1, outputs
        again = alone(mini_archive, tmp_path / "alone" / grid_point_name(point), point, 1)
        assert same_weights(weights(run_dir), again)
    rows = read_csv(folder / "summary.csv")
    assert [(row["survival_last"], row["survival_mode"]) for row in rows] == [
        (str(point["model.survival_last"]), point["model.survival_mode"]) for point in grid_points(grid)]
    for row, point in zip(rows, grid_points(grid)):
        summary = read_json(folder / grid_point_name(point) / "seed-0" / "summary.json")
        assert (row["finished"], float(row["test_error_mean"])) == ("1", summary["test_error"])


def wait_for(condition, seconds=300):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_workers_run_is_resumed_by_another_to_the_weights_of_an_uninterrupted_run(mini_archive, tmp_path):
    folder = tmp_path / "sweep"
    run_dir = folder / "survival_last=0.5" / "seed-0"
    worker = start_worker(mini_archive, folder, "--sweep", "survival_last=0.5", epochs=4)
    wait_for(lambda: os.path.isfile(run_dir / "last.pdckpt"))
    worker.kill()  # SIGKILL: the worker cannot pass anything on; its training process is told by the kernel
    worker.communicate()
    wait_for(lambda: not held(str(run_dir)))
    assert not os.path.isfile(run_dir / "summary.json")  # the run was stopped before its end
    second = start_worker(mini_archive, folder, "--sweep", "survival_last=0.5", epochs=4)
    output = second.communicate(timeout=600)[0]
    assert second.returncode == 0, output
    assert f"resuming {run_dir} at epoch " in output
    expected = alone(mini_archive, tmp_path / "alone", {"model.survival_last": 0.5}, 4)
    assert same_weights(weights(run_dir), expected)


@pytest.mark.slow
def test_a_preempted_task_saves_its_run_and_the_requeued_task_resumes_it(mini_archive, tmp_path):
    """What submitit does before a time limit or a preemption: call the task's checkpoint, then requeue what it
    returns."""
    folder = tmp_path / "sweep"
    run_dir = folder / "survival_last=0.5" / "seed-0"
    config = build_config({"data.data_file": mini_archive, "model.depth": 8, "data.train_images": 200,
                           "data.val_size": 100, "train.batch_size": 50, "run.test_every_epoch": False,
                           "train.epochs": 4, "run.output_dir": str(folder)})
    open_sweep(config, {"model.survival_last": [0.5]}, [0])
    task, outcome = SweepTask(str(folder), []), []
    thread = threading.Thread(target=lambda: outcome.append(pytest.raises(TrainingStopped, task, 0)))
    thread.start()
    wait_for(lambda: os.path.isfile(run_dir / "last.pdckpt"))
    requeued = task.checkpoint(0)
    thread.join(timeout=120)
    assert outcome and "SIGTERM" in str(outcome[0].value)
    assert not os.path.isfile(run_dir / "summary.json") and not held(str(run_dir))
    requeued.result()
    expected = alone(mini_archive, tmp_path / "alone", {"model.survival_last": 0.5}, 4)
    assert same_weights(weights(run_dir), expected)


def test_a_task_preempted_between_runs_claims_no_other(tiny_archive, tmp_path):
    """submitit calls checkpoint whenever the signal comes: between two runs, or as the next one starts, the worker
    must stop all the same instead of training on while the requeued task starts."""
    from DNSD.sweeps.workers import Worker

    folder = str(tmp_path / "sweep")
    open_sweep(build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": folder}),
               {"model.survival_last": [0.5]}, [0])
    task = SweepTask(folder, [])
    task.worker = Worker(folder)
    task.checkpoint(0)
    with pytest.raises(TrainingStopped, match="SIGTERM: no run was in training"):
        task.worker.work()


@pytest.mark.slow
def test_two_local_workers_through_submitit_finish_the_seeds_of_a_sweep_without_a_grid(tiny_archive, tmp_path):
    pytest.importorskip("submitit")
    folder = tmp_path / "sweep"
    result = dnsd("--data-file", tiny_archive, *RUN[:2], "--val-size", "40", "--epochs", "1", "--output-dir",
                  str(folder), "--seeds", "0,1", "--launcher", "local", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "2 local worker(s)" in result.stdout and "2 of 2 runs finished" in result.stdout
    logs = [Path(path, name).read_text() for path, _, names in os.walk(folder / "submitit")
            for name in names if name.endswith("_log.out")]
    assert len(logs) == 2
    for seed in read_sweep(str(folder))["seeds"]:
        run_dir = folder / f"seed-{seed}"
        assert os.path.isfile(run_dir / "summary.json")
        assert sum(log.count(f"run folder {run_dir}\n") for log in logs) == 1


def test_slurm_gets_one_job_array_of_workers_that_requeue(tiny_archive, tmp_path):
    pytest.importorskip("submitit")
    bin_dir, submitted = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {submitted}\necho Submitted batch job 4242\n")
    for name in ("srun", "sbatch"):
        os.chmod(bin_dir / name, 0o755)
    folder = tmp_path / "sweep"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = dnsd("--data-file", tiny_archive, *RUN[:2], "--output-dir", str(folder), *GRID, "--launcher", "slurm",
                  "--partition", "gpu", "--time-limit", "600", "--array-parallelism", "2", "--sbatch",
                  "account=proj", env=env)
    assert result.returncode == 0, result.stderr
    assert "Slurm job array 4242 of 4 task(s)" in result.stdout
    script = submitted.read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --gpus-per-node=1", "#SBATCH --time=600", "#SBATCH --partition=gpu",
                 "#SBATCH --account=proj", "#SBATCH --signal=USR2@90"):
        assert line in script, script
    assert f"{sys.executable} -u -m submitit.core._submit" in script
    assert not [name for name in os.listdir(folder) if name.startswith("survival_last=")]  # nothing trained here


def test_figure_8_draws_the_runs_own_numbers(tiny_archive, tmp_path):
    from DNSD.reporting.figures import draw_sweep

    folder = tmp_path / "sweep"
    open_sweep(build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": str(folder)}),
               {"model.survival_last": [0.5, 1.0], "model.survival_mode": ["linear", "uniform"]}, [0, 1])
    errors = {}  # as finished runs leave them: each run's summary.json
    for number, (_, _, run_dir) in enumerate(sweep_runs(str(folder), read_sweep(str(folder))["grid"], [0, 1])):
        os.makedirs(run_dir)
        errors[run_dir] = 10.0 + number * 0.75
        summary = {"test_error": errors[run_dir], "best_val_error": 12.0, "last_test_error": errors[run_dir]}
        Path(run_dir, "summary.json").write_text(json.dumps(summary))
    axis = draw_sweep(str(folder), "survival_last", baseline=1.0).axes[0]
    lines = {line.get_label(): line for line in axis.get_lines()}

    def seeds_of(p_last, mode):
        point = folder / f"survival_last={p_last},survival_mode={mode}"
        return [errors[str(point / f"seed-{seed}")] for seed in (0, 1)]

    for mode in ("linear", "uniform"):
        line = lines[f"survival_mode={mode}"]
        assert list(line.get_xdata()) == [0.5, 1.0]
        assert list(line.get_ydata()) == pytest.approx([np.mean(seeds_of(0.5, mode)), np.mean(seeds_of(1.0, mode))])
    baseline = [line for label, line in lines.items() if "constant depth" in label][0]
    assert baseline.get_ydata()[0] == pytest.approx(np.mean(seeds_of(1.0, "linear") + seeds_of(1.0, "uniform")))
    assert "(n=4)" in baseline.get_label()
    assert dnsd("plot", "--runs", str(folder), "--figure", "survival", "--plot-file",
                str(tmp_path / "f8.png")).returncode == 0
    assert_one_line_error(dnsd("plot", "--runs", str(folder), "--figure", "sweep", "--x", "depth", "--plot-file",
                               str(tmp_path / "x.png")), "does not sweep depth")


def test_the_summary_of_a_live_sweep_has_every_grid_point_and_says_what_is_left(tiny_archive, tmp_path):
    from DNSD.runs.locks import lock

    folder = str(tmp_path / "sweep")
    config = build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": folder})
    open_sweep(config, {"model.survival_last": [0.2, 0.5, 1.0]}, [0, 1])
    descriptor = lock(os.path.join(folder, "survival_last=0.5", "seed-1"))  # as a worker training that run
    try:
        result = dnsd("summary", "--runs", folder)
    finally:
        os.close(descriptor)
    assert result.returncode == 0, result.stderr
    assert "0 of 6 runs finished, 1 training, 5 left" in result.stdout
    rows = read_csv(os.path.join(folder, "summary.csv"))
    assert [(row["survival_last"], row["runs"], row["finished"]) for row in rows] == [
        ("0.2", "2", "0"), ("0.5", "2", "0"), ("1.0", "2", "0")]


def test_the_figure_8_config_sweeps_p_l_and_the_rule_over_the_papers_recipe():
    import yaml

    result = dnsd("train", "--config", "figure8_cifar10", "--print-config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    recipe = yaml.safe_load(dnsd("train", "--config", "resnet110_sd", "--print-config").stdout)
    assert {key: value for key, value in printed.items() if key != "sweep"} == recipe
    assert printed["sweep"] == {"model.survival_last": [round(0.1 * k, 1) for k in range(1, 11)],
                                "model.survival_mode": ["linear", "uniform"]}


def launcher_options(**given):
    """The launcher flags as parsed, none given but these."""
    values = {"workers": None, "gpus_per_task": None, "array_parallelism": None, "time_limit": None, **given}
    return type("Options", (), values)()


def test_local_workers_default_to_one_per_visible_gpu_each_given_its_own(tiny_archive, tmp_path, monkeypatch):
    from DNSD.sweeps import launchers

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert launchers.visible_gpus() == [0, 2]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f2c1a9e")  # UUIDs: left to the scheduler, no GPU assigned
    assert launchers.visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA A100, 8.0, 550.54.14'\n"
                                        "echo 'NVIDIA A100, 8.0, 550.54.14'\n")
    os.chmod(bin_dir / "nvidia-smi", 0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert launchers.visible_gpus() == [0, 1]

    submitted = []

    class Executor:  # submitit's LocalExecutor as far as launch uses it
        parameters = {}

        def update_parameters(self, **parameters):
            self.parameters = {**self.parameters, **parameters}

        def submit(self, task, index):
            submitted.append((index, self.parameters.get("visible_gpus")))
            return type("Job", (), {"result": lambda job: None})()

    monkeypatch.setattr(launchers, "executor", lambda kind, folder, options: Executor())
    folder = str(tmp_path / "sweep")
    open_sweep(build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": folder}),
               {"model.survival_last": [0.5, 1.0]}, [0])
    options = launcher_options()
    launchers.launch("local", folder, [], options)
    assert submitted == [(0, [0]), (1, [1])]
    options.workers = 3
    submitted.clear()
    launchers.launch("local", folder, [], options)
    assert submitted == [(0, [0]), (1, [1]), (2, [0])]


def test_a_launcher_starts_nothing_for_a_finished_sweep_and_refuses_bad_counts(tiny_archive, tmp_path, capsys):
    from DNSD.sweeps import launchers

    folder = str(tmp_path / "sweep")
    open_sweep(build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": folder}),
               {"model.survival_last": [0.5]}, [0])
    run_dir = os.path.join(folder, "survival_last=0.5", "seed-0")
    os.makedirs(run_dir)
    Path(run_dir, "summary.json").write_text('{"test_error": 10.0}')
    options = launcher_options()
    launchers.launch("slurm", folder, [], options)  # no srun here: an executor would refuse
    assert "nothing left to train (1 of 1 runs finished" in capsys.readouterr().out
    for name, value in (("workers", -1), ("gpus_per_task", -1), ("array_parallelism", 0), ("time_limit", 0)):
        bad = launcher_options(**{name: value})
        with pytest.raises(InputError, match=f"--{name.replace('_', '-')} {value}: expected"):
            launchers.launch("slurm", folder, [], bad)


TRAINED_STAND_IN = """import json, os, sys, time
time.sleep(0.2)
run_dir, log = sys.argv[1:]
json.dump({}, open(os.path.join(run_dir, "summary.json"), "w"))
with open(log, "a") as stream:
    stream.write(run_dir + "\\n")
"""
# held()'s probe of a run, over and over, each held for 10 ms instead of an instant: most claims meet one.
PROBER = """import fcntl, os, sys, time
print(flush=True)
while not os.path.exists(sys.argv[1]):
    for run_dir in sys.argv[2:]:
        descriptor = os.open(os.path.join(run_dir, ".lock"), os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
            time.sleep(0.01)
        except BlockingIOError:
            pass
        os.close(descriptor)
        time.sleep(0.002)
"""


@pytest.mark.slow
def test_workers_beside_busy_probers_train_every_run_once_and_leave_nothing(tiny_archive, tmp_path, monkeypatch):
    """held() takes a run's lock shared for an instant: a claim at that instant must not take the run as another's."""
    from DNSD.sweeps import workers

    folder, log, done = str(tmp_path / "sweep"), str(tmp_path / "trained.log"), str(tmp_path / "done")
    config = build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": folder})
    grid = {"model.survival_last": [0.2, 0.5]}
    open_sweep(config, grid, [0, 1, 2])
    runs = [run_dir for _, _, run_dir in sweep_runs(folder, grid, [0, 1, 2])]
    for run_dir in runs:
        os.makedirs(run_dir)
        open(os.path.join(run_dir, ".lock"), "w").close()
    monkeypatch.setattr(workers.Worker, "command",
                        lambda self, point, seed, run_dir: [sys.executable, "-c", TRAINED_STAND_IN, run_dir, log])
    probers = [subprocess.Popen([sys.executable, "-c", PROBER, done, run_dir], stdout=subprocess.PIPE)
               for run_dir in runs]
    for prober in probers:
        prober.stdout.readline()  # probing
    threads = [threading.Thread(target=workers.Worker(folder).work) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        open(done, "w").close()
        for prober in probers:
            prober.wait(timeout=60)
    assert sorted(Path(log).read_text().split()) == sorted(runs)  # each run trained once, none left behind


# A training process that answers SIGINT (which it inherits blocked) by ending; unanswered, it ends in 20 s.
ANSWERING_STAND_IN = """import signal, time
signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT,))
time.sleep(20)
"""


@pytest.mark.parametrize("moment", ["before the training process exists", "as it starts"])
def test_a_signal_taken_while_the_worker_starts_a_run_is_passed_on_once(moment, tiny_archive, tmp_path, monkeypatch):
    """The worker blocks the stop signals in its main thread while it starts a run, but a thread of Paddle's may take
    one, whose handler then runs in the main thread before the training process is known: as in CI, where a
    foreground --seeds run trained to its end after Ctrl-C."""
    from DNSD.sweeps import workers

    folder = str(tmp_path / "sweep")
    open_sweep(build_config({"data.data_file": tiny_archive, "model.depth": 8, "run.output_dir": folder}),
               {"model.survival_last": [0.5]}, [0])
    worker, sent, start = workers.Worker(folder), [], subprocess.Popen

    def starting(*args, **kwargs):
        if moment == "before the training process exists":
            worker.stop(signal.SIGINT)
        child = start(*args, **kwargs)
        send = child.send_signal
        child.send_signal = lambda signum: sent.append(signum) or send(signum)
        if moment == "as it starts":
            worker.stop(signal.SIGINT)
        return child

    monkeypatch.setattr(workers.Worker, "command", lambda self, point, seed, run_dir: [sys.executable, "-c",
                                                                                      ANSWERING_STAND_IN])
    monkeypatch.setattr(subprocess, "Popen", starting)
    with pytest.raises(TrainingStopped, match="SIGINT: .*seed-0 stopped before its first checkpoint"):
        worker.work()
    assert sent == [signal.SIGINT]


SIGNALLED = ["--depth", "8", "--epochs", "4", "--batch-size", "32", "--val-size", "40",
             "--checkpoint-every-iterations", "1", "--no-test-every-epoch"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_archive, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = dnsd("--data-file", tiny_archive, *SIGNALLED, "--output-dir", str(folder))
    assert result.returncode == 0, result.stderr
    return weights(folder, "last.pdckpt")


def command_line(pid):
    try:
        return open(f"/proc/{pid}/cmdline").read()
    except OSError:  # it has ended
        return ""


def moment_reached(moment, worker, run_dir):
    """Whether a foreground --seeds run has reached the moment for Ctrl-C."""
    if moment == "the training process's start":  # the worker has started it: Python starts, Paddle is imported
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        return any(str(run_dir) in command_line(child) for child in children)
    if moment == "the run's start":  # the run folder is written, no step taken
        return os.path.exists(run_dir / "config.yaml")
    if moment == "mid-epoch":
        return os.path.exists(run_dir / "last.pdckpt")
    return os.path.isdir(run_dir) and any(name.startswith(".tmp-") for name in os.listdir(run_dir))  # a save


@pytest.mark.parametrize("moment", ["the training process's start", "the run's start", "mid-epoch", "a save"])
@pytest.mark.slow
def test_ctrl_c_on_a_foreground_seeds_run_reaches_the_run_once(moment, uninterrupted, tiny_archive, tmp_path):
    """The terminal signals its whole foreground process group: the worker and, unless it has a group of its own,
    the training process too, which then gets a second SIGINT from the worker and stops unsaved."""
    folder, command = tmp_path / "seeds", ["--data-file", tiny_archive, *SIGNALLED, "--seeds", "0"]
    process = subprocess.Popen([sys.executable, "-m", "DNSD", "train", *command, "--output-dir", str(folder)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    run_dir = folder / "seed-0"
    deadline = time.monotonic() + 120
    while not moment_reached(moment, process, run_dir):  # polled often: a save lasts milliseconds
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.0005)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    # However early, the signal is answered by the run, once, with a save; the worker's last line says so.
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.count("DNSD: stopped: SIGINT at epoch ") == 1 and os.path.exists(run_dir / "last.pdckpt"), stderr
    assert stderr.strip().splitlines()[-1].startswith(f"DNSD: stopped: SIGINT: {run_dir} saved and stopped; "), stderr
    again = dnsd("train", *command, "--output-dir", str(folder))
    assert again.returncode == 0, again.stderr
    assert same_weights(weights(run_dir, "last.pdckpt"), uninterrupted)
