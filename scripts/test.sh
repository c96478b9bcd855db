#!/usr/bin/env bash
# Run the whole test suite in the repository's virtual environment (created on first use).
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k config
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh" requirements-test.txt requirements-slurm.txt
cd "$root"
exec "${DNSD_VENV:-$root/.venv}/bin/python" -m pytest tests "$@"
