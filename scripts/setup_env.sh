#!/usr/bin/env bash
# Create (or reuse) the repository's virtual environment .venv with PaddlePaddle and the given requirement files.
# Usage: bash scripts/setup_env.sh requirements.txt [more requirement files]
# PaddlePaddle: paddlepaddle-gpu where nvidia-smi finds a GPU, paddlepaddle otherwise; DNSD_PADDLE overrides the
# requirement (e.g. DNSD_PADDLE="paddlepaddle==2.6.2"), DNSD_VENV the folder, PYTHON the interpreter.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DNSD_VENV:-$root/.venv}"
if [ -z "${DNSD_PADDLE:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    DNSD_PADDLE="paddlepaddle-gpu>=2.6,<4"
  else
    DNSD_PADDLE="paddlepaddle>=2.6,<4"
  fi
fi
requirement_files=()
for file in "$@"; do requirement_files+=("$root/$file"); done
# Reinstall only when what is asked for changes: the stamp holds the Paddle requirement and the files' contents.
wanted="$(printf '%s\n' "$DNSD_PADDLE"; cat "${requirement_files[@]}")"
stamp="$venv/.dnsd-requirements"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv" >&2
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing $DNSD_PADDLE and ${*} into $venv" >&2
  args=()
  for file in "${requirement_files[@]}"; do args+=(-r "$file"); done
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$DNSD_PADDLE" "${args[@]}"
  printf '%s' "$wanted" > "$stamp"
fi
