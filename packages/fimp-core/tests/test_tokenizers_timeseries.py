import math

import pytest
import torch
from torch import nn

from fimp.errors import ConfigError, NonFiniteError, ShapeError
from fimp.tokenizers import TimeSeriesPatchTokenizer
from fimp.tokenizers.timeseries import MissingCoordinatesError


class UpstreamPositionalEncoding(nn.Module):
    """brainlm_mae.modeling_brainlm.PositionalEncoding, copied from upstream (dropout 0)."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        position = torch.arange(max_len).unsqueeze(1)
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x):
        pos_encoding = self.pe[: x.size(2)]
        pos_encoding = pos_encoding.unsqueeze(0).unsqueeze(0).repeat(x.shape[0], x.shape[1], 1, 1)
        return x + pos_encoding


def upstream_brainlm_embeddings(state, signal_vectors, xyz_vectors, patch_size):
    """BrainLMEmbeddings.forward up to (excluding) the voxel flattening / masking / CLS."""
    batch, num_voxels, _ = signal_vectors.shape
    num_patch_tokens = signal_vectors.shape[-1] // patch_size
    reshaped = torch.reshape(signal_vectors, (batch, num_voxels, -1, patch_size))
    w, b = (
        state["vit.embeddings.signal_embedding_projection.weight"],
        state["vit.embeddings.signal_embedding_projection.bias"],
    )
    signal_projection = reshaped @ w.T + b
    xyz_projection = (
        xyz_vectors @ state["vit.embeddings.xyz_embedding_projection.weight"].T
        + state["vit.embeddings.xyz_embedding_projection.bias"]
    )
    xyz_projection = xyz_projection.unsqueeze(2).repeat(1, 1, num_patch_tokens, 1)
    pe = UpstreamPositionalEncoding(w.shape[0])
    pe.pe.copy_(state["vit.embeddings.pos_embedding.pe"])
    return pe(signal_projection + xyz_projection)


@torch.no_grad()
def slow_reference(tok, signal, coords, mask=None):
    """Explicit loops over nodes, patches and output dims."""
    n, t = signal.shape
    p, d = tok.patch_size, tok.dim
    length = t // p
    ws, bs = tok.signal_embedding_projection.weight, tok.signal_embedding_projection.bias
    wc, bc = tok.xyz_embedding_projection.weight, tok.xyz_embedding_projection.bias
    out = torch.zeros(n, length, d, dtype=torch.float64)
    for i in range(n):
        for j in range(length):
            patch = signal[i, j * p : (j + 1) * p]
            for c in range(d):
                if mask is not None and mask[i, j]:
                    sig = float(tok.mask_token[c])
                else:
                    sig = sum(float(ws[c, q]) * float(patch[q]) for q in range(p)) + float(bs[c])
                xyz = sum(float(wc[c, q]) * float(coords[i, q]) for q in range(3)) + float(bc[c])
                freq = math.exp(-(c - c % 2) * math.log(10000.0) / d)
                pe = math.sin(j * freq) if c % 2 == 0 else math.cos(j * freq)
                out[i, j, c] = sig + xyz + pe
    return out


def test_tokens_against_slow_reference_with_mask():
    torch.manual_seed(0)
    tok = TimeSeriesPatchTokenizer(6, patch_size=4, max_patches=8).eval()
    signal = torch.randn(3, 12)
    coords = torch.randn(3, 3) * 40
    mask = torch.tensor([[False, True, False], [False, False, False], [True, True, True]])
    for m in (None, mask):
        tokens, token_mask = tok(signal, coords, mask=m)
        assert tokens.shape == (3, 3, 6) and token_mask.dtype == torch.bool and token_mask.all()
        torch.testing.assert_close(
            tokens.double(), slow_reference(tok, signal, coords, m), atol=1e-5, rtol=1e-5
        )


def test_loads_brainlm_embedding_weights_by_name_and_matches_upstream():
    torch.manual_seed(0)
    d, p = 16, 20
    state = {
        "vit.embeddings.signal_embedding_projection.weight": torch.randn(d, p),
        "vit.embeddings.signal_embedding_projection.bias": torch.randn(d),
        "vit.embeddings.xyz_embedding_projection.weight": torch.randn(d, 3),
        "vit.embeddings.xyz_embedding_projection.bias": torch.randn(d),
        "vit.embeddings.pos_embedding.pe": UpstreamPositionalEncoding(d).pe.clone(),  # [5000, d]
    }
    tok = TimeSeriesPatchTokenizer(d, patch_size=p, max_patches=512).eval()
    prefix = "vit.embeddings."
    mine = {k[len(prefix) :]: v for k, v in state.items()}
    # upstream keeps 5000 rows of the same table: the first max_patches rows are ours exactly
    assert torch.equal(mine["pos_embedding.pe"][:512], tok.pos_embedding.pe)
    mine["pos_embedding.pe"] = mine["pos_embedding.pe"][:512]
    missing, unexpected = tok.load_state_dict(mine, strict=False)
    assert missing == ["mask_token"] and unexpected == []
    signal = torch.randn(2, 5, 200)  # batch of 2 recordings, 5 regions, 200 time points
    coords = torch.randn(2, 5, 3) * 50
    want = upstream_brainlm_embeddings(state, signal, coords, p)  # [2, 5, 10, d]
    got, _ = tok(signal.reshape(10, 200), coords.reshape(10, 3))
    torch.testing.assert_close(got.reshape(2, 5, 10, d), want, atol=1e-5, rtol=1e-5)


def test_patchify_remainder_options():
    signal = torch.arange(10.0).unsqueeze(0)
    strict = TimeSeriesPatchTokenizer(4, patch_size=4, coord_dim=0)
    with pytest.raises(ShapeError, match="remainder='truncate' or 'pad'"):
        strict(signal)
    assert torch.equal(strict.patchify(signal[:, :8]), torch.arange(8.0).reshape(1, 2, 4))
    trunc = TimeSeriesPatchTokenizer(4, patch_size=4, coord_dim=0, remainder="truncate")
    assert torch.equal(trunc.patchify(signal), torch.arange(8.0).reshape(1, 2, 4))
    assert trunc(signal)[0].shape == (1, 2, 4) and trunc.num_patches(10) == 2
    pad = TimeSeriesPatchTokenizer(4, patch_size=4, coord_dim=0, remainder="pad", pad_value=-1.0)
    patches = pad.patchify(signal)
    assert patches.shape == (1, 3, 4) and patches[0, 2].tolist() == [8.0, 9.0, -1.0, -1.0]
    assert pad(signal)[0].shape == (1, 3, 4) and pad.num_patches(10) == 3


def test_coordinates_optional_and_time_encoding_none():
    torch.manual_seed(0)
    tok = TimeSeriesPatchTokenizer(8, patch_size=5, coord_dim=0, time_encoding="none").eval()
    signal = torch.randn(4, 15)
    tokens, _ = tok(signal)
    torch.testing.assert_close(tokens, tok.signal_embedding_projection(signal.reshape(4, 3, 5)))
    assert tok.pos_embedding is None and tok.xyz_embedding_projection is None
    with pytest.raises(ShapeError, match="coord_dim=0"):
        tok(signal, torch.zeros(4, 3))
    # masked patches: only the signal term changes
    with_pe = TimeSeriesPatchTokenizer(8, patch_size=5, coord_dim=2).eval()
    coords = torch.randn(4, 2)
    mask = torch.zeros(4, 3, dtype=torch.bool)
    mask[1, 2] = True
    a, _ = with_pe(signal, coords)
    b, _ = with_pe(signal, coords, mask=mask)
    assert torch.equal(a[~mask], b[~mask])
    sig = with_pe.signal_embedding_projection(signal[1, 10:15])
    torch.testing.assert_close(b[1, 2] - a[1, 2], with_pe.mask_token - sig)
    b.sum().backward()
    assert with_pe.mask_token.grad is not None


def test_odd_dim_time_encoding():
    tok = TimeSeriesPatchTokenizer(5, patch_size=2, coord_dim=0, max_patches=4)
    pe = tok.pos_embedding.pe
    assert pe.shape == (4, 5)
    for pos in range(4):
        for c in range(5):
            freq = math.exp(-(c - c % 2) * math.log(10000.0) / 5)
            want = math.sin(pos * freq) if c % 2 == 0 else math.cos(pos * freq)
            assert abs(float(pe[pos, c]) - want) < 1e-6
    assert "pos_embedding.pe" in tok.state_dict()  # persistent, as in BrainLM


def test_bad_input_raises_typed_errors():
    tok = TimeSeriesPatchTokenizer(4, patch_size=2, max_patches=3)
    signal, coords = torch.randn(2, 6), torch.randn(2, 3)
    with pytest.raises(ShapeError, match="rank 2"):
        tok(signal[0], coords)
    with pytest.raises(MissingCoordinatesError, match="coords"):
        tok(signal)
    with pytest.raises(MissingCoordinatesError, match=r"\(2, 3\)"):
        tok(signal, torch.randn(3, 3))
    with pytest.raises(NonFiniteError):
        tok(torch.tensor([[0.0, float("inf"), 0, 0, 0, 0]]), coords[:1])
    with pytest.raises(NonFiniteError, match="coords"):
        tok(signal, torch.full((2, 3), float("nan")))
    with pytest.raises(ShapeError, match="max_patches >= 4"):
        tok(torch.randn(2, 8), coords)
    with pytest.raises(ShapeError, match="shape"):
        tok(signal, coords, mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="fewer than one patch"):
        TimeSeriesPatchTokenizer(4, patch_size=3, coord_dim=0, remainder="truncate")(
            torch.randn(1, 2)
        )
    with pytest.raises(ConfigError, match="time_encoding"):
        TimeSeriesPatchTokenizer(4, time_encoding="rope")
    with pytest.raises(ConfigError, match="patch_size"):
        TimeSeriesPatchTokenizer(4, patch_size=0)


def test_repr_reset_determinism_dtype():
    tok = TimeSeriesPatchTokenizer(32)
    assert repr(tok) == (
        "TimeSeriesPatchTokenizer(32, patch_size=20, coord_dim=3, time_encoding='sinusoidal')"
    )
    pe = tok.pos_embedding.pe.clone()
    w = tok.signal_embedding_projection.weight.clone()
    tok.reset_parameters()
    assert torch.equal(tok.pos_embedding.pe, pe) and not torch.equal(
        tok.signal_embedding_projection.weight, w
    )
    signal, coords = torch.randn(3, 40), torch.randn(3, 3)
    assert torch.equal(tok(signal, coords)[0], tok(signal, coords)[0])
    tok = tok.double()
    assert tok(signal.double(), coords.double())[0].dtype == torch.float64


def test_class_token_and_targets():
    torch.manual_seed(0)
    tok = TimeSeriesPatchTokenizer(8, patch_size=5, class_token=True).eval()
    plain = TimeSeriesPatchTokenizer(8, patch_size=5).eval()
    plain.load_state_dict(tok.state_dict(), strict=False)
    signal, coords = torch.randn(3, 20), torch.randn(3, 3)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 1] = True
    tokens, token_mask = tok(signal, coords, mask=mask)
    assert tokens.shape == (3, 5, 8) and token_mask.shape == (3, 5) and token_mask.all()
    torch.testing.assert_close(tokens[:, 0], tok.cls_token[0].expand(3, 8))
    torch.testing.assert_close(tokens[:, 1:], plain(signal, coords, mask=mask)[0])
    assert tok.num_prefix_tokens == 1 and tok.target_dim == 5
    assert "cls_token" in tok.state_dict() and "cls_token" not in plain.state_dict()
