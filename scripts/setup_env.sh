#!/usr/bin/env bash
# Create (or reuse) the virtual environment with the PaddlePaddle build this machine needs, DNSD itself
# (pip install -e ., which brings requirements.txt and the `dnsd` command) and the given extra requirement files.
#
# Usage: bash scripts/setup_env.sh [--dry-run] [requirement files]
#   --dry-run  print the choice (`setup: would install ...` and why) and install nothing
#
# The choice: no NVIDIA GPU (no nvidia-smi, or it fails or lists none): paddlepaddle, the CPU build. A GPU: the
# Paddle 3.x GPU build from Paddle's own package index for the newest CUDA the driver runs (nvidia-smi's "CUDA
# Version"): cu129 for 12.9 and newer (13.x included), cu126 for 12.6 to 12.8, cu118 for 11.8 to 12.5; these builds
# bring their own CUDA libraries. Where that index cannot be reached and the system has a CUDA 11.8 toolkit, PyPI's
# paddlepaddle-gpu==2.6.2 (which uses the system's CUDA 11.8 and cuDNN 8.6). A machine without a GPU whose
# environment already holds the GPU build keeps it (a cluster's CPU login node sharing .venv with its GPU nodes).
#
# Settings (environment variables):
#   DNSD_PADDLE        the Paddle requirement instead of the choice, e.g. "paddlepaddle-gpu==3.2.0"
#   DNSD_PADDLE_INDEX  the package index to take Paddle from, searched beside pip's own (a URL), or "none"
#   DNSD_VENV          the environment's folder (default: .venv in the repository)
#   DNSD_CONSTRAINTS   a pip constraints file, e.g. constraints/paddle-3.3.1.txt: the versions CI passed with
#   PYTHON             the interpreter that creates the environment (default: python3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DNSD_VENV:-$root/.venv}"
paddle_index="https://www.paddlepaddle.org.cn/packages/stable"
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi

say() { echo "setup: $*" >&2; }
fail() { echo "setup: error: $*" >&2; exit 2; }

# "12.6" -> 1206, to compare CUDA versions as numbers.
cuda_number() { echo $((10#${1%%.*} * 100 + 10#${1#*.})); }

installed() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip show -q "$1" >/dev/null 2>&1; }

# What nvidia-smi says of this machine: gpus (their number), driver_cuda (the newest CUDA the driver runs), and
# reason, a few words on what was found.
gpus=0
driver_cuda=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
  reason="no NVIDIA GPU: nvidia-smi is not on PATH"
elif ! listing="$(timeout 30 nvidia-smi -L 2>&1)"; then
  reason="no usable NVIDIA GPU: nvidia-smi failed ($(head -n 1 <<<"$listing"))"
elif ! gpus="$(grep -c '^GPU ' <<<"$listing")"; then
  gpus=0
  reason="no NVIDIA GPU: nvidia-smi lists none"
else
  driver_cuda="$(timeout 30 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)"
  [ -n "$driver_cuda" ] || fail "nvidia-smi lists $gpus GPU(s) but shows no CUDA Version; set DNSD_PADDLE and DNSD_PADDLE_INDEX to the Paddle build for your driver (README: Installing)"
  reason="$gpus GPU(s) ($(head -n 1 <<<"$listing" | sed 's/^GPU [0-9]*: //; s/ (UUID.*//')), driver for CUDA $driver_cuda"
fi

# The system CUDA toolkit's version (nvcc), which only PyPI's paddlepaddle-gpu 2.6.2 uses.
toolkit_cuda="$( (nvcc --version 2>/dev/null || true) | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)"
fallback=""
index=""
if [ -n "${DNSD_PADDLE:-}" ]; then
  requirement="$DNSD_PADDLE"
  reason="DNSD_PADDLE is set; $reason"
elif [ -z "$driver_cuda" ]; then
  if installed paddlepaddle-gpu; then
    requirement="paddlepaddle-gpu"
    reason="$reason; keeping the GPU build already in $venv, which also runs on the CPU (DNSD_PADDLE=paddlepaddle replaces it)"
  else
    requirement="paddlepaddle>=2.6,<4"
  fi
else
  cuda="$(cuda_number "$driver_cuda")"
  if [ "$cuda" -ge 1209 ]; then build=cu129
  elif [ "$cuda" -ge 1206 ]; then build=cu126
  elif [ "$cuda" -ge 1108 ]; then build=cu118
  else
    fail "the NVIDIA driver runs CUDA $driver_cuda at most, older than 11.8, the oldest CUDA of Paddle's GPU builds; update the driver (nvidia-smi then shows CUDA Version 11.8 or newer), or train on the CPU with DNSD_PADDLE=paddlepaddle bash scripts/setup_env.sh"
  fi
  requirement="paddlepaddle-gpu>=3,<4"
  index="$paddle_index/$build/"
  reason="$reason: Paddle 3.x built for CUDA ${build:2:2}.${build:4}, with its own CUDA libraries"
  if [ "$cuda" -ge 1108 ] && [ "$toolkit_cuda" = "11.8" ]; then
    fallback="paddlepaddle-gpu==2.6.2"
  fi
fi
case "${DNSD_PADDLE_INDEX:-}" in
  "") ;;
  none) index="" ;;
  *) index="$DNSD_PADDLE_INDEX" ;;
