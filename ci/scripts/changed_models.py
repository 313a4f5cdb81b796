#!/usr/bin/env python3
"""Print the bench models whose results a change can affect (space-separated).

Usage: ``changed_models.py --base <git ref>`` (diff against HEAD) or ``--files f1 f2 ...``.
Mapping: a model's config ``configs/<name>.yaml`` -> that model; ``models/baselines.py`` -> every
PyG baseline; ``models/fimp_models.py`` or fimp-core sources -> the FIMP models; task code or
fimp-data sources -> every model; ``leaderboards/<task>/records/<model>/`` -> that model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

BASELINES = ["mlp", "gcn", "gat", "graphsage", "gin", "graph-transformer", "gps", "majority"]
FIMP = ["fimp-base"]
BENCH = "packages/fimp-bench/src/fimp_bench/"


def changed_models(files: list[str]) -> list[str]:
    """The sorted model names affected by the changed ``files`` (repo-relative paths)."""
    out: set[str] = set()
    for f in files:
        if f.startswith(BENCH + "configs/") and f.endswith(".yaml"):
            out.add(f.rsplit("/", 1)[1][: -len(".yaml")])
        elif f == BENCH + "models/baselines.py":
            out.update(BASELINES)
        elif f == BENCH + "models/fimp_models.py" or f.startswith("packages/fimp-core/src/"):
            out.update(FIMP)
        elif (
            f.startswith(BENCH + "tasks/")
            or f.startswith("packages/fimp-data/src/")
            or f
            in (
                BENCH + "train.py",
                BENCH + "metrics.py",
            )
        ):
            out.update(BASELINES + FIMP)
        elif f.startswith("leaderboards/") and "/records/" in f:
            parts = f.split("/")
            if len(parts) > 3:
                out.add(parts[3])
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--base", help="git ref to diff against HEAD")
    g.add_argument("--files", nargs="*", help="changed files (repo-relative)")
    args = p.parse_args(argv)
    if args.base is not None:
        res = subprocess.run(
            ["git", "diff", "--name-only", f"{args.base}...HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        files = res.stdout.split()
    else:
        files = args.files
    print(" ".join(changed_models(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
