"""The calibration of dnsd audit's within-noise test: its false alarms on honest runs of other numerics and its
detections of changed runs that claim the default recipe, each audited at an early epoch (1, from the seed, learning
rate 0.1) and a late one (3, from its kept epoch 2, learning rate 0.001) on this machine's default numerics, at two
depths. Honest runs: native CPU numerics at 1 and 2 threads, MKL's code paths 4 and 2, and (with --other-python)
another Paddle. Changed runs are trained with the change on MKL's code path 4 (so that the audit cannot ask for bit
identity), then changed with the public format to claim the default recipe and data, their chain sealed again
(scripts/forgery.py). Writes the results as JSON and prints BENCHMARKS.md's table.

    python scripts/audit_power.py --data-file cifar-10-mini.tar.gz --other-python .venv-paddle2.6/bin/python \\
        --output benchmarks/cpu-audit-calibration.json
"""
import argparse
import concurrent.futures
import hashlib
import io
import os
import pickle
import re
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmark import write_results  # noqa: E402
from DNSD.untrusted import DataUnpickler  # noqa: E402
from forgery import claim, claim_data, forge_state  # noqa: E402

# 1,000 training and 200 validation images: 20 steps an epoch at batch 50; the learning rate 0.1, 0.01, 0.001.
RUN = ["--batch-size", "50", "--epochs", "3", "--train-images", "1000", "--val-size", "200", "--keep-every", "1",
       "-o", "train.lr_decay_at=[0.5,0.75]", "-o", "run.cpu_threads=1"]
EPOCHS = (1, 3)
PATH_4 = {"MKL_DEBUG_CPU_TYPE": "4"}
HONEST = {"native numerics": ({}, ["--cpu-numerics", "native"]),
          "native numerics, 2 threads": ({}, ["--cpu-numerics", "native", "-o", "run.cpu_threads=2"]),
          "MKL code path 4": (PATH_4, []), "MKL code path 2": ({"MKL_DEBUG_CPU_TYPE": "2"}, [])}
# (the key trained otherwise, its value, the default it then claims)
CHANGED = {"learning rate x0.97": ("train.lr", 0.097, 0.1), "learning rate x1.03": ("train.lr", 0.103, 0.1),
           "weight decay x1.5": ("train.weight_decay", 1.5e-4, 1e-4),
           "weight decay x0.5": ("train.weight_decay", 5e-5, 1e-4), "momentum 0.85": ("train.momentum", 0.85, 0.9),
           "p_L 0.45": ("model.survival_last", 0.45, 0.5), "p_L 0.55": ("model.survival_last", 0.55, 0.5),
           "seed 1": ("run.seed", 1, 0)}
EDITED = ("10 % of the training images swapped", "the smallest fc bias edit that moves a prediction",
          "planted momentum (fc bias velocity -30)")
STATISTICS = ("tensors", "predictions", "step losses")


def swapped_archive(source, target, share=0.1, seed=0):
    """A copy of a CIFAR-10 archive whose training batches have `share` of their images swapped among themselves
    (labels left): read with DNSD's data-only unpickler, written back in the official layout."""
    rng = np.random.default_rng(seed)
    with tarfile.open(source) as archive, tarfile.open(target, "w:gz") as out:
        for member in archive.getmembers():
            payload = archive.extractfile(member).read()
            if "data_batch" in member.name:
                batch = DataUnpickler(io.BytesIO(payload), encoding="bytes").load()
                chosen = rng.choice(len(batch[b"data"]), int(share * len(batch[b"data"])), replace=False)
                batch[b"data"][chosen] = batch[b"data"][np.roll(chosen, 1)]
                payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(member.name)
            info.size = len(payload)
            out.addfile(info, io.BytesIO(payload))
    return target


