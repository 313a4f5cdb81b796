"""Two-stream foundation message creator vs a slow reference (pre-LN and post-LN blocks).

The reference runs the two streams by the design's definition, edge by edge, head by head, from the
blocks' raw weights (explicit softmax, no SDPA, no precomputed keys). The ViT and BERT tests import
``ref_two_stream_message`` from here with their own per-layer cross functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor, nn

from fimp.errors import ConfigError, ShapeError
from fimp.pretrained.two_stream import FeedForward, TransformerBlock, TwoStreamMessage

CrossFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (z [Lq,d], s [Lk,d], smask [Lk]) -> [Lq,d]


def ref_attention(q: Tensor, k: Tensor, v: Tensor, kmask: Tensor, scale: float) -> Tensor:
    """One head: q [Lq,dh], k/v [Lk,dh] -> [Lq,dh], explicit softmax over the valid keys."""
    out = q.new_zeros(q.size(0), v.size(1))
    valid = [u for u in range(k.size(0)) if kmask[u]]
    for t in range(q.size(0)):
        scores = torch.stack([(q[t] * k[u]).sum() * scale for u in valid])
        p = torch.exp(scores - scores.max())
        p = p / p.sum()
        out[t] = sum(pi * v[u] for pi, u in zip(p, valid))
    return out


def ref_two_stream_message(
    layers: Sequence[CrossFn],
    final: Callable[[Tensor], Tensor] | None,
    ht: Tensor,
    hs: Tensor,
    tmask: Tensor,
    smask: Tensor,
    source_stream: str,
) -> Tensor:
    """H_ji by the definition: Z^(l) = Cross_l(Z^(l-1), S^(l-1)); S^(l) = Cross_l(S, S) or H_j."""
    if not smask.any():
        return torch.zeros_like(ht)
    z, s = ht, hs
    for layer in layers:
        z_next = layer(z, s, smask)
        if source_stream == "self":
            s = layer(s, s, smask)
        z = z_next
    if final is not None:
        z = final(z)
    return z * tmask[:, None].to(z.dtype)


# ---------------------------------------------------------------------- a generic tiny model
class Gamma(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.randn(dim) * 0.5 + 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DepthwiseValueConv(nn.Module):
    """A BrainLM-like value term: depthwise conv over the token axis of v [B, h, L, dh]."""

    def __init__(self, heads: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            heads, heads, (kernel, 1), padding=(kernel // 2, 0), groups=heads, bias=False
        )

    def forward(self, v: Tensor, key_mask: Tensor) -> Tensor:
        return self.conv(v * key_mask[:, None, :, None].to(v.dtype))


def _randomise(m: nn.Module, seed: int) -> None:
    """Non-trivial weights everywhere: norm scales / gammas around 1, the rest around 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            scale_like = p.dim() == 1 and (name.endswith("weight") or name.endswith("gamma"))
            p.copy_(1.0 + 0.2 * noise if scale_like else 0.3 * noise)


def make_block(
    dim: int, heads: int, *, norm_first: bool, extras: bool, seed: int
) -> TransformerBlock:
    torch.manual_seed(seed)
    dh = dim // heads
    blk = TransformerBlock.from_fused_qkv(
        dim,
        heads,
        qkv=nn.Linear(dim, 3 * dim),
        out_proj=nn.Linear(dim, dim),
        norm1=nn.LayerNorm(dim),
        norm2=nn.LayerNorm(dim),
        mlp=FeedForward(nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim), activation="gelu"),
        norm_first=norm_first,
        ls1=Gamma(dim) if extras else None,
        ls2=Gamma(dim) if extras else None,
        q_norm=nn.LayerNorm(dh) if extras else None,
        k_norm=nn.LayerNorm(dh) if extras else None,
        context_norm=nn.LayerNorm(dim) if extras else None,
        value_term=DepthwiseValueConv(heads) if extras else None,
    )
    _randomise(blk, seed)
    return blk


