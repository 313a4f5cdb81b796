"""Bad input to the public layers: non-finite values and wrong dtypes are typed errors on every
path (fused and return_attention alike); autocast keeps working."""

from __future__ import annotations

import pytest
import torch

from fimp.errors import NonFiniteError, ShapeError
from fimp.nn import CrossAttention, FIMPConv


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["query", "key_value"])
@pytest.mark.parametrize("return_attention", [False, True])
def test_cross_attention_refuses_non_finite_on_both_paths(bad, where, return_attention):
    att = CrossAttention(8, 2)
    q, kv = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    (q if where == "query" else kv)[1, 2, 3] = bad
    with pytest.raises(NonFiniteError, match=where):
        att(q, kv, return_attention=return_attention)


@pytest.mark.parametrize("return_attention", [False, True])
def test_cross_attention_dtype_mismatch_is_a_shape_error(return_attention):
    att = CrossAttention(8, 2)
    with pytest.raises(ShapeError, match=r"float64 but CrossAttention's weights are torch.float32"):
        att(
            torch.randn(2, 3, 8, dtype=torch.float64),
            torch.randn(2, 3, 8),
            return_attention=return_attention,
        )
    with pytest.raises(ShapeError, match="floating tensor"):
        att(torch.ones(2, 3, 8, dtype=torch.long), torch.randn(2, 3, 8))
    out = att.double()(
        torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 3, 8, dtype=torch.float64)
    )
    assert out.dtype == torch.float64


def test_fimp_conv_dtype_mismatch_is_a_shape_error_and_autocast_still_works():
    conv = FIMPConv(8, 2)
    ei = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ShapeError, match="float64 but FIMPConv's weights"):
        conv(torch.randn(2, 3, 8, dtype=torch.float64), ei)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(torch.randn(2, 3, 8).bfloat16(), ei)
    assert out.shape == (2, 3, 8)
