"""A model card (MODEL_CARD.md) for a run, a --seeds folder or a sweep's folder: the model and recipe, the data, the
test error beside the paper's, the curves, the environment, each checkpoint's sha256, how to load and audit it.
Plain Markdown, as a Git host renders it."""
import os

from DNSD.config import HUB_ANY_CHECKPOINT, config_from_dict, hub_entry, load_yaml
from DNSD.errors import InputError
from DNSD.files import file_digest, write_text
from DNSD.models import model_title
from DNSD.reporting.figures import draw_curves, write_figure
from DNSD.reporting.markdown import code, escaped
from DNSD.reporting.tables import number, summarise
from DNSD.runs.folder import BEST, CONFIG, MODEL_CARD, check_writable, find_runs, read_summary, sweep_folders
from DNSD.runs.manifest import read_manifest
from DNSD.sweeps.grid import read_sweep
from DNSD.training.meters import counted
from DNSD.training.optimizer import decay_epochs

FIGURE = "MODEL_CARD-curves.png"
DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}
# The paper's test errors (%), Table 1, by (data set, depth, p_L) of its linearly decaying ResNets: p_L 1 is the
# constant-depth baseline.
PUBLISHED = {("cifar10", 110, 1.0): 6.41, ("cifar10", 110, 0.5): 5.25, ("cifar10", 1202, 0.5): 4.91,
             ("cifar100", 110, 1.0): 27.22, ("cifar100", 110, 0.5): 24.58,
             ("svhn", 152, 1.0): 1.80, ("svhn", 152, 0.5): 1.75}
PAPER_EPOCHS = {"cifar10": 500, "cifar100": 500, "svhn": 50}
OFFICIAL_IMAGES = {"cifar10": (50000, 10000), "cifar100": (50000, 10000)}  # (training and validation, test)
CITATION = """@inproceedings{huang2016deep,
  title = {Deep Networks with Stochastic Depth},
  author = {Huang, Gao and Sun, Yu and Liu, Zhuang and Sedra, Daniel and Weinberger, Kilian Q.},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year = {2016}
}"""


def published(config):
    """The paper's test error for this model, and the words that qualify it; (None, why not) where it has none."""
    model, dataset = config.model, config.data.dataset
    key = (dataset, model.depth, model.survival_last)
    if model.arch != "resnet" or model.survival_mode != "linear" or key not in PUBLISHED:
        return None, "the paper has no number for this model"
    if config.train.epochs != PAPER_EPOCHS[dataset]:
        return PUBLISHED[key], f"after {PAPER_EPOCHS[dataset]} epochs; this recipe trains {config.train.epochs}: " \
                               "not comparable"
    return PUBLISHED[key], "the paper's Table 1"


def describe_recipe(config, swept=()):
    """The model and recipe in a paragraph; swept: the keys a sweep sets per point, named as such."""
    model, train = config.model, config.train
    depth = "constant depth" if model.survival_last == 1 else \
        f"stochastic depth ({model.survival_mode} survival probabilities down to p_L = {model.survival_last:g})"
    if "model.survival_last" in swept or "model.survival_mode" in swept:
        depth = "stochastic depth (the swept survival rule and p_L; p_L = 1 is constant depth)"
    network = f"{model_title(model).split('-')[0]} of each swept depth" if "model.depth" in swept else \
        model_title(model)
    drops = ", ".join(str(epoch + 1) for epoch in decay_epochs(train))
    optimiser = f"{'Nesterov ' * train.nesterov}SGD (batch {train.batch_size}, learning rate {train.lr:g}, times " \
                f"{train.lr_decay_factor:g} from epochs {drops}, momentum {train.momentum:g}, weight decay " \
                f"{train.weight_decay:g})"
    return (f"A {network} with {depth}, trained on {DATASETS[config.data.dataset]} with "
            f"{config.data.val_size:,} training images held out for validation, for {train.epochs} "
            f"epoch{'s' * (train.epochs != 1)} of "
            f"{optimiser}; the checkpoint kept is the one with the lowest validation error, and the test error is "
            "that checkpoint's.")


