"""A sweep: the runs of a grid of config values times seeds, each an ordinary run in OUTPUT_DIR/POINT/seed-K, and
sweep.json, the grid and the config they share. A later command with a larger grid of the same config adds points;
--seeds alone is a sweep without a grid, its runs in OUTPUT_DIR/seed-K."""
import itertools
import os

from DNSD.changes import experiment, for_checkpoint, passed_on, sweep_refusal
from DNSD.config import SWEEP_SECTION, build_config, config_from_dict, flat_config, load_yaml, parse_value, set_value
from DNSD.errors import InputError
from DNSD.files import read_json, write_json, write_text
from DNSD.runs.folder import LAST, OLD_SEEDS, SUMMARY, SWEEP, data_file_digest, holds_run, sweep_folders
from DNSD.runs.locks import LOCK_WAIT_SECONDS, held, run_lock
from DNSD.runs.shapes import TEXT, conforms
from DNSD.schema import fields_by_key

BASE_CONFIG = "sweep.yaml"  # the config every run starts from, before its point's values and its seed
MAX_RUNS = 10_000  # runs one sweep may hold; each is hours on a GPU
MAX_SEEDS = 1000  # seeds one command may name


def sweep_key(name):
    """The section.key a --sweep or sweep: entry names, as section.key or as the key alone."""
    known = fields_by_key()
    matches = [name] if name in known else [key for key in known if key.split(".", 1)[1] == name]
    if len(matches) != 1:
        raise InputError(f"--sweep {name}: no such config key; name one as section.key, e.g. model.survival_last")
    key = matches[0]
    reason = sweep_refusal(key)
    if reason:
        raise InputError(f"--sweep {key}: this key cannot vary within a sweep ({reason})")
    return key


def parse_sweep(specs):
    """{section.key: [values]} of --sweep KEY=V1,V2,... flags (repeatable)."""
    grid = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        if not sep or not text.strip():
            raise InputError(f"--sweep {spec}: expected KEY=V1,V2,..., e.g. --sweep model.survival_last=0.2,0.5")
        key = sweep_key(name.strip())
        kind = fields_by_key()[key][1]
        add_values(grid, key, [parse_value(value.strip(), kind, key) for value in text.split(",")], f"--sweep {spec}")
    return grid


def sweep_from_yaml(entries, where):
    """{section.key: [values]} of a config file's sweep: section ({KEY: [values]})."""
    if not isinstance(entries, dict) or not entries:
        raise InputError(f"the sweep section{where} must map config keys to lists of values, e.g. "
                         "model.survival_last: [0.2, 0.5]")
    grid = {}
    for name, values in entries.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"sweep key {name}{where}: expected a list of values, e.g. [0.2, 0.5]")
        add_values(grid, sweep_key(str(name)), values, f"sweep key {name}{where}")
    return grid


def read_grid(config_file, specs, explicit):
    """The grid of a command: its config file's sweep: section, then its --sweep flags (a flag replaces the file's
    list of the same key). A key that a flag or -o also sets is refused: it would be two things at once."""
    grid = {}
    entries = load_yaml(config_file).get(SWEEP_SECTION) if config_file else None
    if entries is not None:
        grid.update(sweep_from_yaml(entries, f" in {config_file}"))
    grid.update(parse_sweep(specs))
    for key in grid:
        if key in explicit:
            raise InputError(f"{key} is both swept and set by a flag or -o; leave one out")
    return grid


def parse_seeds(text):
    """The seeds of --seeds: a list (0,1,2) or a range (0-3), or both (0-2,7); at most MAX_SEEDS, each a valid
    run.seed, checked before any training."""
    ranges = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            ranges.append((int(first), int(last or first)))
        except ValueError:
            raise InputError(f"--seeds {text}: expected seeds as 0,1,2 or a range 0-3") from None
    if sum(max(0, last - first + 1) for first, last in ranges) > MAX_SEEDS:
        raise InputError(f"--seeds {text}: more than {MAX_SEEDS} seeds in one command; name fewer")
    seeds = [seed for first, last in ranges for seed in range(first, last + 1)]
    if not seeds or len(set(seeds)) != len(seeds) or not all(0 <= seed < 2**32 for seed in seeds):
        raise InputError(f"--seeds {text}: expected distinct seeds in [0, 2^32), e.g. 0,1,2 or 0-3")
    return seeds


def worker_overrides(explicit):
    """The -o values a worker passes to the runs it trains: what this command set of where and how they compute."""
    return [(key, format_value(value)) for key, value in explicit.items() if passed_on(key)]


