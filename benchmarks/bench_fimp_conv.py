"""FIMPConv speed and memory benchmark (not a test). Prints ratios measured side by side in one run.

Forward + backward, on the CPU unless --device cuda, d = 64, 4 heads, N = E / 8 nodes:

- ``fimp``       FIMPConv fast path (per-node projections, per-edge SDPA, segment aggregation)
- ``explicit``   FIMPConv with return_attention_weights=True (materialised softmax)
- ``ampnet``     the predecessor: PyG MessagePassing(aggr="mean") calling nn.MultiheadAttention per edge
- ``sdpa``       one bare SDPA call over pre-gathered Q/K/V [E, heads, L, d/heads] (the floor)
- ``transformerconv`` / ``gatconv``  PyG layers on the flattened node vector (width L*d, 4 heads)

Then the neighbour-grouped path against the per-edge path (``FIMPConv(attention_path=...)``), on
kNN-like graphs (every node has 7 in-edges: no padded neighbour slots) and on the random graphs
above (uneven in-degree, padded slots), L in {4, 9, 16, 32, 64}: ``per-edge/grouped`` > 1 means
grouped is faster; ``auto`` is the path ``attention_path="auto"`` takes for that shape.
``--keep-heap`` first applies fimp-bench's malloc setting (``fimp_bench._allocator``).

Then peak memory (median of 3 fresh subprocesses per point, Linux: peak RSS (VmHWM, reset after a warm-up) above
the RSS before the call) of FIMPConv forward +
backward with and without edge chunking as E grows at fixed N.

    python benchmarks/bench_fimp_conv.py            # the full run (several minutes on 2 cores)
    python benchmarks/bench_fimp_conv.py --smoke    # tiny sizes, seconds (used by a test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv, MessagePassing, TransformerConv

from fimp.nn import FIMPConv

DIM, HEADS = 64, 4


class AMPConv(MessagePassing):
    """The predecessor (AMPNet, 2022): mean MessagePassing with nn.MultiheadAttention per edge."""

    def __init__(self, embed_dim: int, num_heads: int, num_tokens: int) -> None:
        super().__init__(aggr="mean")
        self.embed_dim, self.num_tokens = embed_dim, num_tokens
        self.attn = torch.nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)

    def forward(self, x, edge_index):
        return self.propagate(edge_index, x=x)

    def message(self, x_i, x_j):
        e = x_i.size(0)
        q = x_i.view(e, self.num_tokens, self.embed_dim)
        kv = x_j.view(e, self.num_tokens, self.embed_dim)
        out, _ = self.attn(query=q, key=kv, value=kv)
        return out.reshape(e, -1)


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cases(length: int, num_edges: int, device: str):
    torch.manual_seed(0)
    n = max(num_edges // 8, 2)
    x = torch.randn(n, length, DIM, device=device)
    edge_index = torch.randint(0, n, (2, num_edges), device=device)

    def fwd_bwd(module, inp, call):
        inp = inp.detach().requires_grad_(True)
        out = call(module, inp)
        out.sum().backward()

    fimp = FIMPConv(DIM, HEADS).to(device)
    amp = AMPConv(DIM, HEADS, length).to(device)
    width = length * DIM
    tconv = TransformerConv(width, width // HEADS, heads=HEADS).to(device)
    gat = GATConv(width, width // HEADS, heads=HEADS, add_self_loops=False).to(device)
    dh = DIM // HEADS
    q, k, v = (torch.randn(num_edges, HEADS, length, dh, device=device) for _ in range(3))

    def sdpa():
        qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))
        F.scaled_dot_product_attention(qq, kk, vv).sum().backward()

    flat = x.reshape(n, width)
    return {
        "fimp": lambda: fwd_bwd(fimp, x, lambda m, t: m(t, edge_index)),
        "explicit": lambda: fwd_bwd(
            fimp, x, lambda m, t: m(t, edge_index, return_attention_weights=True)[0]
        ),
        "ampnet": lambda: fwd_bwd(amp, flat, lambda m, t: m(t, edge_index)),
        "sdpa": sdpa,
        "transformerconv": lambda: fwd_bwd(tconv, flat, lambda m, t: m(t, edge_index)),
        "gatconv": lambda: fwd_bwd(gat, flat, lambda m, t: m(t, edge_index)),
    }


def speed(lengths, edges, repeats, device) -> None:
    names = ["fimp", "explicit", "ampnet", "sdpa", "transformerconv", "gatconv"]
    print(
        f"\n== forward+backward time (median of {repeats}, seconds), d={DIM}, heads={HEADS}, N=E/8 =="
    )
    head = f"{'L':>3} {'E':>7} " + " ".join(f"{n:>15}" for n in names)
    print(head + f" {'ampnet/fimp':>12} {'fimp/sdpa':>10} {'explicit/fimp':>14}")
    for length in lengths:
        for num_edges in edges:
            cases = _cases(length, num_edges, device)
            t = {name: _time(cases[name], repeats) for name in names}
            row = f"{length:>3} {num_edges:>7} " + " ".join(f"{t[n]:>15.4f}" for n in names)
            print(
                row + f" {t['ampnet'] / t['fimp']:>12.2f} {t['fimp'] / t['sdpa']:>10.2f}"
                f" {t['explicit'] / t['fimp']:>14.2f}",
                flush=True,
            )


def grouped(lengths, nodes: int, repeats: int, device: str) -> None:
    print(
        f"\n== neighbour-grouped vs per-edge attention, forward+backward (median of {repeats}, "
        f"ms), N={nodes}, d={DIM}, heads={HEADS} =="
    )
    print(
        f"{'graph':>10} {'L':>3} {'E':>7} {'per-edge':>10} {'grouped':>10} "
        f"{'per-edge/grouped':>17} {'auto':>9}"
    )
    for graph in ("knn-7", "random"):
        torch.manual_seed(0)
        if graph == "random":
            edge_index = torch.randint(0, nodes, (2, 7 * nodes), device=device)
        else:
            src = torch.randint(0, nodes, (7 * nodes,), device=device)
            edge_index = torch.stack([src, torch.arange(nodes, device=device).repeat_interleave(7)])
        for length in lengths:
            x = torch.randn(nodes, length, DIM, device=device)
            t = {}
            for path in ("per-edge", "grouped"):
                conv = FIMPConv(DIM, HEADS, attention_path=path).to(device)

                def step(conv=conv, x=x, edge_index=edge_index):
                    inp = x.detach().requires_grad_(True)
                    conv(inp, edge_index).sum().backward()

                t[path] = _time(step, repeats)
            order = torch.sort(edge_index[1], stable=True).indices
            taken = FIMPConv(DIM, HEADS)._neighbour_groups(x, *edge_index[:, order])
            auto = "per-edge" if taken is None else "grouped"
            print(
                f"{graph:>10} {length:>3} {edge_index.size(1):>7} {1e3 * t['per-edge']:>10.1f} "
                f"{1e3 * t['grouped']:>10.1f} {t['per-edge'] / t['grouped']:>17.2f} {auto:>9}",
                flush=True,
            )


_MEM_CHILD = """
import torch
from fimp.nn import FIMPConv