def ref_block_cross(blk: TransformerBlock) -> CrossFn:
    """Cross layer from the block's raw weights, head by head."""

    def fn(z: Tensor, s: Tensor, smask: Tensor) -> Tensor:
        d, h = blk.dim, blk.heads
        dh = d // h
        zq = blk.norm1(z) if blk.norm_first else z
        sk = blk.norm1(s) if blk.norm_first else s
        q = zq @ blk.q_proj.weight.T + blk.q_proj.bias
        k = sk @ blk.k_proj.weight.T + blk.k_proj.bias
        v = sk @ blk.v_proj.weight.T + blk.v_proj.bias
        heads = []
        vh_all = torch.stack([v[:, i * dh : (i + 1) * dh] for i in range(h)])[None]  # [1,h,L,dh]
        extra = blk.value_term(vh_all, smask[None])[0] if blk.value_term is not None else None
        for i in range(h):
            sl = slice(i * dh, (i + 1) * dh)
            qh, kh = q[:, sl], k[:, sl]
            if blk.q_norm is not None:
                qh, kh = blk.q_norm(qh), blk.k_norm(kh)
            ctx = ref_attention(qh, kh, v[:, sl], smask, 1 / math.sqrt(dh))
            if extra is not None:
                ctx = ctx + extra[i]
            heads.append(ctx)
        ctx = torch.cat(heads, -1)
        if blk.context_norm is not None:
            ctx = blk.context_norm(ctx)
        out = ctx @ blk.out_proj.weight.T + blk.out_proj.bias
        if blk.ls1 is not None:
            out = blk.ls1(out)
        ls2 = blk.ls2 if blk.ls2 is not None else (lambda t: t)
        if blk.norm_first:
            z = z + out
            return z + ls2(blk.mlp(blk.norm2(z)))
        z = blk.norm1(z + out)
        return blk.norm2(z + ls2(blk.mlp(z)))

    return fn


def _graph(seed: int = 0, n: int = 5, length: int = 4, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, dim, generator=g)
    counts = torch.tensor([4, 2, 3, 0, 1])[:n]
    mask = torch.arange(length)[None] < counts[:, None]
    edge_index = torch.tensor([[0, 1, 2, 0, 3, 4, 1], [0, 0, 1, 2, 2, 4, 4]])
    return x, mask, edge_index


def _messages(msg: TwoStreamMessage, x, mask, edge_index, **kw):
    t, s = msg.prepare(x, mask)
    src, dst = edge_index
    return msg.edge_messages(
        tuple(a[dst] for a in t), tuple(a[src] for a in s), mask[dst], mask[src], **kw
    )


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("extras", [False, True])
@pytest.mark.parametrize("source_stream", ["self", "fixed"])
def test_matches_reference(norm_first: bool, extras: bool, source_stream: str) -> None:
    dim, heads = 8, 2
    blocks = [make_block(dim, heads, norm_first=norm_first, extras=extras, seed=s) for s in (1, 2)]
    final = nn.LayerNorm(dim) if norm_first else None
    msg = TwoStreamMessage(blocks, final_norm=final, source_stream=source_stream, freeze="none")
    x, mask, ei = _graph()
    got = _messages(msg, x, mask, ei)
    layers = [ref_block_cross(b) for b in blocks]
    for e in range(ei.size(1)):
        j, i = int(ei[0, e]), int(ei[1, e])
        want = ref_two_stream_message(layers, final, x[i], x[j], mask[i], mask[j], source_stream)
        torch.testing.assert_close(got[e], want, atol=1e-5, rtol=1e-5)


def test_self_loop_equals_encoder_and_zero_rows() -> None:
    dim, heads = 8, 2
    blocks = [make_block(dim, heads, norm_first=True, extras=True, seed=s) for s in (3, 4)]
    msg = TwoStreamMessage(blocks, final_norm=nn.LayerNorm(dim))
    x, mask, _ = _graph(1)
    n = x.size(0)
    loops = torch.arange(n).repeat(2, 1)
    got = _messages(msg, x, mask, loops)
    enc = msg.encode(x, mask)
    torch.testing.assert_close(got, enc, atol=1e-6, rtol=1e-6)
    assert torch.equal(got[~mask], torch.zeros_like(got[~mask]))  # padded rows
    assert torch.equal(got[3], torch.zeros_like(got[3]))  # node 3 has no token at all
    # padded source tokens do not matter
    x2 = x.clone()
    x2[~mask] = 100.0
    torch.testing.assert_close(_messages(msg, x2, mask, loops), got, atol=1e-6, rtol=0)


