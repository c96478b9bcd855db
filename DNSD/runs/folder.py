"""The rules of a run folder: what DNSD writes there, what a new run may replace, which folders hold a sweep's runs,
and how runs group into configurations (one live run per folder: locks.py; what a resume may change: changes.py)."""
import difflib
import fnmatch
import glob
import json
import os
import shutil
import sys
import tempfile

from DNSD.changes import experiment, setting
from DNSD.config import config_from_dict, load_yaml
from DNSD.errors import InputError
from DNSD.files import TEMPORARY_PREFIX, append_line, file_digest, read_json, write_text
from DNSD.runs.shapes import NUMBER, TEXT, Optional, conforms, mapping_of

# The files of a run folder.
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"  # one JSON record per finished epoch
EVALUATION_POINTS = "points.jsonl"  # with run.eval_every_iterations: a record per evaluation point (validation, test)
SUMMARY = "summary.json"
BRANCH = "branch.json"
# A copy of the checkpoint a branch started from: its first epoch's start, for dnsd audit.
BRANCH_START = "branch.pdckpt"
SWEEP = "sweep.json"  # in a sweep's folder: the grid, seeds and config of its runs POINT/seed-K/ (sweeps/grid.py)
OLD_SEEDS = "seeds.json"  # DNSD 1.1's --seeds folders, read as sweeps without a grid
ERROR_LOG = "error.log"
MANIFEST = "environment.json"  # what produced each session of the run (manifest.py)
MODEL_CARD = "MODEL_CARD.md"  # dnsd card
VISUALDL = "vdl"
BEST = "best.pdckpt"  # the checkpoint of the epoch with the lowest validation error
LAST = "last.pdckpt"  # the checkpoint a resume continues from
KEPT = "epoch-{}.pdckpt"  # with run.keep_every: the checkpoint of an epoch, kept for dnsd audit
# Everything DNSD writes into a run folder, as fnmatch patterns: --overwrite removes these and nothing else.
WRITTEN = (CONFIG, METRICS, EVALUATION_POINTS, SUMMARY, BRANCH, BRANCH_START, ERROR_LOG, VISUALDL, BEST, LAST,
           "best.*.json", "last.*.json", "best-inference", "last-inference", f"{TEMPORARY_PREFIX}*", MANIFEST,
           MODEL_CARD, "MODEL_CARD-*.png", KEPT.format("*"))
# What makes a folder hold a run that a new one would replace.
RUN_MARKS = (CONFIG, METRICS, BEST, LAST)


def written_files(run_dir):
    """The paths of what DNSD wrote in run_dir (the lock aside)."""
    names = os.listdir(run_dir) if os.path.isdir(run_dir) else []
    return [os.path.join(run_dir, name) for name in sorted(names)
            if any(fnmatch.fnmatch(name, pattern) for pattern in WRITTEN)]


def holds_run(run_dir):
    """The first file that shows run_dir holds a run, or None."""
    marks = [name for name in RUN_MARKS if os.path.exists(os.path.join(run_dir, name))]
    return marks[0] if marks else None


TITLED = ("model.arch", "model.depth", "model.width")  # keys a model's title names


def default_run_dir(config_file, flags, config, parent="runs", numbered=True):
    """runs/CONFIG-MODEL, plus each flag that changes the model or the recipe (the title names arch, depth and width),
    e.g. runs/quick-ResNet-8-epochs=3; where that holds a run, the first of its -2, -3, ... that does not (unless
    numbered is False: a sweep's workers started with one command share its folder)."""
    from DNSD.models import model_title  # the models import Paddle, which the command line loads after quieting it

    name = os.path.basename(config_file or "resnet110_sd")
    parts = [name[: -len(".yaml")] if name.endswith(".yaml") else name, model_title(config.model)]
    for key, value in flags.items():
        if key not in TITLED and not setting(key):
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{key.split('.', 1)[1]}={text}".replace(os.sep, "_"))
    base = os.path.join(parent, "-".join(parts))
    folder, number = base, 1
    while numbered and (holds_run(folder) or sweep_folders([folder])):
        number += 1
        folder = f"{base}-{number}"
    return folder


def checkpoint_in(path):
    """The checkpoint a --checkpoint names: that file, or a run folder's best.pdckpt (said on standard error)."""
    if not os.path.exists(path):
        nearest = nearest_run(path)
        hint = f"; the nearest run folder is {nearest}" if nearest else \
            "; pass the folder of a training run, or a .pdckpt in it"
        raise InputError(f"--checkpoint {path} does not exist{hint}")
    if not os.path.isdir(path):
        return path
    best = os.path.join(path, BEST)
    if os.path.isfile(best):
        print(f"DNSD: --checkpoint {path} is a run folder: using its best checkpoint, {best}", file=sys.stderr)
        return best
    if sweep_folders([path]):
        runs = sorted(glob.glob(os.path.join(glob.escape(path), "**", "seed-*"), recursive=True))
        example = f", e.g. --checkpoint {runs[0]}" if runs else ""
        raise InputError(f"{path} holds a sweep's runs, one per grid point and seed; name one of them{example}")
    raise InputError(f"{path} holds no {BEST}: pass the folder of a run that has finished an epoch, or a .pdckpt file")