def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


def reset_hwm():
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak RSS (VmHWM)
        f.write("5")


n, length, e, chunk = {n}, {length}, {e}, {chunk!r}
torch.manual_seed(0)
conv = FIMPConv({dim}, {heads}, edge_chunk_size=chunk)
x = torch.randn(n, length, {dim}, requires_grad=True)
edge_index = torch.randint(0, n, (2, e))
conv(x, edge_index).sum().backward()  # warm-up: kernels, thread pools
x.grad = None
reset_hwm()
before = hwm_kib()
conv(x, edge_index).sum().backward()
print((hwm_kib() - before) / 1024.0)
"""


def _peak_mb(n: int, length: int, e: int, chunk) -> float:
    code = _MEM_CHILD.format(n=n, length=length, e=e, chunk=chunk, dim=DIM, heads=HEADS)
    # every allocation above 64 KiB is its own mmap, returned on free: RSS follows live memory
    # instead of glibc's heap high-water mark (fragmentation otherwise adds +-50 MiB of noise)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    peaks = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        peaks.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(peaks)


def memory(length: int, n: int, edges, chunk: int) -> None:
    print(
        f"\n== peak memory of forward+backward above the pre-call RSS (MiB), L={length}, N={n} =="
    )
    print(f"{'E':>7} {'unchunked':>10} {'chunk=' + str(chunk):>12}")
    rows = []
    for e in edges:
        rows.append((e, _peak_mb(n, length, e, None), _peak_mb(n, length, e, chunk)))
        print(f"{rows[-1][0]:>7} {rows[-1][1]:>10.1f} {rows[-1][2]:>12.1f}", flush=True)
    (e0, u0, c0), (e1, u1, c1) = rows[0], rows[-1]
    print(
        f"growth E={e0}->{e1}: unchunked x{u1 / max(u0, 1e-9):.2f}, chunked x{c1 / max(c0, 1e-9):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--keep-heap", action="store_true", help="apply fimp-bench's glibc malloc setting first"
    )
    parser.add_argument(
        "--only-grouped", action="store_true", help="run only the grouped vs per-edge section"
    )
    args = parser.parse_args()
    if args.keep_heap:
        from fimp_bench._allocator import keep_heap

        keep_heap()
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "processor": platform.processor() or platform.platform(),
                "device": args.device,
                "keep_heap": args.keep_heap,
            }
        )
    )
    if args.smoke:
        speed([4], [64], 1, args.device)
        grouped([4, 20], 40, 1, args.device)
        memory(4, 16, [64, 256], 32)
        return
    if args.only_grouped:
        grouped([4, 9, 16, 32, 64], 4_000, args.repeats, args.device)
        return
    speed([16, 64], [4_000, 16_000], args.repeats, args.device)
    speed([16], [64_000], 1, args.device)
    grouped([4, 9, 16, 32, 64], 4_000, args.repeats, args.device)
    memory(16, 2_000, [20_000, 40_000, 80_000, 160_000], 4_096)


if __name__ == "__main__":
    main()
