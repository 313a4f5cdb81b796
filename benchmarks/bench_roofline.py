"""Roofline figures for FIMP on this machine (not a test): achieved FLOP/s as a fraction of the
dense fp32 matmul peak measured in the same run, and where the time goes.

1. Peak: the best of several ``torch.mm`` calls on 2048 x 2048 fp32 matrices (GFLOP/s).
2. FIMPConv alone, forward + backward, d = 64, 4 heads, N = E / 8 nodes, L in {16, 64, 196}.
3. One FIMP-base training step (forward + backward + AdamW) on each quick task's real data, with
   the bench's default fimp-base config (node tasks: the full graph; fmri: one batch of graphs).
4. The bound: per FIMPConv case, the attention kernel alone (one bare SDPA call, forward +
   backward, over pre-gathered per-edge Q/K/V [E, 4, L, 16], the shapes the layer attends with)
   and its fraction of the peak. A layer whose attention FLOPs ran at that rate and whose other
   FLOPs (projections) ran at the full matmul peak would reach the printed ``ceiling``: the
   fraction of the peak that FIMPConv cannot exceed without a faster attention kernel. With a
   head dimension of 16 each per-edge product is [L, 16] x [16, L]: too little work per byte for
   the matmul units, so the ceiling is far below 100%.

FLOPs are counted analytically from the shapes each FIMPConv and FFN actually sees (a hook
records N, L, E per call): per FIMPConv forward ``10 N L d^2`` (Q, K, V, deferred W_O and W)
``+ 4 E L^2 d`` (Q K^T and P V over all heads), per FFN ``4 r N L d^2``; backward is counted as
twice the forward. (The tokenizer, norms and head are left out, so the fractions are slight
underestimates. ``torch.utils.flop_counter.FlopCounterMode`` is no use here: it counts the
sparse one-hot gather / scatter matmuls as dense and does not see the CPU flash-attention kernel.)

The phase split times each phase with a wall clock around the library functions that implement
it (CPU ops are synchronous): tokenizer (``FIMP.tokenize``), projections
(``CrossAttention.prepare``), gather (``gather_rows``), attention (``CrossAttention._attend`` or, on the grouped path,
``CrossAttention.grouped_context``),
aggregation (``_segment_reduce`` + deferred ``CrossAttention.output``), FFN, other forward (norms,
W, residuals, head, loss), backward, optimizer.

Every case runs twice, in two fresh processes: with glibc malloc's defaults and with the heap
kept as ``fimp-bench run`` keeps it (``fimp_bench._allocator.keep_heap``: large blocks from the
heap, no trim, so per-edge buffers are not mapped and page-faulted in again every step); the
last table puts the two side by side. ``--malloc default|heap`` runs one of them.

    python benchmarks/bench_roofline.py            # about four minutes on 2 cores
    python benchmarks/bench_roofline.py --smoke    # tiny sizes, seconds (used by a test)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from bench_fimp_conv import _time  # median of `repeats` after a warm-up (this folder)

import fimp.models.fimp as fimp_model
import fimp.nn.cross_attention as cross_attention
import fimp.nn.fimp_conv as fimp_conv
from fimp.nn import FIMPConv

PHASES = (
    "tokenizer",
    "projections",
    "gather",
    "attention",
    "aggregation",
    "ffn",
    "other forward",
    "backward",
    "optimizer",
)


def matmul_peak(size: int, repeats: int) -> float:
    """Dense fp32 matmul throughput in FLOP/s: the best of ``repeats`` calls."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


