#!/usr/bin/env bash
# Lint the repository with ruff, by the rules in pyproject.toml ([tool.ruff]), in the repository's virtual environment
# (created on first use). Extra arguments go to ruff check, e.g. bash scripts/lint.sh --fix
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh" requirements-test.txt requirements-slurm.txt >&2
cd "$root"
exec "${DNSD_VENV:-$root/.venv}/bin/python" -m ruff check "$@" .
