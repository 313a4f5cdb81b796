#!/usr/bin/env bash
# Fail if the committed leaderboards differ from what their records regenerate.
# Usage: check_leaderboards.sh [ROOT]   (default: leaderboards)
set -euo pipefail
ROOT="${1:-leaderboards}"
FB="${FIMP_BENCH:-fimp-bench}"
$FB leaderboard --root "$ROOT" --check
$FB validate "$ROOT" --no-smoke
