"""The figures of DNSD as PNG, PDF or SVG files: the curves of runs, read from their metrics.jsonl (training loss,
validation error and active blocks), the paper's Figure 3 (the test error against the epoch of each configuration,
the mean over its runs as a line and their spread as a band), Figure 7 (gradient magnitudes), Figure 8 (a sweep's
test error against p_L, and over two keys as a heat map) and an evaluation's confusion matrix as a heat map."""
import os

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from DNSD.config import config_from_dict, load_yaml
from DNSD.errors import InputError
from DNSD.files import atomic_write
from DNSD.models.stochastic_depth import survival_probabilities
from DNSD.reporting.tables import sweep_grid, sweep_lines
from DNSD.runs.folder import CONFIG, SWEEP, group_runs, read_records, read_summary, sweep_folders

FORMATS = ("png", "pdf", "svg")

PANELS = (("train_loss", "training loss", "log"), ("val_error", "validation error (%)", "linear"),
          ("mean_active_blocks", "active blocks (mean per step)", "linear"))


LEGEND_TITLE = "test error of the best-validation checkpoint, mean over finished runs (as dnsd summary gives it)"


def configuration_label(group):
    """A configuration's name, its number of runs and the mean test error of the finished ones."""
    errors = [summary["test_error"] for summary in map(read_summary, group["folders"]) if summary]
    runs = f"{len(group['folders'])} run{'s' * (len(group['folders']) > 1)}"
    if not errors:
        return f"{group['name']} ({runs}, training)"
    finished = "" if len(errors) == len(group["folders"]) else f" of {len(errors)} finished"
    return f"{group['name']} ({runs}: {sum(errors) / len(errors):.2f} %{finished})"


def draw_curves(run_dirs, labels=None):
    """Training loss, validation error and active blocks against epochs: the runs of one configuration (its seeds)
    in shades of one colour, each a thin line with a dot at its best validation epoch; dashed grey lines where the
    learning rate drops, and each configuration's expected number of active blocks dotted; the legend below."""
    figure = Figure(figsize=(15, 5), layout="constrained")
    axes = figure.subplots(1, len(PANELS))
    handles = []
    drops = set()
    for index, group in enumerate(labelled_groups(run_dirs, labels)):
        color = f"C{index % 10}"
        for shade, folder in enumerate(group["folders"]):
            records = read_records(folder, [key for key, _, _ in PANELS] + ["lr"])
            epochs = [record["epoch"] for record in records]
            drops.update(now["epoch"] - 0.5 for before, now in zip(records, records[1:]) if now["lr"] < before["lr"])
            # Seeds of one configuration: its colour, lightened a little more for each further run.
            tone = blend(color, shade / max(2, len(group["folders"])))
            for axis, (key, _, _) in zip(axes, PANELS):
                # A line through one epoch is not drawn at all: runs that short get a marker.
                axis.plot(epochs, [record[key] for record in records], color=tone, linewidth=1, alpha=0.9,
                          marker="." if len(epochs) == 1 else None)
            best = min(records, key=lambda record: record["val_error"])
            axes[1].plot(best["epoch"], best["val_error"], "o", color=tone, markersize=5)
        expected = expected_active_blocks(group["folders"][0])
        if expected:
            axes[2].axhline(expected, color=color, linestyle=":", linewidth=1)
        handles.append(Line2D([], [], color=color, label=configuration_label(group)))
    for axis in axes:
        for epoch in sorted(drops):
            axis.axvline(epoch, color="0.6", linestyle="--", linewidth=0.8)
    handles.append(Line2D([], [], color="0.3", marker="o", linestyle="", label="best validation epoch of a run"))
    handles.append(Line2D([], [], color="0.3", linestyle=":", label="expected active blocks (sum of p_l)"))
    if drops:
        handles.append(Line2D([], [], color="0.6", linestyle="--", label="learning-rate drop"))
    for axis, (_, title, scale) in zip(axes, PANELS):
        axis.set(title=title, xlabel="epoch", yscale=scale)
        style_axes(axis)
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), title=LEGEND_TITLE,
                  fontsize="small", title_fontsize="small", frameon=False)
    return figure


def blend(color, share):
    """color mixed with white: share 0 is the colour itself."""
    return tuple(channel + (1 - channel) * share for channel in to_rgb(color))