def add_values(grid, key, values, where):
    """Add values to grid[key], each converted and checked as the config's key; a repeated one is refused."""
    converted, seen = {}, {format_value(value) for value in grid.setdefault(key, [])}
    for value in values:
        set_value(converted, key, value, f" ({where})")
        if format_value(converted[key]) in seen:
            raise InputError(f"{where}: {converted[key]!r} is listed twice")
        seen.add(format_value(converted[key]))
        grid[key].append(converted[key])


def grid_points(grid):
    """Every combination of the grid's values, as {section.key: value}, the first key varying slowest."""
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def format_value(value):
    """A value as a folder name and an -o override write it (YAML reads it back as the same value)."""
    return "true" if value is True else "false" if value is False else str(value)


def grid_point_name(point):
    """The folder of a grid point: its values by key name, e.g. survival_last=0.5,survival_mode=uniform."""
    return ",".join(f"{key.split('.', 1)[1]}={format_value(value)}" for key, value in point.items())


def sweep_runs(folder, grid, seeds):
    """[(point, seed, run folder)] in the order workers claim them: every point of one seed before the next seed,
    so that a sweep stopped halfway has whole curves."""
    return [(point, seed, run_folder(folder, point, seed)) for seed in seeds for point in grid_points(grid)]


def run_folder(folder, point, seed):
    """A run's folder in the sweep's, refused where a symbolic link on the way leads out of it."""
    path = os.path.join(folder, grid_point_name(point), f"seed-{seed}")
    if os.path.commonpath([os.path.realpath(folder), os.path.realpath(path)]) != os.path.realpath(folder):
        raise InputError(f"{path} leads out of the sweep folder {folder} (a symbolic link); DNSD reads and writes a "
                         "sweep's runs only inside it: replace the link by the folder")
    return path


def run_state(run_dir, claimed=False):
    """finished, held (a live process trains it), stopped (it has a checkpoint to resume) or new; claimed: this
    process holds the run's lock."""
    if os.path.isfile(os.path.join(run_dir, SUMMARY)):
        return "finished"
    if not claimed and held(run_dir):
        return "held"
    return "stopped" if os.path.isfile(os.path.join(run_dir, LAST)) else "new"


def progress(runs):
    states = [run_state(run_dir) for _, _, run_dir in runs]
    return (f"{states.count('finished')} of {len(runs)} runs finished, {states.count('held')} training, "
            f"{len(runs) - states.count('finished') - states.count('held')} left")


def read_sweep(folder):
    """What a sweep folder's sweep.json records: {"grid", "seeds", "config", "data_sha256"}."""
    path = os.path.join(folder, SWEEP)
    if not os.path.isfile(path) and os.path.isfile(os.path.join(folder, OLD_SEEDS)):
        return read_old_seeds(folder)
    recorded = read_json(path)
    damaged = f"{path} is damaged (not the grid and config of a sweep); restore it, or start the sweep in a new folder"
    if not conforms(recorded, {"grid": {}, "seeds": [int], "config": {}, "data_sha256": TEXT}):
        raise InputError(damaged)
    check_recorded(recorded, path)
    return recorded


def check_recorded(recorded, path):
    """A sweep file's grid and seeds, checked as a command's would be, in time linear in the file: keys of the
    schema that may be swept, values the config accepts, each point a folder of the sweep, at most MAX_RUNS runs."""
    grid, seeds = recorded["grid"], recorded["seeds"]
    count = len(seeds)
    for values in grid.values():
        count *= len(values) if isinstance(values, list) else 0
        if count > MAX_RUNS:
            raise InputError(f"{path} names more than {MAX_RUNS:,} runs; it was not written by DNSD: restore it, or "
                             "start the sweep in a new folder")
    if not count or len(set(seeds)) != len(seeds) or not all(0 <= seed < 2**32 for seed in seeds):
        raise InputError(f"{path}: its seeds or a key's values are empty, repeated or out of range; restore it")
    for key, values in grid.items():
        try:
            if sweep_key(key) != key:
                raise InputError(f"{key} is not a key's full name")
            checked = {}
            add_values(checked, key, values, "its values")
            grid[key] = checked[key]
            for value in grid[key]:
                name = grid_point_name({key: value})
                if os.sep in name or (os.altsep and os.altsep in name) or "\0" in name:
                    raise InputError(f"{name!r} is no folder name")
        except InputError as error:
            raise InputError(f"{path}: grid key {key!r}: {error}; restore the file, or start the sweep in a new "
                             "folder") from None
    flat = flat_config(config_from_dict(recorded["config"], where=f" in {path}"))
    for point in grid_points(grid):  # at most MAX_RUNS: each point's values together, as open_sweep checks them
        try:
            build_config({**flat, **point})
        except InputError as error:
            raise InputError(f"{path}: grid point {grid_point_name(point)}: {error}; restore the file") from None


