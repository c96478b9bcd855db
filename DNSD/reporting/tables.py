"""Runs grouped by configuration apart from the seed, in the form of the paper's table: the test error of the
best-validation checkpoint as mean ± std over the seeds, and the difference of two rows with Welch's confidence
interval, which is how a user decides whether a change helped."""
import csv
import io
import math
import os
import statistics

from DNSD.errors import InputError
from DNSD.files import write_text
from DNSD.reporting.markdown import escaped
from DNSD.runs.folder import METRICS, find_runs, group_runs, read_records, read_summary, sweep_folders
from DNSD.sweeps.grid import grid_point_name, grid_points, progress, read_sweep, run_folder, sweep_runs

COLUMNS = ("configuration", "runs", "finished", "test_error_mean", "test_error_std", "test_error_min",
           "test_error_max", "last_test_error_mean", "best_val_error_mean", "training_hours", "seconds_per_epoch",
           "mean_active_blocks")
CONFIDENCE = 0.95


def read_run(folder):
    """The row values of one run, from its metrics and summary."""
    metrics = os.path.join(folder, METRICS)
    started = os.path.isfile(metrics) and os.path.getsize(metrics) > 0  # or trained by another command just now
    records = read_records(folder, ["val_error", "epoch_seconds", "mean_active_blocks"]) if started else []
    return {"folder": folder, "summary": read_summary(folder),
            "seconds": sum(record["epoch_seconds"] for record in records), "epochs": len(records),
            "active_blocks": statistics.mean(record["mean_active_blocks"] for record in records) if records else 0.0}


def summarise(folders):
    """One row per configuration (per grid point in a sweep's folder), in the order given; unfinished runs are
    counted, never averaged."""
    sweeps = sweep_folders(folders)
    others = [folder for folder in folders if folder not in sweeps]
    rows = [row for folder in sweeps for row in sweep_rows(folder)]
    groups = group_runs(others) if others else []
    return rows + [configuration_row(group["name"], group["folders"], group["seeds"]) for group in groups]


def sweep_rows(folder):
    """A row per grid point, started or not, with its swept values in columns of their own."""
    recorded = read_sweep(folder)
    rows = []
    for point in grid_points(recorded["grid"]):
        runs = [run_folder(folder, point, seed) for seed in recorded["seeds"]]
        row = configuration_row(grid_point_name(point) or os.path.basename(os.path.normpath(folder)), runs)
        row["swept"] = {key.split(".", 1)[1]: value for key, value in point.items()}
        row["sweep"] = folder
        rows.append(row)
    return rows


def configuration_row(name, folders, seeds=None):
    """The row of one configuration's runs; a finished run of a seed already counted on the same data (the same
    configuration, seed and data: the same weights) is set aside, so that a mean, a spread and a comparison count
    each seed once."""
    runs = [read_run(folder) for folder in folders]
    finished, repeats, counted = [], [], set()
    for run, seed in zip(runs, seeds or range(len(runs))):
        if run["summary"] and "test_error" in run["summary"]:
            repeat = (seed, (run["summary"].get("data") or {}).get("sha256"))
            (repeats if repeat in counted else finished).append(run)
            counted.add(repeat)
    errors = [run["summary"]["test_error"] for run in finished]
    last = [run["summary"]["last_test_error"] for run in finished if "last_test_error" in run["summary"]]
    return {
        "configuration": name,
        "runs": len(runs) - len(repeats), "finished": len(finished),
        "test_error_mean": statistics.mean(errors) if errors else None,
        "test_error_std": statistics.stdev(errors) if len(errors) > 1 else None,
        "test_error_min": min(errors, default=None), "test_error_max": max(errors, default=None),
        "last_test_error_mean": statistics.mean(last) if last else None,
        "best_val_error_mean": statistics.mean(run["summary"]["best_val_error"] for run in finished)
        if finished else None,
        "training_hours": sum(run["seconds"] for run in runs) / 3600,
        "seconds_per_epoch": sum(run["seconds"] for run in runs) / max(1, sum(run["epochs"] for run in runs)),
        "mean_active_blocks": statistics.mean(run["active_blocks"] for run in runs if run["epochs"])
        if any(run["epochs"] for run in runs) else 0.0,
        "test_errors": errors, "repeats": [run["folder"] for run in repeats],
        "unfinished": [run["folder"] for run in runs if run not in finished and run not in repeats], "swept": {}}


