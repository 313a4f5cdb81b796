"""The FIMPConv benchmark script runs (tiny sizes) so that it cannot rot; it asserts no timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_fimp_conv.py"


def test_benchmark_smoke_run_prints_every_case():
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for name in ("fimp", "explicit", "ampnet", "sdpa", "transformerconv", "gatconv", "ampnet/fimp"):
        assert name in out
    assert "growth E=64->256" in out
    rows = [ln.split() for ln in out.splitlines() if ln.lstrip().startswith(("knn", "random"))]
    # (graph, L) for both graphs and both lengths; auto is grouped only for few tokens, no padding
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("knn-7", "4", "grouped"),
        ("knn-7", "20", "per-edge"),
        ("random", "4", "per-edge"),
        ("random", "20", "per-edge"),
    ]
