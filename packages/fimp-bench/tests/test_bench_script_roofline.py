"""The roofline benchmark script runs (smoke sizes) so that it cannot rot; no timings asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_roofline.py"


def test_roofline_benchmark_smoke_run_prints_peak_fractions_and_phase_splits():
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert re.search(r"matmul peak .*: [0-9.]+ GFLOP/s", out)
    conv = [ln for ln in out.splitlines() if ln.startswith("FIMPConv L=")]
    assert len(conv) == 2 and all("% of peak" in ln and "backward" in ln for ln in conv)
    for task in ("spatial-expression", "spatial-celltype", "fmri-reconstruction", "image-country"):
        i = next(i for i, ln in enumerate(out.splitlines()) if ln.startswith(task))
        split = out.splitlines()[i + 1]
        shares = [int(s) for s in re.findall(r"(\d+)%", split)]
        assert "attention" in split and "backward" in split and 90 <= sum(shares) <= 110, split