def nearest_run(path):
    """The run folder beside a path that does not exist whose name is nearest its own (one that extends it first,
    as runs/quick-ResNet-20-val_size=500 extends runs/quick-ResNet-20), or None."""
    parent, name = os.path.split(os.path.normpath(path))
    try:
        runs = sorted(entry for entry in os.listdir(parent or ".") if holds_run(os.path.join(parent, entry)))
    except OSError:
        return None
    found = [run for run in runs if run.startswith(name)] or difflib.get_close_matches(name, runs, n=1)
    return os.path.join(parent, found[0]) if found else None


def sweep_folders(folders):
    """The folders of those given that hold a sweep (a folder of --seeds is one without a grid)."""
    return [folder for folder in folders
            if any(os.path.isfile(os.path.join(folder, name)) for name in (SWEEP, OLD_SEEDS))]


def refuse_existing_run(run_dir, overwrite):
    """A new run may not take a folder that holds one, unless overwrite."""
    mark = holds_run(run_dir)
    if mark and not overwrite:
        raise InputError(f"{run_dir} already holds a run ({mark}); continue it with --resume {run_dir}, replace it "
                         "with --overwrite, or choose another --output-dir")


def remove(paths):
    for path in paths:
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def remove_temporaries(run_dir):
    """Temporary files of DNSD's own writes that a killed process left behind (call while holding the lock)."""
    remove(path for path in written_files(run_dir) if os.path.basename(path).startswith(TEMPORARY_PREFIX))


def check_writable(folder):
    """Fail early, with one line, where folder cannot take a new file (it is created if missing)."""
    try:
        os.makedirs(folder, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=folder)
        os.close(descriptor)
        os.remove(probe)
    except OSError as error:
        raise InputError(f"cannot write to folder {folder} ({error.strerror}); choose another folder or fix its "
                         "permissions") from None


def append_record(run_dir, record, name=METRICS):
    """Add an epoch's record to the run's metrics.jsonl (or a point's to points.jsonl)."""
    append_line(os.path.join(run_dir, name), json.dumps(record) + "\n")


def write_records(run_dir, records, name=METRICS):
    """Replace metrics.jsonl (or points.jsonl) by these records (a resume drops the lines of work it is about to
    redo)."""
    write_text(os.path.join(run_dir, name), "".join(json.dumps(record) + "\n" for record in records))


def read_evaluation_points(run_dir):
    """The points of a run measured every run.eval_every_iterations iterations (none for other runs)."""
    path = os.path.join(run_dir, EVALUATION_POINTS)
    if not os.path.isfile(path) or not os.path.getsize(path):
        return []
    return read_records(run_dir, ["iteration", "val_error", "test_error"], EVALUATION_POINTS)


MAX_RECORD_BYTES = 1 << 20  # a record is its step losses, about 20 bytes a step: 100 kB for SVHN's 4,675 steps
MAX_RECORDS_BYTES = 256 << 20  # a file of records: 3.5 MB for 500 CIFAR epochs
MAX_RECORDS = 1 << 20  # lines of one metrics.jsonl or points.jsonl: a run of a million epochs or points is not DNSD's
# What a record's fields hold where present (older runs lack some): a crafted line is refused, never a crash.
RECORD = {"epoch": int, **{name: Optional(NUMBER) for name in (
    "train_loss", "train_error", "mean_active_blocks", "val_error", "test_error", "lr", "epoch_seconds",
    "images_per_second", "step", "iteration")}, "gradients": Optional({}), "step_losses": Optional([NUMBER]),
    "weights_sha256": Optional(TEXT), "environment_sha256": Optional(TEXT), "state_sha256": Optional(TEXT)}


