#!/usr/bin/env bash
# Run chosen models on chosen tasks/families and regenerate the leaderboard tables.
# Usage: run_models.sh --models "m1 m2" [--tasks "spatial fmri image"] [--preset full]
#        [--device cuda] [--seeds 0-9] [--out leaderboards]
# The GPU workflow calls it with --preset full --device cuda; the CPU tests with --preset smoke.
set -euo pipefail
MODELS=""; TASKS="spatial fmri image"; PRESET="full"; DEVICE="auto"; SEEDS=""; OUT="leaderboards"
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS="$2"; shift 2;;
    --tasks) TASKS="$2"; shift 2;;
    --preset) PRESET="$2"; shift 2;;
    --device) DEVICE="$2"; shift 2;;
    --seeds) SEEDS="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    *) echo "run_models.sh: unknown option $1" >&2; exit 2;;
  esac
done
if [ -z "$MODELS" ]; then echo "run_models.sh: no models to run"; exit 0; fi
FB="${FIMP_BENCH:-fimp-bench}"
for task in $TASKS; do
  args=(run --task "$task" --preset "$PRESET" --device "$DEVICE" --out "$OUT" --no-progress)
  for m in $MODELS; do args+=(--model "$m"); done
  if [ -n "$SEEDS" ]; then args+=(--seeds "$SEEDS"); fi
  echo "+ $FB ${args[*]}"
  $FB "${args[@]}"
done
$FB leaderboard --root "$OUT"