def open_sweep(config, grid, seeds):
    """Record a sweep in config.run.output_dir, or add this command's points and seeds to the one there; returns
    the sweep as recorded. Another config, other swept keys or another archive are refused."""
    folder = config.run.output_dir
    for point in grid_points(grid):  # each point's values together (a depth must suit the arch), before any trace
        build_config({**flat_config(config), **point})
    if config.data.data_file:  # the workers may start elsewhere: the archive is named by its full path
        config.data.data_file = os.path.abspath(config.data.data_file)
    shared, digest = config.to_dict(), data_file_digest(config)
    if holds_run(folder):
        raise InputError(f"{folder} holds a run of its own ({holds_run(folder)}); choose another --output-dir for "
                         "the sweep")
    with run_lock(folder, wait=LOCK_WAIT_SECONDS):  # workers started at once take turns; none loses another's points
        recorded = {"grid": grid, "seeds": seeds, "config": shared, "data_sha256": digest}
        if sweep_folders([folder]):
            recorded = merged(folder, read_sweep(folder), recorded)
        count = len(grid_points(recorded["grid"])) * len(recorded["seeds"])
        if count > MAX_RUNS:
            raise InputError(f"the sweep would hold {count:,} runs, more than {MAX_RUNS:,}; sweep fewer values")
        write_json(os.path.join(folder, SWEEP), recorded)
        write_text(os.path.join(folder, BASE_CONFIG), config.to_yaml())
    return recorded


def merged(folder, recorded, new):
    """The recorded sweep with the new command's values and seeds added, refusing a sweep it cannot join."""
    if experiment(recorded["config"]) != experiment(new["config"]):
        raise InputError(f"{folder} holds a sweep of another config ({SWEEP}); use the same config and flags, or "
                         "choose another --output-dir")
    if list(recorded["grid"]) != list(new["grid"]):
        swept = [", ".join(grid) or "no key (seeds alone)" for grid in (recorded["grid"], new["grid"])]
        raise InputError(f"{folder} sweeps {swept[0]}; this command sweeps {swept[1]}; sweep the same keys, or "
                         "choose another --output-dir")
    check_archive(folder, recorded, new["config"]["data"]["data_file"], new["data_sha256"])
    grid = {key: values + [value for value in new["grid"][key] if value not in values]
            for key, values in recorded["grid"].items()}
    seeds = recorded["seeds"] + [seed for seed in new["seeds"] if seed not in recorded["seeds"]]
    return {**recorded, "grid": grid, "seeds": seeds}


def check_archive(folder, recorded, data_file, digest):
    """Every run of a sweep trains on one archive: the one its sweep.json names by sha256."""
    if recorded["data_sha256"] and digest and digest != recorded["data_sha256"]:
        raise InputError(f"{data_file} is not the archive the sweep in {folder} trains on (sha256 "
                         f"{recorded['data_sha256'][:12]}...); pass that archive with --data-file")


def resume_sweep(folder, stated):
    """The sweep in folder, to go on with: a stated value that would change what its runs compute is refused, as a
    run's resume refuses it, and so is another archive; a folder of DNSD 1.1's --seeds is recorded as a sweep."""
    with run_lock(folder, wait=LOCK_WAIT_SECONDS):
        recorded = read_sweep(folder)
        config = for_checkpoint(config_from_dict(recorded["config"], where=f" in {folder}"),
                                {**stated, "run.output_dir": folder}, "--resume", f"the sweep in {folder}")
        check_archive(folder, recorded, config.data.data_file, data_file_digest(config))
        if not os.path.isfile(os.path.join(folder, SWEEP)):
            write_json(os.path.join(folder, SWEEP), recorded)
            write_text(os.path.join(folder, BASE_CONFIG), config_from_dict(recorded["config"]).to_yaml())
    return recorded


def read_old_seeds(folder):
    """A folder of DNSD 1.1's --seeds (seeds.json: the seeds, the config of its runs seed-K/, the archive's sha256),
    as a sweep without a grid."""
    path = os.path.join(folder, OLD_SEEDS)
    recorded = read_json(path)
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict) or \
            not isinstance(recorded.get("seeds"), list) or not all(type(seed) is int for seed in recorded["seeds"]) \
            or not isinstance(recorded.get("data_sha256"), (str, type(None))):
        raise InputError(f"{path} is damaged (not the seeds and config of a --seeds folder); restore it, or train "
                         "the seeds into a new folder")
    return {"grid": {}, "seeds": recorded["seeds"], "config": recorded["config"],
            "data_sha256": recorded["data_sha256"]}
