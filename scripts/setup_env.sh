#!/usr/bin/env bash
# Create or update the virtual environment (.venv) with the PaddlePaddle build this machine needs, then DNSD
# (pip install -e .) and the given requirement files; docs/installing.md says how the build is chosen.
#
# Usage: bash scripts/setup_env.sh [--dry-run] [--paddle-only] [--reinstall] [requirement files]
#
# Settings (environment variables):
#   DNSD_PADDLE              the Paddle requirement instead of the choice, e.g. "paddlepaddle-gpu==3.2.0"
#   DNSD_PADDLE_INDEX        the index to take it from, beside pip's own (a URL), or "none"
#   DNSD_PADDLE_MIRROR       the root of Paddle's index (default https://www.paddlepaddle.org.cn/packages/stable)
#   DNSD_VENV                the environment's folder (default: .venv in the repository)
#   DNSD_CONSTRAINTS         a pip constraints file, e.g. constraints/paddle-3.3.1.txt: the versions CI passed with
#   DNSD_NVIDIA_SMI_TIMEOUT  seconds nvidia-smi may take before it is stopped (default 30)
#   PYTHON                   the interpreter that creates the environment (default: python3)
set -euo pipefail
exec "${PYTHON:-python3}" "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/setup_env.py" "$@"
