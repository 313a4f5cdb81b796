"""The DDP path measured at 1 vs 2 processes (gloo on the CPU) for FIMP-base (not a test).

Each case runs the real CLI with one configuration and a fixed number of epochs, once as one
process with 2 torch threads and once as ``torch.distributed.run --nproc-per-node 2`` with 1
thread per process (the same 2 cores), and reports the recorded run wall time (training + test
evaluation; the ``wall_time_s`` of the record) and the whole command's wall time (imports, data
preparation and process start-up included).

Node-level tasks (spatial-expression): each rank trains on the k-hop subgraph around its half of
the training nodes, so on a small, well-connected graph both ranks still see most of the graph.
Graph-level tasks (fmri-reconstruction): each rank takes half of every batch of graphs.

    python benchmarks/bench_ddp.py             # a few minutes on 2 cores
    python benchmarks/bench_ddp.py --smoke     # smoke preset, one task (used by a test)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], threads: int, out: Path) -> tuple[float, float, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    total = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    (path,) = out.glob("*/records/*/seed-*.json")
    record = json.loads(path.read_text())
    return record["wall_time_s"], total, record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="smoke preset (seconds)")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    preset, epochs = ("smoke", 2) if args.smoke else ("quick", args.epochs)
    print(
        f"fimp-base, preset {preset}, 1 configuration, {epochs} epochs, seed 0; "
        "1 process x 2 threads vs 2 processes x 1 thread (gloo)"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} (timings need an otherwise idle machine)")
    tasks = ["spatial-expression"] if args.smoke else ["spatial-expression", "fmri-reconstruction"]
    for task in tasks:
        times = {}
        for procs in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "out"
                launcher = (
                    [sys.executable, "-m", "fimp_bench"]
                    if procs == 1
                    else [
                        sys.executable,
                        "-m",
                        "torch.distributed.run",
                        "--nproc-per-node",
                        "2",
                        "--master-port",
                        "29517",
                        "-m",
                        "fimp_bench",
                    ]
                )
                cmd = [
                    *launcher,
                    "run",
                    "--task",
                    task,
                    "--model",
                    "fimp-base",
                    "--seeds",
                    "0",
                    "--preset",
                    preset,
                    "--max-epochs",
                    str(epochs),
                    "--tuning-budget",
                    "1",
                    "--device",
                    "cpu",
                    "--no-progress",
                    "--out",
                    str(out),
                ]
                run_s, total_s, record = _run(cmd, 2 // procs, out)
                metric = record["metrics"]["test"]
                times[procs] = run_s
                print(
                    f"{task:<20} {procs} process(es): run {run_s:7.2f} s, whole command "
                    f"{total_s:7.2f} s, world size {record['world_size']}, "
                    f"test {', '.join(f'{k} {v:.4f}' for k, v in sorted(metric.items()))}",
                    flush=True,
                )
        print(f"{task:<20} speed-up 1 -> 2 processes: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
