"""Mimetic query/key initialisation of the cross-attention message creator (qk_init): k_proj
starts as q_proj, the seeded model's other parameters are those of the default init, a reset
keeps the tie, and the layer still equals the slow reference (values and gradients)."""

from __future__ import annotations

import pytest
import torch
from reference_fimp import ref_fimp_conv

from fimp.errors import ConfigError
from fimp.models import FIMP
from fimp.nn import CrossAttention, FIMPConv


def test_mimetic_ties_k_to_q_and_draws_the_same_random_numbers():
    torch.manual_seed(3)
    xav = CrossAttention(8, 2)
    torch.manual_seed(3)
    mim = CrossAttention(8, 2, qk_init="mimetic")
    assert torch.equal(mim.k_proj.weight, mim.q_proj.weight)
    assert torch.equal(mim.k_proj.bias, mim.q_proj.bias)
    assert not torch.equal(xav.k_proj.weight, xav.q_proj.weight)
    for name in ("q_proj", "v_proj", "out_proj"):
        assert torch.equal(getattr(xav, name).weight, getattr(mim, name).weight), name
    # per head, W_Q^T W_K = W_Q^T W_Q is positive semi-definite: a token scores itself highest
    w = mim.q_proj.weight.view(2, 4, 8)
    for h in range(2):
        eig = torch.linalg.eigvalsh(w[h].T @ mim.k_proj.weight.view(2, 4, 8)[h])
        assert eig.min() > -1e-5
    assert "qk_init='mimetic'" in repr(mim) and "qk_init" not in repr(xav)
    # a reset re-draws all four and ties again; the two then train independently
    mim.reset_parameters()
    assert torch.equal(mim.k_proj.weight, mim.q_proj.weight)
    assert mim.k_proj.weight.data_ptr() != mim.q_proj.weight.data_ptr()


def test_mimetic_fimp_model_other_parameters_unchanged_and_reset_keeps_it():
    torch.manual_seed(0)
    a = FIMP(None, dim=8, num_layers=2, heads=2, num_classes=3, block="prenorm", ffn_ratio=2)
    torch.manual_seed(0)
    b = FIMP(
        None,
        dim=8,
        num_layers=2,
        heads=2,
        num_classes=3,
        block="prenorm",
        ffn_ratio=2,
        qk_init="mimetic",
    )
    differ = [
        n
        for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters())
        if not torch.equal(p, q)
    ]
    assert differ == [f"convs.{i}.message.k_proj.{w}" for i in range(2) for w in ("weight",)]
    b.reset_parameters()
    for conv in b.convs:
        assert torch.equal(conv.message.k_proj.weight, conv.message.q_proj.weight)
    assert "qk_init='mimetic'" in repr(b)


def test_mimetic_layer_equals_reference_values_and_gradients():
    torch.manual_seed(1)
    n, length, d = 7, 5, 8
    x = torch.randn(n, length, d)
    mask = torch.rand(n, length) > 0.2
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 1], [1, 0, 0, 2, 2, 4, 4, 6]])
    conv = FIMPConv(d, 2, message=CrossAttention(d, 2, qk_init="mimetic")).eval()
    xa = x.clone().requires_grad_(True)
    out = conv(xa, edge_index, token_mask=mask)
    out = out[0] if isinstance(out, tuple) else out
    xb = x.clone().requires_grad_(True)
    ref, _ = ref_fimp_conv(conv, xb, edge_index, mask)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    ga = torch.autograd.grad((out * g).sum(), [xa, *conv.parameters()])
    gb = torch.autograd.grad((ref * g).sum(), [xb, *conv.parameters()], allow_unused=True)
    for p, q in zip(ga, gb):
        torch.testing.assert_close(p, torch.zeros_like(p) if q is None else q, atol=1e-5, rtol=1e-4)


def test_bad_qk_init_is_a_config_error():
    with pytest.raises(ConfigError, match="qk_init must be one of"):
        CrossAttention(8, 2, qk_init="identity")
    with pytest.raises(ConfigError, match="qk_init must be one of"):
        FIMP(None, dim=8, heads=2, qk_init="identity")
