"""Peak memory of reading a Slide-seqV2-sized sparse .h5ad and of the spatial tasks' gene
selection on it (not a test). Prints the numbers, and old vs new side by side with --compare.

The file is synthetic, written by anndata with the shape of the registry's spatial-slideseqv2
(41,786 beads x 4,000 genes, X stored sparse CSR, float32 counts, ~3% nonzeros, obsm['spatial'],
obs['cluster']); it goes to /tmp (``--path``), never into the repository. Each measurement runs
in a fresh subprocess:

- ``read``: ``fimp_data.read_h5ad(path, label_key="cluster")`` (what ``load`` runs);
- ``select``: the spatial tasks' panel selection, ``fimp_bench.tasks.spatial._expression``
  (log1p, top-variance genes of the training spots, standardised), on the loaded data with a
  ``spatial_block_split`` training set, 256 genes (the full preset's panel).

Reported: the growth of the peak resident set over the process just before the step (VmHWM,
reset before the step on Linux, else ``ru_maxrss``: every allocator) and the ``tracemalloc`` peak (numpy / scipy / Python allocations; torch's own CPU
allocator is not traced), in MiB; plus what ``x`` is and how many bytes it holds.

    python benchmarks/bench_read_h5ad_memory.py                      # this checkout
    git archive HEAD packages | tar -x -C /tmp/fimp_old              # any older tree ...
    python benchmarks/bench_read_h5ad_memory.py --compare /tmp/fimp_old   # ... side by side
    python benchmarks/bench_read_h5ad_memory.py --smoke              # tiny file, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

MIB = 1 << 20
PACKAGES = ("fimp-core", "fimp-data", "fimp-bench")


def make_file(path: Path, cells: int, genes: int, density: float, seed: int = 0) -> None:
    """Write the synthetic .h5ad (sparse CSR X, float32 counts) unless it already has this shape."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    if path.is_file():
        with __import__("h5py").File(path, "r") as f:
            shape = tuple(int(v) for v in f["X"].attrs.get("shape", ()))
        if shape == (cells, genes):
            return
    rng = np.random.default_rng(seed)
    per_row = rng.binomial(genes, density, size=cells)
    indptr = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)
    indices = np.concatenate(
        [np.sort(rng.choice(genes, size=k, replace=False)) for k in per_row]
    ).astype(np.int32)
    # counts: a few genes highly expressed, most at 1-3 (Slide-seq-like, heavy tailed)
    scale = rng.gamma(0.5, 2.0, size=genes)
    data = (1 + rng.poisson(scale[indices])).astype(np.float32)
    x = sp.csr_matrix((data, indices, indptr), shape=(cells, genes))
    obs = pd.DataFrame(
        {"cluster": pd.Categorical(rng.integers(0, 14, cells).astype(str))},
        index=[f"bead{i}" for i in range(cells)],
    )
    var = pd.DataFrame(index=[f"Gene{j}" for j in range(genes)])
    a = ad.AnnData(X=x, obs=obs, var=var)
    a.obsm["spatial"] = rng.uniform(0, 6000, size=(cells, 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.h5ad")
    a.write_h5ad(tmp)
    os.replace(tmp, path)


def _child(step: str, path: str, panel: int) -> None:
    """Run one measurement in this (fresh) process and print it as JSON."""
    import resource
    import tracemalloc

    import anndata  # noqa: F401  (imports count as the baseline, not as the step)
    import numpy as np
    import scipy.sparse  # noqa: F401
    import torch
    import torch_geometric  # noqa: F401

    import fimp_data
    from fimp_bench.tasks import spatial

    def rss() -> float:
        """Peak resident set (MiB): VmHWM, reset before each step where Linux allows it."""
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024 / MIB
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB

    def reset_peak() -> str:
        try:  # Linux >= 4.0: "5" resets the peak RSS (VmHWM) to the current RSS
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return "VmHWM (reset before the step)"
        except OSError:
            return "ru_maxrss (peak of the whole process)"

    out: dict = {}
    if step == "select":
        data = fimp_data.read_h5ad(path, label_key="cluster")
        split = fimp_data.spatial_block_split(data, val=0.2, test=0.2, seed=0)
        train = np.asarray(split.train.numpy(), dtype=np.int64)
    out["rss_method"] = reset_peak()
    base = rss()
    tracemalloc.start()
    if step == "read":
        data = fimp_data.read_h5ad(path, label_key="cluster")
    else:
        values, _ = spatial._expression(data, train, panel)
        out["panel_shape"] = list(values.shape)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    x = data.x
    if x.layout == torch.strided:
        held = x.numel() * x.element_size()
    else:
        held = x._indices().numel() * 8 + x._values().numel() * x.element_size()
    out.update(
        step=step,
        rss_growth_mib=rss() - base,
        rss_before_mib=base,
        tracemalloc_peak_mib=peak / MIB,
        x_layout=str(x.layout).replace("torch.", ""),
        x_shape=list(x.shape),
        x_mib=held / MIB,
        nnz=int(x._nnz()) if x.layout != torch.strided else None,
    )
    print(json.dumps(out))


def _measure(step: str, path: Path, panel: int, src: str | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if src is not None:
        root = Path(src) / "packages"
        env["PYTHONPATH"] = os.pathsep.join(str(root / p / "src") for p in PACKAGES)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", step, "--path", str(path), "--panel", str(panel)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{step} ({src or 'this checkout'}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default="/tmp/fimp-bench-h5ad/slideseqv2_synthetic.h5ad")
    p.add_argument("--cells", type=int, default=41_786)
    p.add_argument("--genes", type=int, default=4_000)
    p.add_argument("--density", type=float, default=0.03)
    p.add_argument("--panel", type=int, default=256)
    p.add_argument(
        "--compare", default=None, help="older source tree (holding packages/) to run too"
    )
    p.add_argument("--smoke", action="store_true", help="tiny file (2,000 x 300), for the tests")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child, args.path, args.panel)
        return
    if args.smoke:
        args.cells, args.genes = 2_000, 300
        args.path = str(Path(args.path).with_name("smoke.h5ad"))
    path = Path(args.path)
    make_file(path, args.cells, args.genes, args.density)
    dense_mib = args.cells * args.genes * 4 / MIB
    print(
        f"{path}: {args.cells:,} x {args.genes:,}, density {args.density:.0%}, "
        f"{path.stat().st_size / MIB:.1f} MiB on disk; dense float32 X = {dense_mib:.0f} MiB"
    )
    print(f"python {platform.python_version()}, {platform.machine()}, panel {args.panel} genes")
    trees = [("new", None)] + ([("old", args.compare)] if args.compare else [])
    results = {
        name: {s: _measure(s, path, args.panel, src) for s in ("read", "select")}
        for name, src in trees
    }
    head = f"{'step':8s} {'tree':4s} {'x':>12s} {'x MiB':>8s} {'peak RSS +MiB':>14s} {'tracemalloc MiB':>16s}"
    print(f"peak RSS = {results['new']['read']['rss_method']}")
    print(head)
    print("-" * len(head))
    for step in ("read", "select"):
        for name, _ in trees:
            r = results[name][step]
            print(
                f"{step:8s} {name:4s} {r['x_layout']:>12s} {r['x_mib']:8.1f} "
                f"{r['rss_growth_mib']:14.1f} {r['tracemalloc_peak_mib']:16.1f}"
            )
        if args.compare:
            old, new = results["old"][step], results["new"][step]
            print(
                f"{step:8s} old/new peak RSS growth {old['rss_growth_mib'] / max(new['rss_growth_mib'], 1e-9):.1f}x, "
                f"tracemalloc {old['tracemalloc_peak_mib'] / max(new['tracemalloc_peak_mib'], 1e-9):.1f}x"
            )


if __name__ == "__main__":
    main()
