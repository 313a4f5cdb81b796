"""ViT-MAE BrainLM (vitmae_111M / 650M layout): HF ViT-MAE keys -> timm ViT -> two-stream creator.

``UpstreamViTMAE`` mirrors ``brainlm_mae/modeling_vit_mae_with_padding.py`` (HF ViT-MAE names, so
``state_dict()`` has upstream's keys) with a direct forward: padding to 432 x 432 with -1,
Conv2d patch embedding + stored position embeddings, CLS + pos[0], pre-LN layers with exact
softmax and exact GELU, final ``vit.layernorm`` (mask ratio 0, identity order).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from fimp.errors import ConfigError, ShapeError
from fimp.nn import FIMPConv
from fimp.pretrained.brainlm import brainlm_vitmae_pixels, load_brainlm, read_brainlm

timm = pytest.importorskip("timm", reason="the ViT-MAE BrainLM path needs the [timm] extra")

D, HEADS, FF, LAYERS, PATCH, EPS = 16, 4, 32, 2, 16, 1e-12
GRID = 432 // PATCH


class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)


class _Dense(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = _Attn()
        self.output = _Dense(D, D)


class _Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = _Attention()
        self.intermediate = _Dense(D, FF)
        self.output = _Dense(FF, D)
        self.layernorm_before = nn.LayerNorm(D, eps=EPS)
        self.layernorm_after = nn.LayerNorm(D, eps=EPS)

    def forward(self, h):
        x = self.layernorm_before(h)
        a = self.attention.attention

        def split(t):
            return t.view(*t.shape[:-1], HEADS, D // HEADS).transpose(1, 2)

        q, k, v = split(a.query(x)), split(a.key(x)), split(a.value(x))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // HEADS), dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(h.shape)
        h = self.attention.output.dense(ctx) + h
        m = self.output.dense(nn.functional.gelu(self.intermediate.dense(self.layernorm_after(h))))
        return m + h


class UpstreamViTMAE(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.vit = nn.Module()
        emb = nn.Module()
        emb.cls_token = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        emb.position_embeddings = nn.Parameter(torch.randn(1, GRID * GRID + 1, D) * 0.1)
        emb.patch_embeddings = nn.Module()
        emb.patch_embeddings.projection = nn.Conv2d(3, D, PATCH, stride=PATCH)
        self.vit.embeddings = emb
        self.vit.encoder = nn.Module()
        self.vit.encoder.layer = nn.ModuleList([_Layer() for _ in range(LAYERS)])
        self.vit.layernorm = nn.LayerNorm(D, eps=EPS)
        self.decoder = nn.Module()
        self.decoder.decoder_embed = nn.Linear(D, D)
        self.decoder.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        self.eval()

    @torch.no_grad()
    def forward(self, recording):  # [B, V, T] -> last_hidden_state [B, 1 + GRID^2, D]
        b, v, t = recording.shape
        x = recording.unsqueeze(1).repeat(1, 3, 1, 1)
        hp, wp = (432 - v) // 2, (432 - t) // 2
        x = nn.functional.pad(x, (wp, wp, hp, hp), "constant", -1)
        e = self.vit.embeddings
        h = e.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
        h = h + e.position_embeddings[:, 1:]
        cls = (e.cls_token + e.position_embeddings[:, :1]).expand(b, -1, -1)
        h = torch.cat([cls, h], dim=1)
        for layer in self.vit.encoder.layer:
            h = layer(h)
        return self.vit.layernorm(h)


def write_vitmae_dir(root, seed=0, **overrides):
    root.mkdir(parents=True, exist_ok=True)
    model = UpstreamViTMAE(seed)
    config = {
        "architectures": ["ViTMAEForPreTraining"],
        "model_type": "vit_mae",
        "hidden_size": D,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": FF,
        "hidden_act": "gelu",
        "layer_norm_eps": EPS,
        "image_size": [432, 432],
        "patch_size": PATCH,
        "num_channels": 3,
        "qkv_bias": True,
        "mask_ratio": 0.75,
        "decoder_hidden_size": D,
        **overrides,
    }
    (root / "config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), root / "pytorch_model.bin")
    return model


def test_vitmae_self_loop_matches_upstream(tmp_path):
    model = write_vitmae_dir(tmp_path)
    with pytest.raises(ConfigError, match="ViT-MAE"):
        read_brainlm(tmp_path)  # the legacy reader says where to go
    tok, message, config = load_brainlm(tmp_path)  # dispatches on model_type
    assert config["family"] == "brainlm_vitmae" and len(config["weights"]["sha256"]) == 64
    g = torch.Generator().manual_seed(0)
    recordings = torch.randn(2, 24, 40, generator=g)  # 2 nodes, each a (regions x time) recording
    pixels = brainlm_vitmae_pixels(recordings, patch_size=PATCH)
    assert pixels.shape == (2, 3, 432, 432) and pixels[0, 0, 0, 0] == -1
    expected = model(recordings)
    conv = FIMPConv(message.dim, message=message, combine=None, project=False).eval()
    with torch.no_grad():
        tokens, mask = tok(pixels)
        assert tokens.shape == (2, 1 + GRID * GRID, D)
        out = conv(tokens, torch.tensor([[1], [1]]), token_mask=mask)
    err = (out[1] - expected[1]).abs().max().item()
    print(f"BrainLM ViT-MAE self-loop identity max abs error: {err:.3g}")
    assert err < 2e-5
    assert torch.all(out[0] == 0)


def test_vitmae_pixels_checks():
    with pytest.raises(ShapeError):
        brainlm_vitmae_pixels(torch.zeros(25, 40))  # odd padding cannot be symmetric
    with pytest.raises(ConfigError):
        brainlm_vitmae_pixels(torch.zeros(24, 40), patch_size=8)
    assert brainlm_vitmae_pixels(torch.zeros(424, 200)).shape == (1, 3, 432, 432)
