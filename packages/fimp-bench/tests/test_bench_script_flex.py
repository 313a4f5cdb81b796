"""The FlexAttention benchmark script runs (smoke sizes) so that it cannot rot; no timings asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_flex_attention.py"


def test_flex_benchmark_smoke_run_reports_backward_support_and_matches_the_grouped_path():
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert re.search(r"FlexAttention backward on the CPU: (runs|NOT SUPPORTED here \(.+\))", out)
    rows = [ln for ln in out.splitlines() if ln.startswith("L=")]
    assert [r.split()[0] for r in rows] == ["L=16", "L=64"]
    assert all(re.search(r"flex/grouped +[0-9.]+x", r) for r in rows)
    # the log-sum-exp score_mod makes FlexAttention's joint softmax the per-block one
    diffs = [
        float(x) for x in re.findall(r"max \|flex - grouped\| / max\|grouped\| = ([0-9.e+-]+)", out)
    ]
    assert len(diffs) == 2 and all(d < 1e-5 for d in diffs), out
