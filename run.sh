#!/usr/bin/env bash
# Train with the paper's recipe (ResNet-110, stochastic depth, CIFAR-10); extra arguments are passed on,
# e.g. bash run.sh --config configs/quick.yaml --data-file ../shared/data/cifar-10-mini.tar.gz --val-size 500
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/setup_env.sh"
exec "${DNSD_VENV:-$root/.venv}/bin/python" "$root/DNSD/main.py" --mode train "$@"
