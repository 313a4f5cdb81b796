#!/usr/bin/env bash
# Build the API reference (docs/api, Sphinx + furo) into OUT, offline, with every warning an error
# (-W, nitpicky -n: every reference to a FIMP object must resolve). Needs the docs packages of the
# full tox env (sphinx, furo, myst-parser, sphinx-mathjax-offline).
# Usage: ci/scripts/build_docs.sh OUT   (then open OUT/index.html)
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 OUT" >&2
    exit 2
fi
cd "$(dirname "$0")/../.."
# a fresh build (-E: no pickled environment of an older checkout), quiet except for warnings; the
# doctrees go to a temporary folder so OUT holds only the site
DOCTREES="$(mktemp -d)"
trap 'rm -rf "$DOCTREES"' EXIT
"${PYTHON:-python}" -m sphinx -W --keep-going -n -E -q -b html -d "$DOCTREES" docs/api "$1"
