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
    # one block per glibc malloc setting, each from its own process, then the comparison
    blocks = out.split("== glibc malloc: ")[1:]
    assert [b.split(" ==")[0] for b in blocks] == ["default", "heap"]
    assert "allocator: system default" in blocks[0]
    assert "allocator: glibc malloc: large blocks from the heap" in blocks[1]
    tasks = ("spatial-expression", "spatial-celltype", "fmri-reconstruction", "image-country")
    for block in blocks:
        lines = block.splitlines()
        conv = [ln for ln in lines if ln.startswith("FIMPConv L=") and "GFLOP" in ln]
        assert len(conv) == 2 and all("% of peak" in ln and "backward" in ln for ln in conv)
        bounds = [ln for ln in lines if ln.strip().startswith("bound: bare SDPA")]
        assert len(bounds) == 2 and all(
            re.search(r"ceiling is +[0-9.]+% of peak", b) for b in bounds
        )
        for task in tasks:
            i = next(i for i, ln in enumerate(lines) if ln.startswith(task))
            split = lines[i + 1]
            shares = [int(s) for s in re.findall(r"(\d+)%", split)]
            assert "attention" in split and "backward" in split and 90 <= sum(shares) <= 110, split
    table = out.split("default/heap")[1].strip().splitlines()
    assert [ln.split()[0] for ln in table] == ["FIMPConv", "FIMPConv", *tasks]
    assert all(re.search(r"[0-9.]+x$", ln) for ln in table)
