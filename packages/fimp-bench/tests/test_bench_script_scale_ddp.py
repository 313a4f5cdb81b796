"""The scale and DDP benchmark scripts run (smoke sizes) so that they cannot rot; no timings are
asserted, only that each prints its rows and ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "benchmarks"


def _smoke(script: str) -> str:
    res = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_scale_benchmark_reports_peak_rss_per_size_and_the_growth_ratio():
    out = _smoke("bench_scale.py")
    rows = re.findall(
        r"this\s+E=\s*([\d,]+)\s+edge_chunk_size=(\w+)\s+malloc arenas (\w+)\s+epoch\s+[\d.]+ s"
        r"\s+peak RSS",
        out,
    )
    assert rows == [
        ("2,000", "none", "default"),
        ("2,000", "auto", "default"),
        ("20,000", "auto", "default"),
        ("2,000", "auto", "1"),
        ("20,000", "auto", "1"),
    ], out
    for arenas in ("default", "1"):
        assert re.search(rf"arenas {arenas}: peak RSS 20,000 / 2,000 edges: [\d.]+x", out), out
    losses = re.findall(r"loss (\d+\.\d+)", out)
    assert losses[0] == losses[1], "chunking must not change the numbers"


def test_ddp_benchmark_runs_one_and_two_processes_and_prints_the_speed_up():
    out = _smoke("bench_ddp.py")
    assert "spatial-expression   1 process(es)" in out and "world size 1" in out, out
    assert "spatial-expression   2 process(es)" in out and "world size 2" in out, out
    assert re.search(r"speed-up 1 -> 2 processes: [\d.]+x", out), out
