#!/usr/bin/env bash
# The GPU run of benchmarks/gpu_check.py, on the device machine (after benchmarks/gpu_check_prepare.sh here):
#   device run: command "bash benchmarks/gpu_check.sh", carry [".whl", ".gpu_data"], timeout_s 420
# Installs the carried wheels into /tmp/site (the image's torch and numpy stay), then runs every section
# and leaves the reports in $OUT (gpu_check.json/.md/.log and the learning benchmark's results).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu_check.log"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed" | tee -a "$OUT/gpu_check.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
python3 benchmarks/gpu_check.py --device cuda --out "$OUT" --data-dir .gpu_data/ljspeech-32 "$@" 2>&1 \
  | tee -a "$OUT/gpu_check.log"