esac

requirement_files=()
for file in "$@"; do requirement_files+=("$root/$file"); done
name="$(sed 's/[<>=!~ ;[].*//' <<<"$requirement" | tr 'A-Z_' 'a-z-')"
case "$name" in
  paddlepaddle) other=paddlepaddle-gpu ;;
  paddlepaddle-gpu) other=paddlepaddle ;;
  *) other="" ;;
esac

if [ "$dry_run" = 1 ]; then
  echo "setup: would install $requirement${index:+ from $index} ($reason)"
  if [ -n "$fallback" ]; then
    echo "setup: if that index cannot be reached: $fallback from PyPI (a system CUDA $toolkit_cuda toolkit was found)"
  fi
  if [ -n "$other" ] && installed "$other"; then
    echo "setup: would first uninstall $other from $venv (both install the module paddle)"
  fi
  exit 0
fi

# Reinstall only when what is asked for changes: the stamp holds the choice and the files that name the packages.
wanted="$(printf '%s\n' "$requirement" "$index" "${DNSD_CONSTRAINTS:-}"
          cat "$root/pyproject.toml" "$root/requirements.txt" ${DNSD_CONSTRAINTS:+"$DNSD_CONSTRAINTS"} \
              ${requirement_files[@]+"${requirement_files[@]}"})"
stamp="$venv/.dnsd-requirements"
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if [ -n "$other" ] && installed "$other"; then
  # paddlepaddle and paddlepaddle-gpu both install the module paddle: with both, whichever came last wins, and
  # uninstalling one deletes files of the other. Remove both, then install the one wanted afresh.
  say "removing $other from $venv: it and $name both install the module paddle"
  "${pip[@]}" uninstall --quiet --yes "$other" "$name"
fi
options=()
[ -z "${DNSD_CONSTRAINTS:-}" ] || options+=(--constraint "$DNSD_CONSTRAINTS")
for file in ${requirement_files[@]+"${requirement_files[@]}"}; do options+=(--requirement "$file"); done
say "installing $requirement${index:+ from $index} ($reason), DNSD and ${*:-requirements.txt} into $venv"
if ! "${pip[@]}" install --quiet ${index:+--extra-index-url "$index"} "$requirement" --editable "$root" \
    ${options[@]+"${options[@]}"}; then
  [ -n "$fallback" ] || fail "pip could not install $requirement${index:+ from $index} (its message is above); see README: Installing"
  say "Paddle's index could not be used; installing $fallback from PyPI instead (system CUDA $toolkit_cuda toolkit found)"
  requirement="$fallback"
  "${pip[@]}" install --quiet "$requirement" --editable "$root" ${options[@]+"${options[@]}"} \
    || fail "pip could not install $requirement either (its message is above); see README: Installing"
fi

# A GPU machine must end with a Paddle that computes on its GPU: the same check as a training run's start.
if [ -n "$driver_cuda" ]; then
  if ! check="$("$venv/bin/python" -m DNSD --mode info --device gpu 2>&1)"; then
    problem="$(grep '^DNSD: error:' <<<"$check" | sed 's/^DNSD: error: //; s/^--device gpu, but //; s/; install the Paddle build.*//' | head -n 1)"
    fail "$requirement in $venv cannot use this machine's GPU (driver for CUDA $driver_cuda): ${problem:-$(tail -n 1 <<<"$check")}; check with $venv/bin/python -c 'import paddle; paddle.utils.run_check()', and reinstall the build for your driver, e.g. DNSD_PADDLE='paddlepaddle-gpu>=3,<4' DNSD_PADDLE_INDEX=$paddle_index/cu118/ bash scripts/setup_env.sh (README: Installing)"
  fi
  say "$(grep '^device' <<<"$check")"
fi
printf '%s' "$wanted" > "$stamp"