class Instrument:
    """Wall-clock timers around the functions of each phase, and analytic FLOPs from the shapes
    each FIMPConv / FFN call sees. Patches are undone on exit."""

    def __init__(self, model: torch.nn.Module | None = None) -> None:
        self.model = model
        self.times: dict[str, float] = defaultdict(float)
        self.flops = 0.0
        self.active = False
        self._undo: list = []

    def _wrap(self, owner, name: str, phase: str | None, count=None) -> None:
        fn = getattr(owner, name)

        def wrapped(*a, **k):
            if count is not None:
                count(*a, **k)
            if not self.active or phase is None:
                return fn(*a, **k)
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.times[phase] += time.perf_counter() - t0

        setattr(owner, name, wrapped)
        self._undo.append((owner, name, fn))

    def _count_conv(self, conv, x, edge_index, **_):
        n, length, d = x.shape
        e = edge_index.size(1)
        self.flops += 3 * (10 * n * length * d * d + 4 * e * length * length * d)

    def __enter__(self) -> Instrument:
        self._wrap(fimp_model.FIMP, "tokenize", "tokenizer")
        self._wrap(cross_attention.CrossAttention, "prepare", "projections")
        self._wrap(fimp_conv, "gather_rows", "gather")
        self._wrap(cross_attention.CrossAttention, "_attend", "attention")
        self._wrap(cross_attention.CrossAttention, "grouped_context", "attention")
        self._wrap(fimp_conv, "_segment_reduce", "aggregation")
        self._wrap(cross_attention.CrossAttention, "output", "aggregation")
        self._wrap(FIMPConv, "forward", None, count=self._count_conv)
        for module in self.model.modules() if self.model is not None else ():
            if isinstance(module, torch.nn.Sequential) and _is_ffn(module):
                lin = [m for m in module if isinstance(m, torch.nn.Linear)]
                hidden = lin[0].out_features

                def count(x, _d=lin[0].in_features, _h=hidden):
                    self.flops += 3 * 4 * x[..., 0].numel() * _d * _h

                self._wrap(module, "forward", "ffn", count=count)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, fn in reversed(self._undo):
            if isinstance(owner, torch.nn.Module):
                del owner.forward  # back to the class's method
            else:
                setattr(owner, name, fn)

    @contextlib.contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        yield
        self.times[name] += time.perf_counter() - t0


def _is_ffn(seq: torch.nn.Sequential) -> bool:
    lin = [m for m in seq if isinstance(m, torch.nn.Linear)]
    return len(lin) == 2 and lin[0].in_features == lin[1].out_features


def _split_line(times: dict[str, float], total: float) -> str:
    return ", ".join(f"{p} {100 * times.get(p, 0.0) / total:.0f}%" for p in PHASES if p in times)


def _measure(step, model: torch.nn.Module | None = None) -> tuple[float, dict[str, float], float]:
    """One instrumented ``step(ins)`` after an uninstrumented warm-up: (FLOPs, seconds per phase,
    total seconds); "other forward" is the forward time outside the named phases."""
    with Instrument(model) as ins:
        step()
        ins.flops, ins.times, ins.active = 0.0, defaultdict(float), True
        t0 = time.perf_counter()
        step(ins)
        total = time.perf_counter() - t0
    forward = ins.times.pop("forward")
    inner = sum(v for k, v in ins.times.items() if k not in ("backward", "optimizer"))
    ins.times["other forward"] = max(forward - inner, 0.0)
    return ins.flops, dict(ins.times), total