def sweep_lines(folder, x):
    """A sweep's finished grid points as lines against swept key x, one per combination of the other swept values:
    {label: [(x value, [test errors of its finished runs])]}, in grid order."""
    rows = sweep_rows(folder)
    if not rows or x not in rows[0]["swept"]:
        swept = ", ".join(rows[0]["swept"]) if rows and rows[0]["swept"] else "no key"
        raise InputError(f"{folder} does not sweep {x} (it sweeps {swept}); name a swept key with --x")
    lines = {}
    for row in rows:
        label = ", ".join(f"{key}={value}" for key, value in row["swept"].items() if key != x) or "runs"
        points = lines.setdefault(label, [])
        if row["test_errors"]:
            points.append((row["swept"][x], row["test_errors"]))
    return {label: points for label, points in lines.items() if points}


def sweep_grid(folder, x, y):
    """(x values, y values, {(x value, y value): grid row}) of a sweep of exactly the two keys x and y."""
    rows = sweep_rows(folder) if sweep_folders([folder]) else []
    swept = list(rows[0]["swept"]) if rows else []
    if sorted(swept) != sorted({x, y}) or x == y:
        what = f"it sweeps {', '.join(swept)}" if swept else "it sweeps no key (seeds alone)" if rows else \
            "it is not a sweep"
        raise InputError(f"--figure heatmap draws a sweep of two keys, {x} and {y} (choose them with --x and --y); "
                         f"{folder}: {what}; a sweep of two keys: dnsd train --config figure8_heatmap_cifar10")
    cells = {(row["swept"][x], row["swept"][y]): row for row in rows}
    return sorted({a for a, _ in cells}), sorted({b for _, b in cells}), cells


def welch(a, b):
    """Mean of b minus mean of a, its confidence interval and p-value by Welch's t-test (unequal variances)."""
    from scipy import stats  # 1.5 s to import: only a comparison pays it, not every training process

    variance_a, variance_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    error = math.sqrt(variance_a + variance_b)
    freedom = (variance_a + variance_b) ** 2 / (variance_a ** 2 / (len(a) - 1) + variance_b ** 2 / (len(b) - 1))
    difference = statistics.mean(b) - statistics.mean(a)
    half_width = stats.t.ppf(0.5 + CONFIDENCE / 2, freedom) * error
    p_value = stats.ttest_ind(b, a, equal_var=False).pvalue
    return difference, (difference - half_width, difference + half_width), float(p_value)


def named_row(rows, name):
    """The row a --compare value names: its configuration, or its number in the table (from 1)."""
    for number, row in enumerate(rows, 1):
        if name in (row["configuration"], str(number)):
            return row
    raise InputError(f"--compare {name}: no such row; name a configuration or a row number of: "
                     f"{', '.join(row['configuration'] for row in rows)}")


def comparison(rows, first, second):
    a, b = named_row(rows, first), named_row(rows, second)
    if min(len(a["test_errors"]), len(b["test_errors"])) < 2:
        raise InputError(f"--compare needs at least 2 seeds finished in each row (a seed's repeats count once); "
                         f"{a['configuration']} has {len(a['test_errors'])}, {b['configuration']} "
                         f"{len(b['test_errors'])}: run more seeds")
    names = escaped(f"{b['configuration']} - {a['configuration']}")
    if statistics.variance(a["test_errors"]) == statistics.variance(b["test_errors"]) == 0:
        difference = statistics.mean(b["test_errors"]) - statistics.mean(a["test_errors"])
        return (f"{names}: {difference:+.2f} points of test error, exactly: the "
                "runs of each row have the same test error, so there is no spread to give an interval")
    difference, (low, high), p_value = welch(a["test_errors"], b["test_errors"])
    return (f"{names}: {difference:+.2f} points of test error, "
            f"{CONFIDENCE:.0%} confidence interval [{low:+.2f}, {high:+.2f}] (Welch's t-test, p = {p_value:.3f})")


