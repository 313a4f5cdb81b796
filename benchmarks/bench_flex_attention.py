"""FlexAttention for neighbour-grouped attention on this machine (not a test): what torch allows,
whether it is right, and how fast it is against the paths FIMPConv has.

Issue 12 asks for the neighbour-grouped attention of design section 6 "fused where torch allows
(FlexAttention ...)". This script measures what torch allows here, on one layout: T targets,
each with D neighbours of L tokens, 4 heads of dimension 16 (d = 64, FIMPConv's benchmark shape),
queries [1, h, T*L, 16] and keys / values [1, h, T*D*L, 16] (slot-major, as the grouped path
lays them out), a block mask that lets target t's queries see only its own D*L keys (built with
``torch.compile(create_block_mask)``: the eager builder materialises the T*L x T*D*L mask).

FlexAttention takes one softmax over all of a query's unmasked keys, but FIMP's message is a
softmax *per neighbour block* (sum_j softmax(Q K_j^T) V_j). The script folds that in with a
score_mod: subtracting each block's log-sum-exp (computed first, one pass over Q K^T) makes the
joint softmax equal to the per-block softmax divided by D, so ``D * flex(...)`` is the grouped
sum. Printed per L:

- ``backward``: whether FlexAttention's backward runs on this device (torch 2.14 on the CPU:
  NotImplementedError, so FlexAttention cannot train FIMP on the CPU at all);
- the forward time (no grad) of: ``grouped`` (the batched-matmul grouped path,
  ``CrossAttention.grouped_context``'s arithmetic), ``per-edge`` (one SDPA over per-edge
  gathered Q/K/V, then the sum over each target's D edges), ``flex`` (compiled FlexAttention with
  the block mask and the log-sum-exp score_mod; the log-sum-exp pass included), and the one-off
  block-mask build and compile times;
- the largest difference of ``flex`` and ``per-edge`` from ``grouped`` (must be float rounding).

    python benchmarks/bench_flex_attention.py           # about two minutes on 2 cores
    python benchmarks/bench_flex_attention.py --smoke   # tiny sizes (used by a test)
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch
import torch.nn.functional as F
from bench_fimp_conv import _time  # median of `repeats` after a warm-up (this folder)
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

HEADS, HEAD_DIM = 4, 16


def grouped(q, k, v, t: int, d: int, length: int):
    """Sum over blocks of the per-block softmax attention, as one batched matmul per target."""
    qq = q.view(HEADS, t, length, HEAD_DIM).transpose(0, 1)
    kk = k.view(HEADS, t, d * length, HEAD_DIM).transpose(0, 1)
    vv = v.view(HEADS, t, d * length, HEAD_DIM).transpose(0, 1)
    scores = (qq @ kk.transpose(-1, -2) / math.sqrt(HEAD_DIM)).view(t, HEADS, length, d, length)
    attn = scores.softmax(-1).view(t, HEADS, length, d * length)
    return attn @ vv  # [T, h, L, 16]


def per_edge(q, k, v, t: int, d: int, length: int):
    """One SDPA call over per-edge Q (each target's queries repeated per edge), then the sum."""
    qq = q.view(HEADS, t, 1, length, HEAD_DIM).expand(HEADS, t, d, length, HEAD_DIM)
    qq = qq.permute(1, 2, 0, 3, 4).reshape(t * d, HEADS, length, HEAD_DIM)
    kk = k.view(HEADS, t * d, length, HEAD_DIM).transpose(0, 1)
    vv = v.view(HEADS, t * d, length, HEAD_DIM).transpose(0, 1)
    out = F.scaled_dot_product_attention(qq, kk, vv).view(t, d, HEADS, length, HEAD_DIM)
    return out.sum(1)


def block_lse(q, k, t: int, d: int, length: int):
    """Log-sum-exp of each query row over each neighbour block's keys: [h, T*L, D]."""
    qq = q.view(HEADS, t, length, HEAD_DIM)
    kk = k.view(HEADS, t, d, length, HEAD_DIM)
    scores = torch.einsum("htqe,htdke->htqdk", qq, kk) / math.sqrt(HEAD_DIM)
    return scores.logsumexp(-1).reshape(HEADS, t * length, d)


def make_flex(t: int, d: int, length: int, device: str | torch.device = "cpu"):
    """The block mask and the compiled FlexAttention call of the grouped layout: ``run(q, k, v)``
    returns the grouped sum [T, h, L, 16] like :func:`grouped` (also used by gpu_check.py)."""
    keys_per_target = d * length

    def same_target(b, h, q_idx, kv_idx):
        return (q_idx // length) == (kv_idx // keys_per_target)

    t0 = time.perf_counter()
    mask = torch.compile(create_block_mask)(
        same_target, 1, 1, t * length, t * keys_per_target, device=device
    )
    build = time.perf_counter() - t0
    compiled = torch.compile(flex_attention, dynamic=False)

    def run(q, k, v):
        lse = block_lse(q, k, t, d, length)

        def score_mod(score, b, h, q_idx, kv_idx):
            return score - lse[h, q_idx, (kv_idx // length) % d]

        out = compiled(q, k, v, score_mod=score_mod, block_mask=mask)  # joint softmax / D
        return (d * out).view(HEADS, t, length, HEAD_DIM).transpose(0, 1)

    return run, build


def backward_support(t: int, d: int, length: int) -> str:
    q = torch.randn(1, HEADS, t * length, HEAD_DIM, requires_grad=True)
    k = torch.randn(1, HEADS, t * d * length, HEAD_DIM, requires_grad=True)
    try:
        flex_attention(q, k, k).sum().backward()
    except NotImplementedError as err:
        return f"NOT SUPPORTED here ({type(err).__name__}: {err})"
    return "runs"


def case(t: int, d: int, length: int, repeats: int) -> None:
    torch.manual_seed(0)
    q = torch.randn(1, HEADS, t * length, HEAD_DIM)
    k = torch.randn(1, HEADS, t * d * length, HEAD_DIM)
    v = torch.randn(1, HEADS, t * d * length, HEAD_DIM)
    run, build = make_flex(t, d, length)
    with torch.no_grad():
        t0 = time.perf_counter()
        flex_out = run(q, k, v)
        first = time.perf_counter() - t0
        ref = grouped(q, k, v, t, d, length)
        edge_out = per_edge(q, k, v, t, d, length)
        times = {
            "grouped": _time(lambda: grouped(q, k, v, t, d, length), repeats),
            "per-edge": _time(lambda: per_edge(q, k, v, t, d, length), repeats),
            "flex": _time(lambda: run(q, k, v), repeats),
        }
    scale = ref.abs().max().item()
    print(
        f"L={length:<3d} T={t:<5d} D={d} E={t * d:<6d} forward (no grad): "
        + ", ".join(f"{name} {1e3 * s:8.1f} ms" for name, s in times.items())
        + f"  | flex/grouped {times['flex'] / times['grouped']:6.1f}x slower"
        + f", per-edge/grouped {times['per-edge'] / times['grouped']:5.2f}x"
    )
    print(
        f"      block mask build {build:5.1f} s, first flex call (compile) {first:5.1f} s; "
        f"max |flex - grouped| / max|grouped| = {(flex_out - ref).abs().max().item() / scale:.1e}, "
        f"max |per-edge - grouped| / max|grouped| = "
        f"{(edge_out - ref).abs().max().item() / scale:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repeats = 1 if args.smoke else args.repeats
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; {HEADS} heads x {HEAD_DIM}; median of "
        f"{repeats} after a warm-up"
    )
    d = 8
    print(f"FlexAttention backward on the CPU: {backward_support(4, d, 16)}")
    sizes = [(32, 16), (8, 64)] if args.smoke else [(2000, 16), (2000, 64), (250, 196)]
    for t, length in sizes:
        case(t, d, length, repeats)


if __name__ == "__main__":
    main()
