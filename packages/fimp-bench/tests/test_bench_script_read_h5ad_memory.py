"""The h5ad memory benchmark script runs (a tiny file) so that it cannot rot; no memory asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_read_h5ad_memory.py"


def test_read_h5ad_memory_benchmark_smoke_run(tmp_path):
    pytest.importorskip("anndata")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--path", str(tmp_path / "synthetic.h5ad")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [ln.split() for ln in res.stdout.splitlines() if ln.startswith(("read ", "select "))]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("read", "new", "sparse_coo"),
        ("select", "new", "sparse_coo"),
    ]
    assert (tmp_path / "smoke.h5ad").is_file()
