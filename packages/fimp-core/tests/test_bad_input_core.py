"""Bad input to fimp's public entry points, parametrised by entry point x fault: NaN, inf,
integer dtype, wrong rank, no nodes, float64. Each fault is a typed FIMPError (or, for float64,
a documented cast / a typed dtype error), never a raw torch error."""

from __future__ import annotations

import pytest
import torch

from fimp.errors import FIMPError
from fimp.models import FIMP, embed
from fimp.nn import CrossAttention, FIMPConv
from fimp.tokenizers import GeneTokenizer, ImagePatchTokenizer, TimeSeriesPatchTokenizer

_gene = GeneTokenizer(["A", "B", "C"], 8)
_ts = TimeSeriesPatchTokenizer(8, patch_size=4, coord_dim=3)
_img = ImagePatchTokenizer(img_size=(8, 8), patch_size=4, in_chans=3, dim=8, class_token=False)
_conv = FIMPConv(8, 2)
_att = CrossAttention(8, 2)
_model = FIMP(None, dim=8, heads=2, num_classes=2, block="prenorm", ffn_ratio=2)
_ring = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])

ENTRY = {
    # name: (good input shape, call, what float64 does: "cast" or "error")
    "GeneTokenizer": ((5, 3), lambda x: _gene(x, ["A", "B", "C"]), "cast"),
    "TimeSeriesPatchTokenizer": ((5, 16), lambda x: _ts(x, torch.zeros(x.shape[0], 3)), "cast"),
    "ImagePatchTokenizer": ((5, 3, 8, 8), lambda x: _img(x), "cast"),
    "FIMPConv": ((5, 4, 8), lambda x: _conv(x, _ring), "error"),
    "CrossAttention": ((5, 4, 8), lambda x: _att(x, x), "error"),
    "FIMP": ((5, 4, 8), lambda x: _model(x, _ring), "error"),
    "embed": ((5, 4, 8), lambda x: embed(_model, x, _ring), "error"),
}
FAULTS = ["nan", "inf", "int", "rank", "float64"]


def _bad(shape, fault):
    x = torch.randn(*shape)
    if fault == "nan":
        x.view(-1)[3] = float("nan")
    elif fault == "inf":
        x.view(-1)[3] = -float("inf")
    elif fault == "int":
        x = x.long()
    elif fault == "rank":
        x = x.reshape(-1)
    elif fault == "float64":
        x = x.double()
    return x


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("entry", sorted(ENTRY))
def test_entry_point_x_fault(entry, fault):
    shape, call, f64 = ENTRY[entry]
    x = _bad(shape, fault)
    if fault == "float64" and f64 == "cast":
        out = call(x)  # tokenizers cast inputs to their weights' dtype, as PyG layers expect
        assert out[0].dtype == torch.float32
        return
    with pytest.raises(FIMPError):
        call(x)


@pytest.mark.parametrize(
    "entry", ["GeneTokenizer", "TimeSeriesPatchTokenizer", "ImagePatchTokenizer"]
)
def test_tokenizers_accept_zero_nodes(entry):
    shape, call, _ = ENTRY[entry]
    tokens, mask = call(torch.randn(0, *shape[1:]))[:2]
    assert tokens.shape[0] == 0 and mask.shape[0] == 0


@pytest.mark.parametrize("entry", ["FIMPConv", "FIMP"])
def test_layers_refuse_an_empty_graph(entry):
    shape, call, _ = ENTRY[entry]
    with pytest.raises(FIMPError, match="no nodes"):
        call(torch.randn(0, *shape[1:]))