def expected_active_blocks(folder):
    """The sum of a run's survival probabilities: the active blocks its gates average to (0: no stochastic depth)."""
    model = config_from_dict(load_yaml(os.path.join(folder, CONFIG))).model
    if model.arch != "resnet":
        return 0.0
    return float(survival_probabilities(3 * ((model.depth - 2) // 6), model.survival_last, model.survival_mode).sum())


def labelled_groups(run_dirs, labels=None):
    """group_runs, each configuration named by its label where --labels gives them (one each, in order)."""
    groups = group_runs(run_dirs)
    if labels is not None and len(labels) != len(groups):
        raise InputError(f"--labels gives {len(labels)} labels for {len(groups)} configurations "
                         f"({'; '.join(group['name'] for group in groups)}); give one each, in this order")
    return [{**group, "name": label} for group, label in zip(groups, labels)] if labels else groups


def style_axes(axis):
    """Whole epochs on the x axis; a log axis ticked at 1, 2, 5 times powers of ten and labelled in plain numbers."""
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if axis.get_yscale() == "log":
        axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.yaxis.set_minor_formatter(NullFormatter())
    axis.grid(alpha=0.3)


def test_error_curves(folder):
    records = read_records(folder, [])
    if any("test_error" not in record for record in records):
        raise InputError(f"{folder} has no test error for every epoch in metrics.jsonl (it was trained with "
                         "run.test_every_epoch off, as configs/quick.yaml does, or by an older DNSD); --figure "
                         "test-error needs them: train with --test-every-epoch")
    return [record["test_error"] for record in records]


def draw_test_error(run_dirs, labels=None):
    """The paper's Figure 3: test error against epoch, one line per configuration, the mean of its finished runs, with
    a band from their lowest to their highest test error. Runs still training are drawn alone, dotted, never
    averaged in."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axis = figure.subplots()
    for index, group in enumerate(labelled_groups(run_dirs, labels)):
        name, color = group["name"], f"C{index % 10}"
        finished = [folder for folder in group["folders"] if read_summary(folder)]
        unfinished = [folder for folder in group["folders"] if folder not in finished]
        if finished:
            # One configuration, one number of epochs: the finished runs' curves have the same length.
            curves = np.array([test_error_curves(folder) for folder in finished])
            epochs, mean = np.arange(1, curves.shape[1] + 1), curves.mean(axis=0)
            axis.plot(epochs, mean, color=color, marker="o" if len(epochs) == 1 else None,
                      label=configuration_label({**group, "folders": finished}))
            if len(finished) > 1:
                axis.fill_between(epochs, curves.min(axis=0), curves.max(axis=0), color=color, alpha=0.2,
                                  linewidth=0)
        for number, folder in enumerate(unfinished):
            curve = test_error_curves(folder)
            axis.plot(range(1, len(curve) + 1), curve, color=color, linestyle=":", linewidth=1,
                      marker="o" if len(curve) == 1 else None,
                      label=f"{name}: {len(unfinished)} unfinished, not averaged" if number == 0 else None)
    axis.set(title="test error at each epoch (mean over runs, band: lowest to highest)", xlabel="epoch",
             ylabel="test error (%)")
    style_axes(axis)
    figure.legend(loc="outside lower center", title=LEGEND_TITLE, fontsize="small", title_fontsize="small",
                  frameon=False)
    return figure


def draw_sweep(folder, x, baseline=None, x_label=None):
    """Mean test error of each grid point against swept key x, a line per combination of the other swept values,
    with a band from the lowest to the highest run and each point's number of seeds; baseline: the x value drawn
    across as a dashed line, e.g. p_L = 1 in Figure 8 (the constant-depth network)."""
    lines = sweep_lines(folder, x)
    if not lines:
        raise InputError(f"{folder} has no finished run yet; plot the sweep once runs have finished")
    figure = Figure(figsize=(8, 5), layout="constrained")
    axis = figure.subplots()
    values = list(dict.fromkeys(value for points in lines.values() for value, _ in points))
    numeric = all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values)
    position = (lambda value: value) if numeric else values.index
    for index, (label, points) in enumerate(lines.items()):
        points = sorted(points, key=lambda point: position(point[0]))
        xs = [position(value) for value, _ in points]
        color = f"C{index % 10}"
        axis.plot(xs, [np.mean(errors) for _, errors in points], marker="o", color=color, label=label)
        axis.fill_between(xs, [min(errors) for _, errors in points], [max(errors) for _, errors in points],
                          color=color, alpha=0.2, linewidth=0)
        for x_position, (_, errors) in zip(xs, points):
            axis.annotate(f"n={len(errors)}", (x_position, np.mean(errors)), textcoords="offset points",
                          xytext=(0, 6), ha="center", fontsize="x-small", color=color)
    at_baseline = [error for points in lines.values() for value, errors in points if value == baseline
                   for error in errors]
    if at_baseline:
        axis.axhline(np.mean(at_baseline), color="0.4", linestyle="--", linewidth=1,
                     label=f"{x} = {baseline:g}, constant depth: {np.mean(at_baseline):.2f} % (n={len(at_baseline)})")
    if not numeric:
        axis.set_xticks(range(len(values)), [str(value) for value in values])
    axis.set(xlabel=x_label or x, ylabel="test error (%)",
             title="test error of the best-validation checkpoint (mean over seeds, band: lowest to highest)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return figure


FIGURE7_TENSOR = "stem.weight"  # the paper's "first convolutional layer"


def gradient_curve(folder, tensor):
    """The mean absolute gradient of tensor at each epoch of a run, and the epochs from which its learning rate
    changed."""
    records = read_records(folder, ["lr"])
    if any("gradients" not in record for record in records):
        raise InputError(f"{folder} has no gradient magnitudes in metrics.jsonl (trained before DNSD 1.1.0); train "
                         "it again, e.g. dnsd train --config figure7_cifar10")
    if tensor not in records[0]["gradients"]:
        raise InputError(f"{folder} records no gradient of {tensor}; name one with --tensor: "
                         f"{', '.join(records[0]['gradients'])}")
    drops = [record["epoch"] for previous, record in zip(records, records[1:]) if record["lr"] != previous["lr"]]
    return [record["gradients"][tensor] for record in records], drops


def draw_gradients(run_dirs, tensor=FIGURE7_TENSOR):
    """The paper's Figure 7: the mean absolute gradient of a tensor (the first convolution's weights) per epoch, one
    line per configuration (the mean of its runs, their range as a band), the learning-rate drops dotted."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axis = figure.subplots()
    drops = set()
    for index, group in enumerate(group_runs(run_dirs)):
        curves = [gradient_curve(folder, tensor) for folder in group["folders"]]
        drops.update(drop for _, run_drops in curves for drop in run_drops)
        length = min(len(curve) for curve, _ in curves)  # runs still training are drawn as far as all have come
        values = np.array([curve[:length] for curve, _ in curves])
        epochs, color = np.arange(1, length + 1), f"C{index % 10}"
        axis.plot(epochs, values.mean(axis=0), color=color, marker="o" if length == 1 else None,
                  label=f"{configuration_label(group)}")
        if len(curves) > 1:
            axis.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2, linewidth=0)
    for number, drop in enumerate(sorted(drops)):
        axis.axvline(drop, color="0.4", linestyle=":", linewidth=1,
                     label="learning rate divided" if not number else None)
    axis.set(title=f"mean |gradient| of {tensor} per epoch (mean over runs, band: lowest to highest)",
             xlabel="epoch", ylabel=f"mean |gradient| of {tensor}", yscale="log")
    style_axes(axis)
    figure.legend(loc="outside lower center", title=LEGEND_TITLE, fontsize="small", title_fontsize="small",
                  frameon=False)
    return figure


def draw_heatmap(folder, x="survival_last", y="depth"):
    """The paper's Figure 8, right: the mean test error of each cell of a two-key sweep, labelled with its number of
    finished seeds; a cell with no finished run is hatched and says so."""
    xs, ys, cells = sweep_grid(folder, x, y)
    errors = np.array([[cells[(a, b)]["test_error_mean"] if (a, b) in cells and cells[(a, b)]["finished"] else np.nan
                        for a in xs] for b in ys], dtype=float)
    figure = Figure(figsize=(1.1 * len(xs) + 3, 0.8 * len(ys) + 2), layout="constrained")
    axis = figure.subplots()
    axis.set_facecolor("0.92")
    image = axis.imshow(np.ma.masked_invalid(errors), cmap="viridis_r", aspect="auto", origin="lower")
    for row, b in enumerate(ys):
        for column, a in enumerate(xs):
            cell = cells.get((a, b))
            if cell is None or not cell["finished"]:
                axis.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, hatch="//", color="0.6"))
                axis.text(column, row, "not finished", ha="center", va="center", fontsize="x-small", color="0.3")
            else:
                red, green, blue, _ = image.cmap(image.norm(errors[row, column]))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # the label in the colour that reads on it
                axis.text(column, row, f"{errors[row, column]:.2f}\nn={cell['finished']} of {cell['runs']}",
                          ha="center", va="center", fontsize="small", color="white" if dark else "black")
    axis.set_xticks(range(len(xs)), [f"{a:g}" if isinstance(a, float) else str(a) for a in xs])
    axis.set_yticks(range(len(ys)), [f"{b:g}" if isinstance(b, float) else str(b) for b in ys])
    axis.set(xlabel=x, ylabel=y, title="test error (%), mean over finished seeds")
    figure.colorbar(image, ax=axis, label="test error (%)")
    return figure


