"""Slow, obviously right reference implementations of CrossAttention and FIMPConv.

Explicit loops over edges, heads and query tokens; no batching, no gathering, no SDPA. The fast code
in fimp.nn is checked against these for values and gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fimp.nn import CrossAttention, FIMPConv


def ref_cross_attention(
    att: CrossAttention, hq: Tensor, hk: Tensor, qmask: Tensor, kmask: Tensor
) -> tuple[Tensor, Tensor]:
    """One target sequence hq [Lq, d] attends to one source sequence hk [Lk, d].

    Returns the output [Lq, d] and the attention [heads, Lq, Lk]. A padded query row, or any row when
    the source has no real token, is zero (output and attention).
    """
    lq, lk, d, heads = hq.size(0), hk.size(0), att.dim, att.heads
    dh = d // heads
    ctx = hq.new_zeros(lq, d)
    attention = hq.new_zeros(heads, lq, lk)
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        q = hq @ att.q_proj.weight[sl].T + att.q_proj.bias[sl]
        k = hk @ att.k_proj.weight[sl].T + att.k_proj.bias[sl]
        v = hk @ att.v_proj.weight[sl].T + att.v_proj.bias[sl]
        for t in range(lq):
            if not qmask[t] or not kmask.any():
                continue
            valid = [u for u in range(lk) if kmask[u]]
            scores = torch.stack([(q[t] * k[u]).sum() / math.sqrt(dh) for u in valid])
            probs = torch.exp(scores - scores.max())
            probs = probs / probs.sum()
            row = hq.new_zeros(lk)
            for p, u in zip(probs, valid):
                row = row + p * torch.nn.functional.one_hot(torch.tensor(u), lk).to(hq.dtype)
            attention[h, t] = row
            ctx[t, sl] = sum(p * v[u] for p, u in zip(probs, valid))
    out = ctx @ att.out_proj.weight.T + att.out_proj.bias
    rows = qmask & kmask.any()
    return out * rows[:, None].to(out.dtype), attention


def ref_fimp_conv(
    conv: FIMPConv, x: Tensor, edge_index: Tensor, token_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The FIMP layer by its definition. Returns the output [N, L, d] and attention [E, h, L, L]."""
    n, length, d = x.shape
    mask = token_mask if token_mask is not None else torch.ones(n, length, dtype=torch.bool)
    messages: dict[int, list[Tensor]] = {i: [] for i in range(n)}
    attentions = []
    for e in range(edge_index.size(1)):
        j, i = int(edge_index[0, e]), int(edge_index[1, e])
        m, a = ref_cross_attention(conv.message, x[i], x[j], mask[i], mask[j])
        messages[i].append(m)
        attentions.append(a)
    rows = []
    for i in range(n):
        if not messages[i]:
            rows.append(x.new_zeros(length, d))
        elif conv.aggr == "mean":
            rows.append(torch.stack(messages[i]).mean(0))
        elif conv.aggr == "sum":
            rows.append(torch.stack(messages[i]).sum(0))
        else:
            # amax splits the gradient evenly between tied maxima (duplicate edges tie exactly)
            rows.append(torch.stack(messages[i]).amax(0))
    agg = torch.stack(rows)
    out = x + agg if conv.combine == "add" else agg
    if conv.lin is not None:
        out = out @ conv.lin.weight.T + conv.lin.bias
    if token_mask is not None:
        out = out * token_mask[..., None].to(out.dtype)
    att = torch.stack(attentions) if attentions else x.new_zeros(0, conv.heads, length, length)
    return out, att
