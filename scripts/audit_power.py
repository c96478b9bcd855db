"""What dnsd audit catches across builds: runs trained with other numerics (honest: other threads, another MKL code
path, another Paddle) and runs whose recipe differs from the one their config claims (forged: the config and the
checkpoints re-sealed to the claimed recipe), each audited at epoch 2 from the run's own epoch-1 checkpoint on this
machine's default numerics. Results as JSON (BENCHMARKS.md, docs/reproducing.md).

    python scripts/audit_power.py --data-file cifar-10-mini.tar.gz --output benchmarks/cpu-audit-power-resnet20.json
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmark import write_results  # noqa: E402
from DNSD.config import config_from_dict, load_yaml  # noqa: E402
from DNSD.runs.checkpoint_file import read_checkpoint, save_checkpoint  # noqa: E402
from DNSD.training.optimizer import rate_at  # noqa: E402

# ResNet-20 (by default on 4,000 images: 32 steps an epoch at batch 128) with the learning rate 0.1 up to the audited
# epoch, trained one epoch beyond it.
RUN = ["--config", "quick", "-o", "train.lr_decay_at=1.0", "--keep-every", "1"]
HONEST = {"2 CPU threads": ({}, ["-o", "run.cpu_threads=2"]), "MKL code path 4": ({"MKL_DEBUG_CPU_TYPE": "4"}, []),
          "MKL code path 2": ({"MKL_DEBUG_CPU_TYPE": "2"}, [])}
# Trained with MKL code path 4, so that the audit runs across numerics; then claimed to be the default recipe.
CHANGED = {f"learning rate x{factor}": ("train.lr", round(0.1 * factor, 6)) for factor in (1.003, 1.01, 1.03, 1.1)} | \
    {f"weight decay x{factor}": ("train.weight_decay", round(1e-4 * factor, 9)) for factor in (1.1, 1.5, 2, 5)} | \
    {f"survival p_L {value}": ("model.survival_last", value) for value in (0.51, 0.55, 0.6)} | \
    {"seed 1 for 0": ("run.seed", 1)}
CLAIMED = {"train.lr": 0.1, "train.weight_decay": 1e-4, "model.survival_last": 0.5, "run.seed": 0}  # the defaults


def train(python, run_dir, args, env, extra):
    subprocess.run([python, "-m", "DNSD", "train", "--data-file", args.data_file, "--output-dir", run_dir, *RUN,
                    "--epochs", str(args.epoch + 1), "--train-images", str(args.train_images), "--val-size",
                    str(args.val_size), *extra],
                   check=True, capture_output=True, env={**os.environ, **env})


def claim(run_dir, key, value):
    """Make the run say key was value, as a forger would: config.yaml and every checkpoint's config, re-sealed."""
    section, name = key.split(".")
    path = os.path.join(run_dir, "config.yaml")
    raw = load_yaml(path)
    raw.setdefault(section, {})[name] = value
    with open(path, "w") as stream:
        stream.write(config_from_dict(raw).to_yaml())
    for file in os.listdir(run_dir):
        if file.endswith(".pdckpt"):
            state = read_checkpoint(os.path.join(run_dir, file))
            state["config"][section][name] = value
            if key == "train.lr":  # the rate the schedule stands at, as the claimed recipe would have it
                state["scheduler"]["last_lr"] = rate_at(config_from_dict(state["config"]).train, state["epochs_done"])
            save_checkpoint(os.path.join(run_dir, file), state)


def forge_weights(run_dir, epoch):
    """The fc weight + 0.05 in every checkpoint of the epoch, and its digests re-sealed everywhere."""
    from DNSD.training.ranks import weights_digest

    records = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    path = os.path.join(run_dir, f"epoch-{epoch}.pdckpt")
    state = read_checkpoint(path)
    state["model"]["fc.weight"] = state["model"]["fc.weight"] + 0.05
    records[epoch - 1]["weights_sha256"] = weights_digest(state["model"])
    for file in os.listdir(run_dir):
        if file.endswith(".pdckpt"):
            other = read_checkpoint(os.path.join(run_dir, file))
            if len(other["history"]) >= epoch:
                other["history"][epoch - 1] = records[epoch - 1]
            if other["epochs_done"] == epoch:
                other["model"] = state["model"]
            save_checkpoint(os.path.join(run_dir, file), other)
    with open(os.path.join(run_dir, "metrics.jsonl"), "w") as stream:
        stream.writelines(json.dumps(record) + "\n" for record in records)


def audit(run_dir, args):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "DNSD", "audit", run_dir, "--epoch", str(args.epoch), "--data-file",
                             args.data_file], capture_output=True, text=True)
    found = dict(re.findall(r"^  (step losses|predictions|weights): ([0-9.e+-]+)x", result.stdout, re.MULTILINE))
    return {"exit": result.returncode, "seconds": time.perf_counter() - started,
            **{statistic: float(ratio) for statistic, ratio in found.items()},
            "verdict": next((line for line in result.stdout.splitlines() if line.startswith("audit: epoch")),
                            result.stderr.strip()[-300:])}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-file", required=True, help="a CIFAR-10 archive")
    parser.add_argument("--train-images", type=int, default=4000,
                        help="training images (default 4,000; 0: every image but the validation ones, 352 steps an "
                             "epoch on CIFAR-10)")
    parser.add_argument("--val-size", type=int, default=500, help="validation images (default 500)")
    parser.add_argument("--epoch", type=int, choices=(1, 2), default=2,
                        help="the epoch audited: 2 from the run's epoch-1 checkpoint (default), or 1 from the seed")
    parser.add_argument("--other-python", help="a Python with another Paddle, for an honest run of another build")
    parser.add_argument("--only", help="the cases to run: substrings of their names, separated by |")
    parser.add_argument("--output", default=os.devnull, help="the results file (JSON)")
    args = parser.parse_args()
    cases = {name: (sys.executable, env, extra, None) for name, (env, extra) in HONEST.items()}
    if args.other_python:
        version = subprocess.run([args.other_python, "-c", "import paddle; print(paddle.__version__)"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        cases[f"Paddle {version}"] = (args.other_python, {}, [], None)
    cases.update({name: (sys.executable, {"MKL_DEBUG_CPU_TYPE": "4"}, ["-o", f"{key}={value}"], key)
                  for name, (key, value) in CHANGED.items()})
    forged = (sys.executable, {"MKL_DEBUG_CPU_TYPE": "4"}, [], "forged")
    cases[f"fc weight + 0.05 at epoch {args.epoch}, re-sealed"] = forged
    results = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "run": RUN,
               "train_images": args.train_images, "val_size": args.val_size, "epoch": args.epoch, "cases": {}}
    for name, (python, env, extra, change) in cases.items():
        if args.only and not any(part in name for part in args.only.split("|")):
            continue
        with tempfile.TemporaryDirectory() as folder:
            run_dir = os.path.join(folder, "run")
            train(python, run_dir, args, env, extra)
            if change == "forged":
                forge_weights(run_dir, args.epoch)
            elif change:
                claim(run_dir, change, CLAIMED[change])
            results["cases"][name] = {"honest": change is None, **audit(run_dir, args)}
        print(f"{name}: {results['cases'][name]}", file=sys.stderr, flush=True)
    write_results(results, args.output)


if __name__ == "__main__":
    main()
