#!/usr/bin/env bash
# The acceptance run of a GPU install, a few minutes on one GPU (scripts/check_gpu.py says what it checks); attach
# its JSON file to a bug report. --device cpu runs every check that needs no GPU (the test suite does).
#
# Usage: bash scripts/check_gpu.sh [--device gpu|cpu] [--output FILE.json] [--steps N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
exec "${DNSD_VENV:-$root/.venv}/bin/python" "$root/scripts/check_gpu.py" "$@"
