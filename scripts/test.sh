#!/usr/bin/env bash
# Run the whole test suite in the repository's virtual environment (created on first use), a process per core.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -k config
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh" requirements-test.txt requirements-slurm.txt
cd "$root"
python="${DNSD_VENV:-$root/.venv}/bin/python"
# A pytest process per core, up to 4: each test computes on one thread (run.cpu_threads), so the cores are shared
# without changing a bit. DNSD_TEST_WORKERS=0 runs the suite in this process alone.
workers="${DNSD_TEST_WORKERS:-$("$python" -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')}"
exec "$python" -m pytest tests -n "$workers" "$@"
