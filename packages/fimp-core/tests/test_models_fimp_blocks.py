"""FIMP layer forms: the pre-norm residual block (message + feed-forward, LayerScale) and the
one-token-per-node ablation, checked against a slow reference built from the reference FIMP layer
(values and gradients); the paper's plain form stays the default."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from reference_fimp import ref_cross_attention, ref_fimp_conv

from fimp.errors import ConfigError
from fimp.models import FIMP


def _ln(mod: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def _lin(mod: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ mod.weight.T + mod.bias


def ref_prenorm(model: FIMP, x, edge_index, mask):
    """[H <- H + g_s * SelfAttn(LN(H)), node by node]; H <- H + g_m * W M(LN(H));
    H <- H + g_f * FFN(LN(H)); final LN; masked mean; head."""
    h = x
    k = 0
    for i, conv in enumerate(model.convs):
        if model.self_attention:
            z = _ln(model.self_norms[i], h)
            own = torch.stack(
                [
                    ref_cross_attention(model.self_attns[i], z[v], z[v], mask[v], mask[v])[0]
                    for v in range(z.size(0))
                ]
            )
            h = h + (own * model.scales[k] if len(model.scales) else own)
            k += 1
        m, _ = ref_fimp_conv(conv, _ln(model.norms[i], h), edge_index, mask)
        h = h + (m * model.scales[k] if len(model.scales) else m)
        k += 1
        if model.ffns:
            ln, l1, _, _, l2 = model.ffns[i]
            f = _lin(l2, F.gelu(_lin(l1, _ln(ln, h))))
            h = h + (f * model.scales[k] if len(model.scales) else f)
            k += 1
    h = _ln(model.final_norm, h)
    w = mask[..., None].float()
    emb = (h * w).sum(1) / w.sum(1).clamp(min=1)
    return h, model.head(emb)


@pytest.mark.parametrize(
    ("ffn_ratio", "layer_scale", "self_attention"),
    [
        (2.0, 0.5, False),
        (0.0, None, False),
        (4.0, None, False),
        (2.0, 0.5, True),
        (2.0, None, True),
    ],
)
def test_prenorm_block_equals_reference_values_and_gradients(
    ffn_ratio, layer_scale, self_attention
):
    torch.manual_seed(0)
    n, length, d = 9, 4, 8
    x = torch.randn(n, length, d)
    mask = torch.rand(n, length) > 0.25
    mask[3] = False  # a node without a real token
    edge_index = torch.tensor([[0, 1, 2, 2, 4, 5, 6, 7, 3, 8], [1, 0, 0, 1, 4, 4, 5, 5, 6, 8]])
    model = FIMP(
        None,
        dim=d,
        num_layers=2,
        heads=2,
        num_classes=3,
        block="prenorm",
        ffn_ratio=ffn_ratio,
        layer_scale=layer_scale,
        self_attention=self_attention,
    ).eval()
    assert all(c.combine is None and c.lin is not None for c in model.convs)
    assert len(model.ffns) == (2 if ffn_ratio else 0)
    assert len(model.self_attns) == (2 if self_attention else 0)
    n_branches = 2 + len(model.ffns) + len(model.self_attns)
    assert len(model.scales) == (0 if layer_scale is None else n_branches)
    xa = x.clone().requires_grad_(True)
    out = model(xa, edge_index, token_mask=mask)
    xb = x.clone().requires_grad_(True)
    h_ref, logits_ref = ref_prenorm(model, xb, edge_index, mask)
    torch.testing.assert_close(out["tokens"], h_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["logits"], logits_ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out["logits"])
    grads = torch.autograd.grad((out["logits"] * g).sum(), [xa, *model.parameters()])
    grads_ref = torch.autograd.grad(
        (logits_ref * g).sum(), [xb, *model.parameters()], allow_unused=True
    )
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, atol=1e-5, rtol=1e-4)


def test_layer_scale_starts_at_its_value_and_is_learned_and_reset():
    model = FIMP(None, dim=8, heads=2, block="prenorm", ffn_ratio=2, layer_scale=0.1)
    assert all(torch.equal(p, torch.full((8,), 0.1)) for p in model.scales)
    assert all(p.requires_grad for p in model.scales)
    with torch.no_grad():
        model.scales[0].fill_(3.0)
    model.reset_parameters()
    assert torch.equal(model.scales[0], torch.full((8,), 0.1))


def test_pool_tokens_is_one_token_per_node():
    torch.manual_seed(3)
    x = torch.randn(6, 5, 8)
    mask = torch.rand(6, 5) > 0.3
    mask[2] = False
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 0, 1, 4, 5, 3]])
    model = FIMP(None, dim=8, heads=2, num_classes=2, recon_out=1, pool_tokens=True).eval()
    out = model(x, edge_index, token_mask=mask)
    w = mask[..., None].float()
    pooled = ((x * w).sum(1) / w.sum(1).clamp(min=1)).unsqueeze(1)
    node_mask = mask.any(1, keepdim=True)
    h = model.convs[0](pooled, edge_index, token_mask=node_mask)
    h = F.gelu(model.norms[0](h))
    h = model.convs[1](h, edge_index, token_mask=node_mask)
    torch.testing.assert_close(out["node_embedding"], h[:, 0] * node_mask.float())
    torch.testing.assert_close(out["tokens"], h * node_mask[..., None].float() + x)
    assert out["recon"].shape == (6, 5, 1)
    assert torch.equal(out["node_embedding"][2], torch.zeros(8))


def test_plain_is_the_default_and_options_are_checked():
    model = FIMP(None, dim=8, heads=2)
    assert model.block == "plain" and model.final_norm is None and not model.ffns
    assert all(c.combine == "add" for c in model.convs)
    assert "block" not in repr(model)
    with pytest.raises(ConfigError, match="block must be one of"):
        FIMP(None, dim=8, block="postnorm")
    with pytest.raises(ConfigError, match="belong to block='prenorm'"):
        FIMP(None, dim=8, ffn_ratio=4)
    with pytest.raises(ConfigError, match="ffn_ratio must be >= 0"):
        FIMP(None, dim=8, block="prenorm", ffn_ratio=-1)
    r = repr(FIMP(None, dim=8, heads=2, block="prenorm", ffn_ratio=4, layer_scale=0.1))
    assert "block='prenorm', ffn_ratio=4, layer_scale=0.1" in r
    with pytest.raises(ConfigError, match="self_attention belongs to block='prenorm'"):
        FIMP(None, dim=8, self_attention=True)
    assert "self_attention=True" in repr(
        FIMP(None, dim=8, heads=2, block="prenorm", self_attention=True)
    )


def test_self_attention_branch_is_each_nodes_own_tokens_only():
    """The self-attention branch never mixes nodes: with no edges at all, a node's output
    depends on its own tokens only, and reset_parameters re-draws the branch."""
    torch.manual_seed(5)
    model = FIMP(None, dim=8, heads=2, block="prenorm", ffn_ratio=2, self_attention=True).eval()
    x = torch.randn(4, 3, 8, requires_grad=True)
    out = model(x, torch.empty(2, 0, dtype=torch.long))["tokens"]
    (g,) = torch.autograd.grad((out[1] * torch.randn(3, 8)).sum(), x)
    assert g[1].abs().sum() > 0 and g[[0, 2, 3]].abs().sum() == 0
    before = model.self_attns[0].q_proj.weight.clone()
    model.reset_parameters()
    assert not torch.equal(before, model.self_attns[0].q_proj.weight)


@pytest.mark.parametrize("block", ["plain", "prenorm", "prenorm-self"])
def test_attention_maps_read_what_each_layer_sees(block):
    """fimp.interpret.attention_maps must equal the attention each FIMPConv computes inside the
    model's own forward, for both layer forms (it used to assume the plain stack)."""
    from fimp.interpret import attention_maps

    torch.manual_seed(4)
    x = torch.randn(7, 3, 8)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 0], [1, 2, 3, 4, 5, 6, 0, 0]])
    kw = {"ffn_ratio": 2.0, "layer_scale": 0.5} if block != "plain" else {}
    if block == "prenorm-self":
        block, kw["self_attention"] = "prenorm", True
    model = FIMP(None, dim=8, num_layers=3, heads=2, block=block, **kw).eval()
    seen = {}

    def hook(i):
        def fn(mod, args, kwargs):
            _, (_, att) = mod.forward(
                args[0], args[1], token_mask=kwargs["token_mask"], return_attention_weights=True
            )
            seen[i] = att

        return fn

    handles = [
        c.register_forward_pre_hook(hook(i), with_kwargs=True) for i, c in enumerate(model.convs)
    ]
    with torch.no_grad():
        model(x, edge_index)
    for h in handles:
        h.remove()
    for layer in range(3):
        maps = attention_maps(model, x, edge_index=edge_index, layer=layer)
        torch.testing.assert_close(maps.attention, seen[layer])