def identity(path):
    with open(path, "rb") as stream:
        digest = hashlib.sha256(stream.read()).hexdigest()
    return {"file": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": digest}


def smallest_edit(state, config_path):
    """Raise one class's fc bias by the least that changes the predicted class of a validation image."""
    from DNSD.config import config_from_dict, load_yaml
    from DNSD.datasets import load_splits
    from DNSD.runs.checkpoint import restore_model
    from DNSD.training.evaluation import probabilities

    config = config_from_dict(load_yaml(config_path))
    data = load_splits(config, state["normalizer"])
    checked = dict(state, config=config)
    logits = np.log(probabilities(restore_model(checked, "edited"), data.val.images, 100, data.normalizer))
    predicted = logits.argmax(axis=1)
    margins = [(logits[i, predicted[i]] - logits[i, c], c) for i in range(len(logits)) for c in range(10)
               if c != predicted[i]]
    margin, target = min(margins)
    state["model"]["fc.bias"][target] += np.float32(margin * 1.001 + 1e-6)


def plant(state):
    state["optimizer"]["fc.bias_velocity_0"][3] = -30.0


def run_case(name, depth, args, python, env, extra, forge):
    """Train the case's run, forge it where asked, and audit its early and late epoch."""
    with tempfile.TemporaryDirectory() as folder:
        run_dir, data_file = os.path.join(folder, "run"), args.data_file
        if forge == "swapped":
            data_file = swapped_archive(args.data_file, os.path.join(folder, "swapped.tar.gz"))
        subprocess.run([python, "-m", "DNSD", "train", "--data-file", data_file, "--output-dir", run_dir, *RUN,
                        "--depth", str(depth), *extra], check=True, capture_output=True, env={**os.environ, **env})
        if isinstance(forge, tuple):
            claim(run_dir, forge[0], forge[2])
        elif forge == "swapped":
            claim_data(run_dir, identity(args.data_file))
        results = []
        for epoch in EPOCHS:
            if forge == "edit":
                forge_state(run_dir, epoch, lambda state: smallest_edit(state, os.path.join(run_dir, "config.yaml")))
            elif forge == "plant":
                forge_state(run_dir, epoch, plant)
            results.append({"case": name, "depth": depth, "epoch": epoch, "honest": forge is None,
                            **audit(run_dir, epoch, args)})
        return results


def audit(run_dir, epoch, args):
    started = time.perf_counter()
    # The auditor's own numerics, the default (portable), whatever the run's config says.
    result = subprocess.run([sys.executable, "-m", "DNSD", "audit", run_dir, "--epoch", str(epoch), "--data-file",
                             args.data_file, "--cpu-numerics", "portable"], capture_output=True, text=True)
    verdict = re.search(rf"^audit: epoch {epoch}: (verified|failed|cannot be verified): (.*)$", result.stdout,
                        re.MULTILINE)
    found = dict(re.findall(r"^  (tensors|predictions|step losses): ([0-9.e+-]+|inf)x", result.stdout, re.MULTILINE))
    return {"seconds": time.perf_counter() - started, "exit": result.returncode,
            "outcome": verdict.group(1) if verdict else None,
            "verdict": verdict.group(2) if verdict else result.stderr.strip()[-300:],
            **{statistic: float(ratio) for statistic, ratio in found.items()}}


def table(results):
    """BENCHMARKS.md's table: a row per case, depth and epoch."""
    rows = ["| run | claims | depth | epoch | tensors | predictions | step losses | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in results:
        kind = "bit-identical" if row["verdict"].startswith("bit-identical") else row["outcome"]
        ratios = [f"{row[statistic]:.3g}" if statistic in row else "" for statistic in STATISTICS]
        rows.append(f"| {row['case']} | {'honestly' if row['honest'] else 'the default'} | {row['depth']} | "
                    f"{row['epoch']} | {' | '.join(ratios)} | {kind} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-file", required=True, help="a CIFAR-10 archive")
    parser.add_argument("--depths", default="8,14", help="the depths, separated by commas (default 8,14)")
    parser.add_argument("--other-python", help="a Python with another Paddle, for honest runs of another build")
    parser.add_argument("--only", help="the cases to run: substrings of their names, separated by |")
    parser.add_argument("--workers", type=int, default=2, help="cases trained at once (default 2)")
    parser.add_argument("--output", default=os.devnull, help="the results file (JSON)")
    args = parser.parse_args()
    cases = {name: (sys.executable, env, extra, None) for name, (env, extra) in HONEST.items()}
    if args.other_python:
        version = subprocess.run([args.other_python, "-c", "import paddle; print(paddle.__version__)"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        cases[f"Paddle {version}, native numerics"] = (args.other_python, {}, ["--cpu-numerics", "native"], None)
    cases.update({name: (sys.executable, PATH_4, ["-o", f"{key}={value}"], (key, value, claimed))
                  for name, (key, value, claimed) in CHANGED.items()})
    cases.update({name: (sys.executable, PATH_4, [], forge)
                  for name, forge in zip(EDITED, ("swapped", "edit", "plant"))})
    chosen = [(name, int(depth), *case) for name, case in cases.items() for depth in args.depths.split(",")
              if not args.only or any(part in name for part in args.only.split("|"))]
    results = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "run": RUN, "audits": []}
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        for found in pool.map(lambda case: run_case(case[0], case[1], args, *case[2:]), chosen):
            results["audits"] += found
            for row in found:
                print(f"{row['case']}, depth {row['depth']}, epoch {row['epoch']}: {row['outcome']} "
                      f"{[row.get(statistic) for statistic in STATISTICS]}", file=sys.stderr, flush=True)
    write_results(results, args.output)
    print(table(results["audits"]))


if __name__ == "__main__":
    main()
