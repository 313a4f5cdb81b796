"""One training epoch of FIMP-base on a synthetic graph of 10k, 100k and 1M edges (not a test).

The graph has N = 10,000 nodes (``--nodes``) and E edges: every node gets E / N in-edges from
uniformly random sources (a kNN-like graph that gets denser, as a cell graph does when the radius
grows). Each node carries L = 64 tokens of width 32 (no tokenizer: random tokens); the model is the
bench's FIMP-base architecture (pre-norm blocks, FFN ratio 2, 2 layers, 2 heads) with a per-token
reconstruction decoder and an MSE loss on every token. One epoch of a node-level task is one
full-graph step (forward, backward, AdamW).

Every size runs in a fresh process so that its peak RSS (``ru_maxrss``) is its own. With
``edge_chunk_size="auto"`` FIMPConv processes at most ``chunk_memory_mb`` (256 MiB) of per-edge
working memory at a time and recomputes each chunk in backward, so memory is bounded by the node
states (N x L x d per tensor), not by E. One unchunked run at the smallest size shows what the
chunking saves (unchunked, E = 100k would need about 15 GB). The two largest sizes run again with
``MALLOC_ARENA_MAX=1``: with glibc's default per-thread arenas the peak RSS of the 1M-edge run
varies from run to run (3.5-4.3 GiB seen) by fragmentation, not by live tensors.

    python benchmarks/bench_scale.py            # about 10 minutes on 2 cores
    python benchmarks/bench_scale.py --compare DIR   # + an older tree at 10k / 100k edges
    python benchmarks/bench_scale.py --smoke    # tiny sizes, seconds (used by a test)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(nodes: int, edges: int, length: int, chunk: str | None) -> dict:
    import torch

    from fimp.models import FIMP

    gen = torch.Generator().manual_seed(0)
    degree = max(1, edges // nodes)
    dst = torch.arange(nodes).repeat_interleave(degree)
    src = torch.randint(0, nodes, (dst.numel(),), generator=gen)
    edge_index = torch.stack([src, dst])
    x = torch.randn(nodes, length, 32, generator=gen)
    target = torch.randn(nodes, length, 1, generator=gen)
    torch.manual_seed(0)
    model = FIMP(
        None,
        dim=32,
        num_layers=2,
        heads=2,
        block="prenorm",
        ffn_ratio=2.0,
        attn_dropout=0.0,
        recon_out=1,
        edge_chunk_size=chunk,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = _rss_mib()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.mse_loss(model(x, edge_index)["recon"], target)
    loss.backward()
    opt.step()
    seconds = time.perf_counter() - t0
    return {
        "nodes": nodes,
        "edges": int(edge_index.size(1)),
        "chunk": chunk or "none",
        "epoch_s": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": _rss_mib(),
        "loss": float(loss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument(
        "--compare",
        metavar="DIR",
        help="also run an older source tree (e.g. `git archive <rev> packages | tar -x -C DIR`) "
        "at every size but the largest, side by side",
    )
    parser.add_argument("--child", nargs=2, metavar=("EDGES", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        edges, chunk = int(args.child[0]), args.child[1]
        res = child(args.nodes, edges, args.length, None if chunk == "none" else chunk)
        print(json.dumps(res))
        return
    import torch

    nodes, length = (200, 8) if args.smoke else (args.nodes, args.length)
    sizes = [2_000, 20_000] if args.smoke else [10_000, 100_000, 1_000_000]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; N = {nodes:,} nodes, L = {length}, d = 32; "
        f"one fresh process per row; load average before: {os.getloadavg()[0]:.2f}"
    )
    runs = [(sizes[0], "none", None, None)] + [(e, "auto", None, None) for e in sizes]
    # glibc's per-thread malloc arenas keep freed blocks apart, so a long run's RSS can grow by
    # fragmentation alone: the two largest sizes again with one arena
    runs += [(e, "auto", None, "1") for e in sizes[-2:]]
    if args.compare:  # the older tree at every size but the largest
        runs += [(e, "auto", args.compare, None) for e in sizes[:-1]]
    results = []
    for edges, chunk, tree, arenas in runs:
        cmd = [sys.executable, __file__, "--nodes", str(nodes), "--length", str(length)]
        env = dict(os.environ)
        env.pop("MALLOC_ARENA_MAX", None)
        if arenas:
            env["MALLOC_ARENA_MAX"] = arenas
        if tree:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(Path(tree) / "packages" / "fimp-core" / "src"), env.get("PYTHONPATH", "")]
            )
        res = subprocess.run(
            [*cmd, "--child", str(edges), chunk],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if res.returncode != 0:
            sys.exit(f"E={edges} chunk={chunk} failed:\n{res.stderr[-3000:]}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        r["tree"] = "compare" if tree else "this"
        r["arenas"] = arenas or "default"
        results.append(r)
        print(
            f"{r['tree']:<7} E={r['edges']:>9,}  edge_chunk_size={r['chunk']:<4}  "
            f"malloc arenas {r['arenas']:<7}  "
            f"epoch {r['epoch_s']:8.2f} s  peak RSS {r['peak_rss_mib']:8.1f} MiB  "
            f"(before the step {r['rss_before_mib']:7.1f} MiB)  loss {r['loss']:.4f}",
            flush=True,
        )
    for r in results:
        old = [o for o in results if o["tree"] == "compare" and o["edges"] == r["edges"]]
        if r["tree"] == "this" and r["chunk"] == "auto" and r["arenas"] == "default" and old:
            print(
                f"E={r['edges']:,}: this tree {r['epoch_s'] / old[0]['epoch_s']:.3f}x the "
                f"compared tree's epoch time, {r['peak_rss_mib'] / old[0]['peak_rss_mib']:.3f}x "
                "its peak RSS"
            )
    results = [r for r in results if r["tree"] == "this"]
    for arenas in ("default", "1"):
        chunked = [r for r in results if r["chunk"] == "auto" and r["arenas"] == arenas]
        for a, b in itertools.pairwise(chunked):
            print(
                f"malloc arenas {arenas}: peak RSS {b['edges']:,} / {a['edges']:,} edges: "
                f"{b['peak_rss_mib'] / a['peak_rss_mib']:.3f}x; epoch time "
                f"{b['epoch_s'] / a['epoch_s']:.2f}x for {b['edges'] / a['edges']:.0f}x the edges"
            )
    chunked = [r for r in results if r["chunk"] == "auto" and r["arenas"] == "default"]
    print(
        f"unchunked vs chunked peak RSS at {sizes[0]:,} edges: "
        f"{results[0]['peak_rss_mib'] / chunked[0]['peak_rss_mib']:.2f}x"
    )


if __name__ == "__main__":
    main()