def test_source_without_tokens_gives_zero_message() -> None:
    blocks = [make_block(8, 2, norm_first=False, extras=False, seed=5)]
    msg = TwoStreamMessage(blocks)
    x, mask, _ = _graph(2)
    out, att = _messages(msg, x, mask, torch.tensor([[3, 3], [0, 1]]), return_attention=True)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(att, torch.zeros_like(att))
    assert torch.isfinite(out).all()


def test_attention_rows_and_layer_choice() -> None:
    blocks = [make_block(8, 2, norm_first=True, extras=False, seed=s) for s in (6, 7)]
    x, mask, ei = _graph(3)
    outs = {}
    for layer in (0, -1):
        msg = TwoStreamMessage(blocks, attention_layer=layer)
        out, att = _messages(msg, x, mask, ei, return_attention=True)
        plain = _messages(msg, x, mask, ei)
        torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
        assert att.shape == (ei.size(1), 2, 4, 4)
        valid = mask[ei[1]] & mask[ei[0]].any(-1, keepdim=True)
        sums = att.sum(-1)  # [E, h, L]
        torch.testing.assert_close(sums, valid[:, None, :].expand_as(sums).float())
        # no weight on padded source tokens
        assert torch.equal(att * (~mask[ei[0]])[:, None, None, :], torch.zeros_like(att))
        outs[layer] = att
    assert not torch.allclose(outs[0], outs[-1])


def test_freeze_modes_and_gradients() -> None:
    blocks = [make_block(8, 2, norm_first=True, extras=True, seed=8)]
    msg = TwoStreamMessage(blocks, final_norm=nn.LayerNorm(8), freeze="all")
    assert msg.trainable_parameter_names() == []
    assert msg.parameter_counts()["trainable"] == 0
    msg.set_freeze("attention")
    frozen = set(msg.frozen_parameter_names())
    for part in ("q_proj", "k_proj", "v_proj", "out_proj", "q_norm", "k_norm", "context_norm"):
        assert f"blocks.0.{part}.weight" in frozen
    assert "blocks.0.value_term.conv.weight" in frozen
    trainable = set(msg.trainable_parameter_names())
    assert {"blocks.0.mlp.fc1.weight", "blocks.0.norm1.weight", "blocks.0.ls1.gamma"} <= trainable
    assert "final_norm.weight" in trainable
    x, mask, ei = _graph(4)
    _messages(msg, x, mask, ei).sum().backward()
    for name, p in msg.named_parameters():
        assert (p.grad is not None) == (name in trainable), name
    msg.set_freeze("none")
    assert msg.frozen_parameter_names() == []
    counts = msg.parameter_counts()
    assert counts["frozen"] == 0 and counts["trainable"] == sum(p.numel() for p in msg.parameters())
    with pytest.raises(ConfigError, match="freeze"):
        msg.set_freeze("some")


def test_through_fimp_conv_sum() -> None:
    from fimp.nn import FIMPConv

    blocks = [make_block(8, 2, norm_first=True, extras=True, seed=s) for s in (9, 10)]
    msg = TwoStreamMessage(blocks, final_norm=nn.LayerNorm(8))
    x, mask, ei = _graph(5)
    conv = FIMPConv(8, message=msg, combine=None, project=False, aggr="sum", edge_chunk_size=2)
    out = conv(x, ei, token_mask=mask)
    per_edge = _messages(msg, x, mask, ei)
    want = torch.zeros_like(x).index_add_(0, ei[1], per_edge)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    # pretrained weights survive FIMPConv's reset_parameters
    before = blocks[0].q_proj.weight.clone()
    conv.reset_parameters()
    assert torch.equal(blocks[0].q_proj.weight, before)


