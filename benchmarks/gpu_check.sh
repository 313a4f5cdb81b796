#!/usr/bin/env bash
# The CUDA checks of FIMP in one script (under 8 minutes on one GPU): fast path vs reference on
# CUDA (values, gradients), flash / memory-efficient SDPA selected, bf16, determinism of two runs,
# the FlexAttention grouped path, a quick-preset training run with --device cuda, and the
# FIMP-base / GAT epoch-time ratio. Output goes to stdout and, when $OUT is set (the device
# tool's output folder), to $OUT/gpu_check.txt.
#
#   bash benchmarks/gpu_check.sh            # on a machine with a GPU
#   bash benchmarks/gpu_check.sh --dry-run  # CPU, tiny sizes, smoke preset (run by the tests)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONHASHSEED=0
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python "$here/gpu_check.py" --out "$out" "$@" 2>&1 | tee "$out/gpu_check.txt"
exit "${PIPESTATUS[0]}"
