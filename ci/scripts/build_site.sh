#!/usr/bin/env bash
# Build both websites into OUT, offline, in one command: the leaderboard site generated from the
# committed records (`fimp-bench site`: OUT/index.html, one page per task and per model) and the
# API reference built from the docstrings (ci/scripts/build_docs.sh: OUT/api/index.html). Static
# files only: open OUT/index.html from disk or serve OUT with `python -m http.server`.
# Usage: ci/scripts/build_site.sh OUT   (OUT must not exist or be an empty folder)
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT" >&2
    exit 2
fi
OUT="$1"
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null || echo file)" ]; then
    echo "$0: $OUT exists and is not an empty folder; give a new path (nothing was written)" >&2
    exit 2
fi
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
"${PYTHON:-python}" -m fimp_bench site --root "$REPO/leaderboards" --out "$OUT"
bash "$HERE/build_docs.sh" "$(cd "$OUT" && pwd)/api"
