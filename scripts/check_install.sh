#!/usr/bin/env bash
# Install DNSD as a user does, with `pip install .` into a fresh environment outside the repository, and use the
# installed `dnsd` command from another folder: --help, a shipped config by name, a one-epoch training of ResNet-8 on
# a CIFAR-10 archive, its evaluation, the Python API, and a prediction. CI's install job; about two minutes on a
# 2-core CPU.
#
# Usage: bash scripts/check_install.sh [ARCHIVE]     (default: ../shared/data/cifar-10-mini.tar.gz)
# DNSD_PADDLE (default: paddlepaddle>=2.6,<4) and DNSD_CONSTRAINTS as for scripts/setup_env.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archive="${1:-$root/../shared/data/cifar-10-mini.tar.gz}"
if [ ! -f "$archive" ]; then
  echo "check_install: error: no CIFAR-10 archive at $archive; pass the path of one" >&2
  exit 2
fi
archive="$(cd "$(dirname "$archive")" && pwd)/$(basename "$archive")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "check_install: pip install $root with ${DNSD_PADDLE:-paddlepaddle>=2.6,<4} into $work/venv"
"${PYTHON:-python3}" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${DNSD_PADDLE:-paddlepaddle>=2.6,<4}" \
  "$root" ${DNSD_CONSTRAINTS:+--constraint "$DNSD_CONSTRAINTS"}
cd "$work"
export PATH="$work/venv/bin:$PATH"
passed=0
failed=0

check() {  # check NAME COMMAND...: run the command, count it
  local name="$1"
  shift
  if "$@" > "$work/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok: $name"
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
    sed 's/^/    /' "$work/out"
  fi
}

reference_bits_are_shipped() {  # exit 4 (other bits) still read the reference; the test suite judges the bits
  local code=0
  dnsd info --check-numerics --device cpu || code=$?
  [ "$code" = 0 ] || [ "$code" = 4 ]
}

help_lists_the_modes() {
  dnsd --help > help.txt
  for mode in train eval predict export plot summary info; do grep -q "^  $mode " help.txt || return 1; done
}
package_is_the_installed_copy() {
  location="$(python -c 'import DNSD, os; print(os.path.dirname(DNSD.__file__))')"
  [ "$location" != "$root/DNSD" ] && [ -f "$location/configs/resnet110_sd.yaml" ]
}
shipped_config_by_name() {
  dnsd --config resnet110_sd --print-config > config.yaml
  python -c 'import yaml; c = yaml.safe_load(open("config.yaml")); assert c["model"]["depth"] == 110, c'
}
trains_one_epoch() {
  dnsd train --data-file "$archive" --val-size 500 --depth 8 --epochs 1 --output-dir run
  [ -f run/summary.json ] && [ -f run/best.pdckpt ]
}
trains_with_dnsds_cpu_operators_where_a_compiler_is() {  # their sources are in the package, and they build from it
  expected=portable
  if command -v g++ > /dev/null && [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo; then expected=onednn; fi
  python -c 'import json, sys; s = json.load(open("run/environment.json"))["entries"][0]["settings"]
assert s["cpu_numerics"] == sys.argv[1], s' "$expected"
}
eval_gives_the_reported_test_error() {
  dnsd eval --checkpoint run/best.pdckpt --data-file "$archive" > eval.txt
  cat eval.txt
  python -c 'import json; e = json.load(open("run/summary.json"))["test_error"]; assert f"test error {e:.2f} %" in open("eval.txt").read(), e'
}
python_api_evaluates() {
  python -c 'import json, DNSD; assert DNSD.evaluate("run/best.pdckpt")["error"] == json.load(open("run/summary.json"))["test_error"]'
}
predicts_an_image_as_the_api_does() {
  # A test image of the archive as a PNG: the installed command and the API must give it the same class.
  python - "$archive" <<'PY'
import sys
from PIL import Image
from DNSD.datasets.cifar import read_archive
_, test, _ = read_archive(sys.argv[1])
Image.fromarray(test.images[0].transpose(1, 2, 0)).save("image.png")
PY
  dnsd predict --checkpoint run/best.pdckpt --images image.png --top-k 1 > predicted.csv
  python -c 'import csv, numpy as np, DNSD; from PIL import Image
trained = DNSD.load_checkpoint("run/best.pdckpt")
p = trained.predict(np.asarray(Image.open("image.png"))[None])
row = list(csv.reader(open("predicted.csv")))[1]
assert row[1] == trained.classes[p.argmax()], (row, p)'
}

check "dnsd --help lists the modes" help_lists_the_modes
check "the package is installed in site-packages, with its configs" package_is_the_installed_copy
check "dnsd --config resnet110_sd finds the shipped config" shipped_config_by_name
check "dnsd info" dnsd info
check "dnsd info --check-numerics finds the reference shipped in the package" reference_bits_are_shipped
check "dnsd trains ResNet-8 for one epoch" trains_one_epoch
check "it trains with DNSD's CPU operators where a C++ compiler is" trains_with_dnsds_cpu_operators_where_a_compiler_is
check "dnsd eval gives the test error training reported" eval_gives_the_reported_test_error
check "DNSD.evaluate gives the same from Python" python_api_evaluates
check "dnsd predict gives an image the class the API gives" predicts_an_image_as_the_api_does
echo "check_install: $passed passed, $failed failed"
[ "$failed" = 0 ]