def number(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


def markdown(rows, compared=None, sweeps=None):
    lines = ["| configuration | runs | test error (%) | min | max | last epoch | best val error | hours | s/epoch | "
             "active blocks |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        spread = f" ± {row['test_error_std']:.2f}" if row["test_error_std"] is not None else ""
        error = f"{row['test_error_mean']:.2f}{spread}" if row["test_error_mean"] is not None else "unfinished"
        count = f"{row['finished']}" + (f" (+{row['runs'] - row['finished']} unfinished)" if row["unfinished"] else "")
        lines.append(f"| {escaped(row['configuration'])} | {count} | {error} | {number(row['test_error_min'])} | "
                     f"{number(row['test_error_max'])} | {number(row['last_test_error_mean'])} | "
                     f"{number(row['best_val_error_mean'])} | {number(row['training_hours'], 3)} | "
                     f"{number(row['seconds_per_epoch'], 1)} | {number(row['mean_active_blocks'])} |")
    unfinished = [folder for row in rows if not row["swept"] for folder in row["unfinished"]]  # a sweep: its progress
    if unfinished:
        lines.append(f"\nUnfinished, not averaged: {escaped(', '.join(unfinished))}")
    repeats = [folder for row in rows for folder in row["repeats"]]
    if repeats:
        lines.append(f"\nSet aside, a seed already counted in its row (the same configuration and seed): "
                     f"{escaped(', '.join(repeats))}")
    for folder in sweeps or ():
        recorded = read_sweep(folder)
        runs = sweep_runs(folder, recorded["grid"], recorded["seeds"])
        lines.append(f"\nSweep {escaped(folder)}: {progress(runs)}")
        lines += grid_table([row for row in rows if row.get("sweep") == folder])
    if compared:
        lines.append(f"\n{compared}")
    return "\n".join(lines) + "\n"


def grid_table(rows):
    """A sweep of two keys (its rows) as a grid of mean test errors: a row per value of its first key, a column per
    value of the second, each cell with its finished runs; [] for any other sweep."""
    keys = list(rows[0]["swept"]) if rows else []
    if len(keys) != 2:
        return []
    first, second = keys
    columns = list(dict.fromkeys(row["swept"][second] for row in rows))
    cells = {(row["swept"][first], row["swept"][second]): row for row in rows}
    lines = [f"\n| {first} \\ {second} | " + " | ".join(map(escaped, columns)) + " |",
             "| --- |" + " --- |" * len(columns)]
    for value in dict.fromkeys(row["swept"][first] for row in rows):
        row_cells = []
        for column in columns:
            cell = cells[(value, column)]
            error = number(cell["test_error_mean"]) or "unfinished"
            row_cells.append(f"{error} ({cell['finished']} of {cell['runs']})")
        lines.append(f"| {escaped(value)} | " + " | ".join(row_cells) + " |")
    return lines


def csv_text(rows):
    """The rows as CSV, a sweep's swept values in columns of their own after the configuration's name."""
    swept = list(dict.fromkeys(key for row in rows for key in row["swept"]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[COLUMNS[0], *swept, *COLUMNS[1:]], extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, **row["swept"]} for row in rows)
    return buffer.getvalue()


def default_summary_file(folders):
    """summary.md in the folder that holds the runs (the runs' common parent, or the sweep's folder)."""
    if len(folders) == 1 and sweep_folders(folders):
        return os.path.join(folders[0], "summary.md")
    parents = [os.path.dirname(os.path.abspath(folder)) for folder in find_runs(folders)]
    path = os.path.join(os.path.commonpath(parents), "summary.md")
    return path if os.path.relpath(path).startswith("..") else os.path.relpath(path)


def summarize_sweep(folder):
    """Write a finished sweep's summary.md and summary.csv into its folder; returns what to print (its workers call
    it: sweeps/workers.py)."""
    table, path = write_summary([folder], os.path.join(folder, "summary.md"))
    return f"{table}written to {path}"


def write_summary(folders, path=None, compare=None):
    """Write the table as path (Markdown; by default beside the runs) and beside it as CSV; returns the Markdown and
    the path."""
    path = path or default_summary_file(folders)
    if not path.endswith(".md") or os.path.isdir(path):
        raise InputError(f"--summary-file {path}: name a .md file (the CSV is written beside it)")
    rows = summarise(folders)
    sweeps = sweep_folders(folders)
    text = markdown(rows, comparison(rows, *compare) if compare else None, sweeps)
    write_text(path, text)
    write_text(path[: -len(".md")] + ".csv", csv_text(rows))
    return text, path