def conv_case(length: int, num_edges: int, repeats: int, peak: float) -> None:
    torch.manual_seed(0)
    n = max(num_edges // 8, 2)
    x = torch.randn(n, length, 64, requires_grad=True)
    edge_index = torch.randint(0, n, (2, num_edges))
    conv = FIMPConv(64, 4)

    def step(ins: Instrument | None = None):
        phase = ins.phase if ins is not None else (lambda _: contextlib.nullcontext())
        x.grad = None
        conv.zero_grad(set_to_none=True)
        with phase("forward"):
            y = conv(x, edge_index)
        with phase("backward"):
            y.sum().backward()

    seconds = _time(step, repeats)
    flops, times, total = _measure(step)
    rate = flops / seconds
    _result(f"FIMPConv L={length}", seconds, rate / peak)
    print(
        f"FIMPConv L={length:<3d} E={num_edges:<6d} N={n:<5d} {seconds * 1e3:8.1f} ms  "
        f"{flops / 1e9:7.2f} GFLOP  {rate / 1e9:6.1f} GFLOP/s = {100 * rate / peak:5.1f}% of "
        f"peak  | {_split_line(times, total)}"
    )
    attention_ceiling(length, num_edges, flops, repeats, peak)


def attention_ceiling(length: int, num_edges: int, layer_flops: float, repeats: int, peak: float):
    """The bare attention kernel at the layer's shapes and the layer fraction it allows."""
    heads, head_dim = 4, 16
    q, k, v = (
        torch.randn(num_edges, heads, length, head_dim, requires_grad=True) for _ in range(3)
    )

    def step():
        for t in (q, k, v):
            t.grad = None
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    seconds = _time(step, repeats)
    attn_flops = 3 * 4 * num_edges * length**2 * heads * head_dim  # forward + 2x backward
    attn_rate = attn_flops / seconds
    best_time = attn_flops / attn_rate + (layer_flops - attn_flops) / peak
    ceiling = layer_flops / best_time / peak
    print(
        f"    bound: bare SDPA fwd+bwd [E, {heads}, {length}, {head_dim}] {seconds * 1e3:8.1f} ms "
        f"{attn_rate / 1e9:6.1f} GFLOP/s = {100 * attn_rate / peak:5.1f}% of peak; attention is "
        f"{100 * attn_flops / layer_flops:.0f}% of the layer's FLOPs, so the layer's ceiling is "
        f"{100 * ceiling:5.1f}% of peak"
    )


def _task_step(task_name: str, preset):
    from torch_geometric.data import Batch

    from fimp_bench.models import get_model
    from fimp_bench.tasks import get_task

    prep = get_task(task_name).prepare(seed=0, preset=preset)
    spec = get_model("fimp-base")
    torch.manual_seed(0)
    model = spec.build(prep, spec.trials(1)[0]).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if prep.level == "node":
        g, rows = prep.graphs[0], prep.graphs[0].train_mask
    else:
        g = Batch.from_data_list([prep.graphs[i] for i in prep.train_idx[: preset.batch_size]])
        rows = None

    def loss_of(out):
        if prep.objective == "reconstruction":
            m = g.input_mask if rows is None else g.input_mask & rows[:, None]
            return F.mse_loss(out[m], g.target[m])
        return F.cross_entropy(out[rows], g.y[rows])

    def step(ins: Instrument | None = None):
        phase = ins.phase if ins is not None else (lambda _: contextlib.nullcontext())
        opt.zero_grad(set_to_none=True)
        with phase("forward"):
            loss = loss_of(model(g)["out"])
        with phase("backward"):
            loss.backward()
        with phase("optimizer"):
            opt.step()

    return model, step, g


def task_case(task_name: str, preset, repeats: int, peak: float) -> None:
    model, step, g = _task_step(task_name, preset)
    seconds = _time(step, repeats)
    flops, times, total = _measure(step, model)
    rate = flops / seconds
    _result(task_name, seconds, rate / peak)
    print(
        f"{task_name:<21} N={g.num_nodes:<5d} E={g.edge_index.size(1):<6d} step "
        f"{seconds * 1e3:7.1f} ms  {flops / 1e9:6.2f} GFLOP  {rate / 1e9:5.1f} GFLOP/s = "
        f"{100 * rate / peak:4.1f}% of peak\n    {_split_line(times, total)}"
    )


def _result(name: str, seconds: float, fraction: float) -> None:
    """A machine-readable line for the side-by-side table of the parent process."""
    print(f"RESULT\t{name}\t{seconds!r}\t{fraction!r}")


def _both(args: argparse.Namespace) -> None:
    """Run every case under each allocator setting in a fresh process; then compare."""
    results: dict[str, dict[str, tuple[float, float]]] = {}
    for setting in ("default", "heap"):
        cmd = [sys.executable, os.path.abspath(__file__), "--malloc", setting]
        cmd += ["--repeats", str(args.repeats)] + (["--smoke"] if args.smoke else [])
        env = {**os.environ, "FIMP_BENCH_MALLOC": setting}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        print(f"== glibc malloc: {setting} ==")
        for line in out.splitlines():
            if line.startswith("RESULT\t"):
                _, name, sec, frac = line.split("\t")
                results.setdefault(name, {})[setting] = (float(sec), float(frac))
            else:
                print(line)
        print()
    print("case                    default malloc        heap kept   default/heap")
    for name, r in results.items():
        (sd, fd), (sh, fh) = r["default"], r["heap"]
        print(
            f"{name:<21} {sd * 1e3:8.1f} ms {100 * fd:4.1f}%  {sh * 1e3:8.1f} ms {100 * fh:4.1f}%"
            f"  {sd / sh:8.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--malloc",
        choices=("both", "default", "heap"),
        default="both",
        help="glibc malloc setting: both (default; two processes, side by side), default, heap",
    )
    args = parser.parse_args()
    if args.malloc == "both":
        _both(args)
        return
    from fimp_bench._allocator import allocator_setting, keep_heap
    from fimp_bench.tasks import get_preset

    if args.malloc == "heap":
        keep_heap()
    print(f"allocator: {allocator_setting()}")

    repeats = 1 if args.smoke else args.repeats
    size = 256 if args.smoke else 2048
    peak = matmul_peak(size, repeats + 2)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; median of {repeats} after a warm-up"
    )
    print(
        f"dense fp32 matmul peak ({size}^2 torch.mm, best of {repeats + 2}): {peak / 1e9:.1f} GFLOP/s\n"
    )
    sizes = [(16, 512), (64, 256)] if args.smoke else [(16, 16_000), (64, 16_000), (196, 2_000)]
    for length, edges in sizes:
        conv_case(length, edges, repeats, peak)
    print()
    preset = get_preset("smoke" if args.smoke else "quick")
    tasks = ["spatial-expression", "spatial-celltype", "fmri-reconstruction", "image-country"]
    for task in tasks:
        task_case(task, preset, repeats, peak)


if __name__ == "__main__":
    main()