def draw_confusion(result):
    """An evaluation's confusion matrix as a heat map, each row (a true class) as fractions of its images, with the
    class names on both axes and, for up to 20 classes, the count in each cell."""
    counts = np.array(result["confusion_matrix"])
    classes = list(result["per_class_accuracy"])
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.45 * len(classes), 30)
    figure = Figure(figsize=(size + 1.5, size), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, label="fraction of the true class's images")
    font = 8 if len(classes) <= 20 else max(2, 300 // len(classes))
    axis.set_xticks(range(len(classes)), classes, rotation=90, fontsize=font)
    axis.set_yticks(range(len(classes)), classes, fontsize=font)
    axis.set(xlabel="predicted class", ylabel="true class",
             title=f"{result['split']} error {result['error']:.2f} % on {result['images']:,} images")
    if len(classes) <= 20:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                axis.text(column, row, str(count), ha="center", va="center", fontsize=7,
                          color="white" if fractions[row, column] > 0.5 else "black")
    return figure


def check_figure_path(path):
    """The format a figure path names (its extension); InputError where it names no file of a known format."""
    if os.path.isdir(path):
        raise InputError(f"--plot-file {path} is a folder; name the file to write, e.g. "
                         f"{os.path.join(path, 'curves.png')}")
    if os.path.exists(path) and not os.path.isfile(path):
        raise InputError(f"--plot-file {path} is not a regular file (a device, FIFO or socket); name a file")
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in FORMATS:
        raise InputError(f"--plot-file {path}: name a .png, .pdf or .svg file (the extension gives the format)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise InputError(f"cannot write the figure to {path}: {folder} is not a writable folder; choose another "
                         "--plot-file")
    return extension


def write_figure(figure, path):
    """Write a figure in the format path's extension names, replacing the file at once."""
    extension = check_figure_path(path)
    atomic_write(path, lambda temporary: figure.savefig(temporary, format=extension, dpi=120))
    return path


def plot_runs(run_dirs, path, figure_name="curves", x=None, y=None, tensor=FIGURE7_TENSOR, labels=None):
    """Draw the figure of the runs (a sweep's folder for "survival", "sweep" and "heatmap") and write it to path."""
    check_figure_path(path)
    if figure_name == "gradients":
        return write_figure(draw_gradients(run_dirs, tensor), path)
    if figure_name == "heatmap":
        if len(run_dirs) != 1:
            raise InputError("--figure heatmap draws one sweep: pass its folder with --runs")
        return write_figure(draw_heatmap(run_dirs[0], (x or "survival_last").split(".")[-1],
                                         (y or "depth").split(".")[-1]), path)
    if figure_name in ("survival", "sweep"):
        if len(run_dirs) != 1 or not sweep_folders(run_dirs):
            raise InputError(f"--figure {figure_name} draws one sweep: pass its folder (the one holding {SWEEP}) "
                             "with --runs")
        if figure_name == "survival":
            return write_figure(draw_sweep(run_dirs[0], "survival_last", baseline=1.0,
                                           x_label="p_L, survival probability of the last block"), path)
        if not x:
            raise InputError("--figure sweep needs --x KEY, the swept key of the x axis, e.g. --x survival_last")
        return write_figure(draw_sweep(run_dirs[0], x.split(".")[-1]), path)
    if labels is not None and figure_name not in ("curves", "test-error"):
        raise InputError(f"--labels names the configurations of --figure curves and test-error, not {figure_name}")
    drawn = draw_test_error(run_dirs, labels) if figure_name == "test-error" else draw_curves(run_dirs, labels)
    return write_figure(drawn, path)

