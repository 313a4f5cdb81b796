"""The quick-training benchmark script runs (smoke data) so that it cannot rot; no timings asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_quick_training.py"


def test_quick_training_benchmark_smoke_run_prints_every_case():
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for case in (
        "fimp-base attn_dropout, image-country",
        "fimp-base attn_dropout, spatial-expression",
        "fimp-base tokens, image-country",
        "gps inference forward, image-country",
    ):
        line = next(ln for ln in out.splitlines() if ln.startswith(case))
        assert line.rstrip().endswith("x"), line
