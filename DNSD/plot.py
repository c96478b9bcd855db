"""`--mode plot`: the curves of one or more runs, read from their metrics.jsonl, overlaid in one PNG figure."""
import json
import os

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from DNSD.engine.run_folder import SUMMARY, read_records
from DNSD.errors import InputError
from DNSD.files import atomic_write

PANELS = (("train_loss", "training loss", "log"), ("val_error", "validation error (%)", "linear"),
          ("mean_active_blocks", "active blocks (mean per step)", "linear"))


def read_metrics(run_dir):
    """The epoch records of a run (finished or not), and its test error when it has finished."""
    records = read_records(run_dir, [key for key, _, _ in PANELS])
    summary_path = os.path.join(run_dir, SUMMARY)
    test_error = None
    if os.path.isfile(summary_path):
        with open(summary_path) as stream:
            test_error = json.load(stream).get("test_error")
    return records, test_error


def run_labels(run_dirs):
    """Each run's folder name, or its whole path where two runs share a name."""
    names = [os.path.basename(os.path.normpath(run_dir)) for run_dir in run_dirs]
    return [name if names.count(name) == 1 else os.path.normpath(run_dir) for name, run_dir in zip(names, run_dirs)]


def plot_runs(run_dirs, path):
    """Write a PNG with training loss, validation error and active blocks against epochs, one line per run; the
    legend gives each finished run's test error, and a dot marks its best validation epoch."""
    if os.path.isdir(path):
        raise InputError(f"--plot-file {path} is a folder; name the PNG to write, e.g. "
                         f"{os.path.join(path, 'curves.png')}")
    figure = Figure(figsize=(15, 4.5), layout="constrained")
    axes = figure.subplots(1, len(PANELS))
    for index, (run_dir, label) in enumerate(zip(run_dirs, run_labels(run_dirs))):
        records, test_error = read_metrics(run_dir)
        epochs = [record["epoch"] for record in records]
        if test_error is not None:
            label = f"{label} (test error {test_error:.2f} %)"
        for axis, (key, _, _) in zip(axes, PANELS):
            axis.plot(epochs, [record[key] for record in records], label=label, color=f"C{index}")
        best = min(records, key=lambda record: record["val_error"])
        axes[1].plot(best["epoch"], best["val_error"], "o", color=f"C{index}")
    for axis, (_, title, scale) in zip(axes, PANELS):
        axis.set(title=title, xlabel="epoch", yscale=scale)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    axes[0].legend()
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise InputError(f"cannot write the figure to {path}: {folder} is not a writable folder; choose another "
                         "--plot-file")
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    return path