def test_bad_input() -> None:
    blk = make_block(8, 2, norm_first=True, extras=False, seed=11)
    with pytest.raises(ConfigError, match="source_stream"):
        TwoStreamMessage([blk], source_stream="both")
    with pytest.raises(ConfigError, match="empty"):
        TwoStreamMessage([])
    with pytest.raises(ConfigError, match="TransformerBlock"):
        TwoStreamMessage([nn.Linear(8, 8)])
    with pytest.raises(ConfigError, match="attention_layer"):
        TwoStreamMessage([blk], attention_layer=3)
    msg = TwoStreamMessage([blk])
    with pytest.raises(ShapeError, match="token_mask"):
        msg.prepare(torch.randn(2, 3, 8), torch.ones(2, 3))
    with pytest.raises(ShapeError, match=r"\[N, L, 8\]"):
        msg.prepare(torch.randn(2, 3, 6), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ShapeError, match="qkv"):
        TransformerBlock.from_fused_qkv(
            8,
            2,
            qkv=nn.Linear(8, 20),
            out_proj=nn.Linear(8, 8),
            norm1=nn.Identity(),
            norm2=nn.Identity(),
            mlp=nn.Identity(),
        )
    with pytest.raises(ConfigError, match="heads"):
        TransformerBlock.from_fused_qkv(
            8,
            3,
            qkv=nn.Linear(8, 24),
            out_proj=nn.Linear(8, 8),
            norm1=nn.Identity(),
            norm2=nn.Identity(),
            mlp=nn.Identity(),
        )
    assert repr(msg) == "TwoStreamMessage(8, heads=2, layers=1, source_stream='self', freeze='all')"


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("source_stream", ["self", "fixed"])
def test_source_cache_and_node_chunks_give_same_messages(
    norm_first: bool, source_stream: str
) -> None:
    blocks = [make_block(8, 2, norm_first=norm_first, extras=True, seed=s) for s in (12, 13)]
    x, mask, ei = _graph(6)
    base = TwoStreamMessage(blocks, source_stream=source_stream, freeze="none")
    want = _messages(base, x, mask, ei)
    for kw in (
        {"source_cache": "stream"},
        {"node_chunk_size": 2},
        {"source_cache": "stream", "node_chunk_size": 3},
    ):
        msg = TwoStreamMessage(blocks, source_stream=source_stream, freeze="none", **kw)
        _, s = msg.prepare(x, mask)
        if kw.get("source_cache") == "stream":  # one [N, L, d] input + one value term per layer
            assert len(s) == 4 and s[0].shape == x.shape
        got = _messages(msg, x, mask, ei)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    msg = TwoStreamMessage(
        blocks, source_stream=source_stream, freeze="none", source_cache="stream"
    )
    _messages(msg, x, mask, ei).square().sum().backward()
    assert (
        blocks[0].k_proj.weight.grad is not None
        and blocks[1].value_term.conv.weight.grad is not None
    )
    with pytest.raises(ConfigError, match="source_cache"):
        TwoStreamMessage(blocks, source_cache="all")
    with pytest.raises(ConfigError, match="node_chunk_size"):
        TwoStreamMessage(blocks, node_chunk_size=0)


@pytest.mark.parametrize("source_cache", ["kv", "stream"])
def test_gradients_match_reference(source_cache: str) -> None:
    blocks = [
        make_block(8, 2, norm_first=norm_first, extras=True, seed=20 + i)
        for i, norm_first in enumerate((True, False))
    ]
    msg = TwoStreamMessage(
        blocks, final_norm=nn.LayerNorm(8), freeze="none", source_cache=source_cache
    )
    x, mask, ei = _graph(7)
    x.requires_grad_(True)
    weight = torch.randn(ei.size(1), 4, 8, generator=torch.Generator().manual_seed(0))
    (_messages(msg, x, mask, ei) * weight).sum().backward()
    fast = {n: p.grad.clone() for n, p in msg.named_parameters()}
    fast_x = x.grad.clone()
    msg.zero_grad()
    x.grad = None
    layers = [ref_block_cross(b) for b in blocks]
    total = 0.0
    for e in range(ei.size(1)):
        j, i = int(ei[0, e]), int(ei[1, e])
        ref = ref_two_stream_message(layers, msg.final_norm, x[i], x[j], mask[i], mask[j], "self")
        total = total + (ref * weight[e]).sum()
    total.backward()
    for n, p in msg.named_parameters():
        torch.testing.assert_close(fast[n], p.grad, atol=1e-4, rtol=1e-4, msg=n)
    torch.testing.assert_close(fast_x, x.grad, atol=1e-4, rtol=1e-4)