def read_records(run_dir, fields, name=METRICS):
    """The epoch records of a run (finished or not) that metrics.jsonl holds (or the points of points.jsonl), each
    with at least these fields, each field of the shape RECORD gives it; lines are read with a cap."""
    path, kind = os.path.join(run_dir, name), "a point" if name == EVALUATION_POINTS else "an epoch"
    if not os.path.isfile(path):
        raise InputError(f"{run_dir} holds no {name}; pass the output folder of a training run")
    if os.path.getsize(path) > MAX_RECORDS_BYTES:
        raise InputError(f"{path} is {os.path.getsize(path):,} bytes, over the {MAX_RECORDS_BYTES >> 20} MiB DNSD "
                         "reads of it; the file was edited or damaged")
    records = []
    with open(path, "rb") as stream:
        for number in range(1, MAX_RECORDS + 2):
            line = stream.readline(MAX_RECORD_BYTES + 1)
            if not line:
                break
            if len(line) > MAX_RECORD_BYTES or number > MAX_RECORDS:
                raise InputError(f"{path} line {number}: longer, or further down, than any record DNSD writes; the "
                                 "file was edited or damaged")
            if line.strip():
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    record = None
                if not conforms(record, RECORD) or not set(fields) <= set(record) or \
                        not mapping_of(record.get("gradients", {}), NUMBER):
                    if not line.endswith(b"\n") and not stream.read(1):
                        # append_line writes a record and its newline at once: a last line without one is a write
                        # that a crash cut short, whose epoch or point does not count as done.
                        print(f"DNSD: {path} ends in a line cut short (a crash while writing it); set aside, and "
                              "rewritten when the run is resumed", file=sys.stderr)
                        break
                    raise InputError(f"{path} line {number} is not {kind} record; the file was edited or damaged")
                records.append(record)
    if not records:
        raise InputError(f"{path} holds no epoch yet; plot the run after its first epoch")
    return records


def branched_at(run_dir):
    """(epochs done, step) where a branched run left the run it branched from (its branch.json), or None."""
    path = os.path.join(run_dir, BRANCH)
    if not os.path.isfile(path):
        return None
    branch = read_json(path)
    position = (branch.get("epochs_done"), branch.get("step", 0)) if isinstance(branch, dict) else None
    if position is None or not all(type(value) is int and value >= 0 for value in position):
        raise InputError(f"{path} is damaged; restore it from a copy of the run folder")
    return position


def find_runs(folders):
    """The run folders named, a folder of runs (a sweep's folder, or runs/ itself, at any depth) standing for the runs
    in it."""
    runs = []
    for folder in folders:
        inside = []
        for path, names, _ in os.walk(folder):
            if os.path.isfile(os.path.join(path, CONFIG)):
                inside.append(path)
                names.clear()  # a run's own subfolders (vdl, exports) hold no runs
            names.sort()
        if not inside:
            raise InputError(f"{folder} holds no run ({CONFIG}) and no folder of runs; pass training output folders")
        runs.extend(inside)
    return runs


def group_runs(folders):
    """The runs of the folders grouped by configuration (config.experiment: all but the seed and what does not change
    the result), in the order given: [{"name", "names": [folder names], "folders": [run folders], "seeds": [each
    run's seed]}]. A run named seed-K is named after the folder that holds it."""
    groups = {}
    for folder in find_runs(folders):
        path = os.path.join(folder, CONFIG)
        # Validated, and with the defaults of keys added since the run was made, so that old and new runs compare.
        config = config_from_dict(load_yaml(path), where=f" in {path}")
        key = json.dumps(experiment(config.to_dict()), sort_keys=True)
        name = os.path.basename(os.path.normpath(folder))
        if name.startswith("seed-"):
            name = os.path.basename(os.path.dirname(os.path.normpath(folder)))
        groups.setdefault(key, {"names": [], "folders": [], "seeds": []})
        groups[key]["names"].append(name)
        groups[key]["folders"].append(folder)
        groups[key]["seeds"].append(config.run.seed)
    for group in groups.values():
        group["name"] = " / ".join(dict.fromkeys(group["names"]))
    return list(groups.values())


SUMMARY_SHAPE = {"test_error": NUMBER, "best_epoch": Optional(int), "best_val_error": NUMBER,
                 "last_test_error": Optional(NUMBER), "checkpoint": Optional(str),
                 "data": Optional({"file": TEXT, "bytes": Optional((int, type(None))), "sha256": Optional(TEXT)}),
                 "tied_best_epochs": Optional([int]), "images": Optional({"train": int, "val": int, "test": int})}


def read_summary(folder):
    """A finished run's summary.json, or None while it trains."""
    path = os.path.join(folder, SUMMARY)
    if not os.path.isfile(path):
        return None
    summary = read_json(path)
    if not conforms(summary, SUMMARY_SHAPE):
        raise InputError(f"{path} is damaged (not a run summary); train the run again or remove the file")
    return summary


def data_file_digest(config):
    """The sha256 of the archive file a config names; None for the data set's own cache, or a folder (SVHN)."""
    path = config.data.data_file
    return file_digest(path, "sha256") if path and os.path.isfile(path) else None