def environment_lines(entry):
    cpu, device = entry["device"]["cpu"], entry["device"]
    where = ", ".join(f"{gpu['name']} (compute capability {gpu['compute_capability']})" for gpu in
                      device.get("gpus") or []) if device["kind"] == "gpu" else \
        f"CPU {cpu['model']} ({', '.join(cpu['instruction_sets']) or 'no SIMD listed'}), " \
        f"{entry['settings']['cpu_threads']} thread(s)"
    commit = entry["dnsd"]["commit"]
    source = f" (commit {commit[:12]}{', with uncommitted changes' * bool(entry['dnsd']['uncommitted_changes'])})" \
        if commit else ""
    return [escaped(line) for line in (
        f"DNSD {entry['dnsd']['version']}{source}", f"{entry['paddle']['build']}, Python {entry['python']['version']}, "
        f"numpy {entry['numpy']}", f"{where}; data-parallel processes: {entry['settings']['world_size']}")]


def result_rows(rows):
    """The results: a table of mean ± std over seeds, or the numbers of a single run."""
    if len(rows) == 1 and rows[0]["finished"] == 1:
        row = rows[0]
        return [f"One run: test error {number(row['test_error_mean'])} % at its best validation error "
                f"({number(row['best_val_error_mean'])} %); a single seed gives no spread."]
    lines = ["| configuration | runs finished | test error (%) | min | max | best val error (%) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        error = number(row["test_error_mean"])
        if row["test_error_std"] is not None:
            error += f" ± {number(row['test_error_std'])}"
        lines.append(f"| {escaped(row['configuration'])} | {row['finished']} of {row['runs']} | {error} | "
                     f"{number(row['test_error_min'])} | {number(row['test_error_max'])} | "
                     f"{number(row['best_val_error_mean'])} |")
    return lines


def data_lines(config, summary):
    """The data file and the images the run saw, a subset named as one."""
    data, images = summary["data"], summary.get("images")
    file = f"{code(os.path.basename(data['file']))}, {data['bytes']:,} bytes, sha256 {code(data['sha256'])}" \
        if data.get("sha256") else code(data.get("file"))
    if not images:
        return [file, "", "The image counts were not recorded (a run before DNSD 1.4.0)."]
    counts = f"{images['train']:,} training, {images['val']:,} validation and {images['test']:,} test images"
    if not subset(config, images):
        return [file, "", f"{counts}."]
    official = OFFICIAL_IMAGES[config.data.dataset]
    return [file, "", f"{counts}, a subset of {DATASETS[config.data.dataset]}'s {official[0]:,} and {official[1]:,}."]


def subset(config, images):
    """Whether a run saw fewer images than its data set's official archive holds (images: summary.json's counts)."""
    official = OFFICIAL_IMAGES.get(config.data.dataset)
    return bool(images and official and (images["train"] + images["val"] < official[0] or images["test"] < official[1]))


def limitations(config, summary, entries, finished):
    """What a reader of the results must know before comparing them with the paper's."""
    found = []
    if subset(config, summary.get("images")):
        found.append("trained and tested on a subset of the data set: not comparable with the paper's numbers")
    if config.train.epochs != PAPER_EPOCHS[config.data.dataset]:
        found.append(f"{counted(config.train.epochs, 'epoch')}, where the paper trains "
                     f"{PAPER_EPOCHS[config.data.dataset]}")
    if entries and entries[-1]["device"]["kind"] == "cpu":
        found.append("trained on a CPU: the same recipe as on a GPU, other rounding (docs/reproducing.md)")
    if len(finished) == 1:
        found.append("a single seed: seeds of one recipe differ by tenths of a point, so compare means over seeds")
    return [f"- {escaped(line)}" for line in found] or ["- none known"]


def checkpoint_rows(folder, runs):
    lines = ["| file | bytes | sha256 |", "| --- | --- | --- |"]
    for run in runs:
        for name in sorted(name for name in os.listdir(run) if name.endswith(".pdckpt")):
            path = os.path.join(run, name)
            lines.append(f"| {code(os.path.relpath(path, folder), cell=True)} | {os.path.getsize(path):,} | "
                         f"`{file_digest(path, 'sha256')}` |")
    return lines


def using_lines(load, best, run):
    """The card's sections on loading the model and auditing the run (run: its folder, relative to the card's)."""
    return ["## Loading", "", "From this folder, with DNSD's repository cloned (nothing is downloaded):", "",
            "```python", "import paddle", load, "```", "",
            f"or {code(f'DNSD.load_checkpoint({best!r}).predict(images)')} for uint8 images (N, 32, 32, 3); "
            f"{code(f'dnsd eval --checkpoint {best}')} tests it again.", "",
            "## Auditing", "", f"From this folder, {code(f'dnsd audit {run} --all')} checks every file against the "
            "run's chain of custody, re-trains every epoch and checkpoint whose start is kept, recomputes the errors "
            "reported above, and says what it covered (bit for bit wherever the auditor's machine can reproduce the "
            "run; DNSD's docs/reproducing.md). Until then the results above are the run's own account, and the "
            "checksums say only which files these are.", ""]


def write_card(folder):
    """Write folder/MODEL_CARD.md (and its curves figure) for the runs in folder; returns the card's path."""
    runs = find_runs([folder])
    check_writable(folder)
    sweep = read_sweep(folder) if sweep_folders([folder]) else None
    grid = sweep["grid"] if sweep else {}  # a folder of seeds is a sweep without a grid: one configuration
    config_path = os.path.join(runs[0], CONFIG)
    config = config_from_dict(sweep["config"] if sweep else load_yaml(config_path), where=f" in {config_path}")
    finished = [run for run in runs if read_summary(run)]
    if not finished:
        raise InputError(f"{folder} holds no finished run (summary.json); write its card when training ends")
    summary = read_summary(finished[0])
    entries = read_manifest(finished[0])
    error, why = (None, "a sweep: the paper's numbers are each of one configuration") if grid else \
        published(config)
    best = os.path.relpath(os.path.join(finished[0], BEST), folder)  # never a path a file names
    entry = hub_entry(config.to_dict()["model"], config.data.dataset)
    # repr: a folder name's quotes and line breaks cannot end the string or the code block
    load = f'model = paddle.hub.load("PATH/TO/DNSD", "{entry or HUB_ANY_CHECKPOINT}", source="local", ' \
           f'checkpoint={best!r})'
    rows = summarise([folder])
    hours = sum(row["training_hours"] for row in rows)
    command = " ".join(entries[0]["command"]) if entries else None
    swept = escaped("; ".join(f"{key} over {', '.join(map(str, values))}" for key, values in grid.items()))
    title = f"A sweep of {', '.join(grid)}" if grid else model_title(config.model)
    text = [f"# {title} on {DATASETS[config.data.dataset]}, trained with DNSD", "", describe_recipe(config, grid)
            + (f" Swept: {swept}; each point with seeds {', '.join(map(str, sweep['seeds']))}." if grid else ""),
            "", "## Results", "",
            *result_rows(rows), "",
            f"Published: {f'{error:.2f} %' if error is not None else 'none'} ({why}; Huang et al., *Deep Networks "
            "with Stochastic Depth*, ECCV 2016).", "",
            "## Data", "", *data_lines(config, summary), "",
            "## Training", "", f"Command: {code(command) if command else 'not recorded'}; "
            f"{hours:.2f} hours of training{' over all runs' * (len(runs) > 1)}, evaluation aside.", "",
            "## Limitations", "", *limitations(config, summary, entries, finished), "",
            "## Training curves", "", f"![training loss, validation error and active blocks per epoch]({FIGURE})", "",
            "## Environment", "",
            *(f"- {line}" for line in (environment_lines(entries[-1]) if entries else
                                       ["no environment.json: trained before DNSD 1.1.0 wrote one"])), "",
            "## Checkpoints", "", *checkpoint_rows(folder, runs), "",
            *using_lines(load, best, os.path.relpath(finished[0], folder)), "## Licence and citation", "",
            "DNSD, which trained these weights, is licensed under Apache-2.0; the data set's own terms apply to the "
            "data. Cite the paper:", "", "```bibtex", CITATION, "```", ""]
    write_figure(draw_curves(runs), os.path.join(folder, FIGURE))
    path = os.path.join(folder, MODEL_CARD)
    write_text(path, "\n".join(text))
    return path
