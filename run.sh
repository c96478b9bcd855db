#!/usr/bin/env bash
# Train with the paper's recipe (ResNet-110, stochastic depth, CIFAR-10), in the environment setup makes; extra
# arguments are passed on to dnsd train, e.g. bash run.sh --config quick
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/setup_env.sh"
DNSD_PROGRAM="bash run.sh" exec "${DNSD_VENV:-$root/.venv}/bin/python" "$root/DNSD/main.py" --mode train "$@"
