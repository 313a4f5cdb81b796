"""The step-variants benchmark (eager / bf16 autocast / torch.compile) runs on the smoke preset so
that it cannot rot; no timings asserted, only that each form ran and that bf16 and the compiled
forward stay near eager's numbers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_step_variants.py"


def test_step_variants_smoke_run_reports_each_form_and_the_compile_time():
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    diffs = dict(re.findall(r"^(eager|bf16|compile)\s+step .*rel\. diff ([\d.e+-]+)\)", out, re.M))
    assert set(diffs) == {"eager", "bf16", "compile"}, out
    assert float(diffs["eager"]) == 0.0
    assert float(diffs["compile"]) < 1e-4 and float(diffs["bf16"]) < 5e-2, diffs
    assert re.search(r"compile time [\d.]+ s: pays for itself after ", out), out
