#!/usr/bin/env bash
# Keras backend vs exported SavedModel on the accelerator of this machine: three models, batch 1 and 8,
# XLA on/off, float32/float16, within 10 minutes. Writes benchmarks/results/device_check/ (or --out).
#   benchmarks/device_check.sh            full run (GPU/TPU machine)
#   benchmarks/device_check.sh --dry-run  quick CPU check of the whole script
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" ODZOO_QUIET=1 ODZOO_OFFLINE=1
if [ "${1:-}" != "--dry-run" ] && command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
exec timeout 590 "$PYTHON" benchmarks/device_check.py --budget-s 540 "$@"
