"""BrainLM loader: tiny checkpoints in upstream's exact layout, checked against a slow reference.

``UpstreamBrainLM`` re-creates ``BrainLMForPretraining``'s encoder side with upstream's attribute
names (so ``state_dict()`` has upstream's keys: ``vit.embeddings.*``, ``vit.encoder.layer.{i}.*``
of Hugging Face's ``NystromformerLayer``, ``vit.layernorm.*``) and re-implements its forward
directly from the upstream sources (``brainlm_mae/modeling_brainlm.py`` and HF
``modeling_nystromformer.py``): exact branch ``softmax((q/d^¼)(k/d^¼)ᵀ) v`` plus the depthwise
convolution of ``v``, post-LN BERT-style layers, exact-erf GELU, final ``vit.layernorm``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from fimp.errors import CheckpointError, ConfigError
from fimp.pretrained.brainlm import brainlm_blocks, brainlm_message, read_brainlm
from fimp.pretrained.two_stream import TwoStreamMessage

D, HEADS, FF, LAYERS, P, K = 16, 4, 32, 2, 5, 7  # K: conv kernel (65 upstream)
T = 30  # time points per region -> T / P = 6 patches


def sinusoid(max_len: int, d: int) -> torch.Tensor:
    div_term = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    position = torch.arange(max_len).unsqueeze(1)
    pe = torch.zeros(max_len, d)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class _PositionalEncoding(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.register_buffer("pe", sinusoid(5000, d))

    def forward(self, x):  # x [B, V, J, d]; upstream adds pe[j] for time patch j
        return x + self.pe[: x.size(2)].unsqueeze(0).unsqueeze(0)


class _Embeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, D) * 0.02)
        self.signal_embedding_projection = nn.Linear(P, D)
        self.xyz_embedding_projection = nn.Linear(3, D)
        self.pos_embedding = _PositionalEncoding(D)

    def forward(self, signal, xyz, noise):
        b, v, t = signal.shape
        j = t // P
        x = self.signal_embedding_projection(signal.reshape(b, v, -1, P))
        x = x + self.xyz_embedding_projection(xyz).unsqueeze(2).repeat(1, 1, j, 1)
        x = self.pos_embedding(x)
        x = torch.flatten(x, start_dim=1, end_dim=2)  # voxel-major
        # random_masking with mask_ratio 0: argsort(noise) order
        ids_shuffle = torch.argsort(noise, dim=1)
        x = torch.gather(x, 1, ids_shuffle.unsqueeze(-1).repeat(1, 1, D))
        return torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.conv = nn.Conv2d(HEADS, HEADS, (K, 1), padding=(K // 2, 0), bias=False, groups=HEADS)

    def _t(self, x):
        return x.view(*x.shape[:-1], HEADS, D // HEADS).permute(0, 2, 1, 3)

    def forward(self, h):
        q, k, v = self._t(self.query(h)), self._t(self.key(h)), self._t(self.value(h))
        dh = D // HEADS
        q = q / math.sqrt(math.sqrt(dh))
        k = k / math.sqrt(math.sqrt(dh))
        probs = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        ctx = probs @ v
        ctx = ctx + self.conv(v)
        return ctx.permute(0, 2, 1, 3).reshape(*h.shape[:-1], D)


class _DenseLN(nn.Module):
    def __init__(self, d_in):
        super().__init__()
        self.dense = nn.Linear(d_in, D)
        self.LayerNorm = nn.LayerNorm(D, eps=1e-12)

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h) + residual)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.self = _SelfAttention()
        self.output = _DenseLN(D)

    def forward(self, h):
        return self.output(self.self(h), h)


class _Intermediate(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(D, FF)

    def forward(self, h):
        return nn.functional.gelu(self.dense(h))  # HF ACT2FN["gelu"]: exact erf


class _Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = _Attention()
        self.intermediate = _Intermediate()
        self.output = _DenseLN(FF)

    def forward(self, h):
        a = self.attention(h)
        return self.output(self.intermediate(a), a)


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList([_Layer() for _ in range(LAYERS)])


class _ViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings = _Embeddings()
        self.encoder = _Encoder()
        self.layernorm = nn.LayerNorm(D, eps=1e-12)


class UpstreamBrainLM(nn.Module):
    """BrainLMForPretraining's encoder (+ a few decoder tensors, present in real checkpoints)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.vit = _ViT()
        self.decoder = nn.Module()
        self.decoder.decoder_embed = nn.Linear(D, D)
        self.decoder.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.decoder.decoder_xyz_projection = nn.Linear(3, D)
        self.decoder.decoder_pred1 = nn.Linear(D, P)
        for m in self.modules():  # non-trivial norms and a strong conv, so mis-wiring shows
            if isinstance(m, nn.LayerNorm):
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0.0, 0.3)
        self.eval()

    @torch.no_grad()
    def encode_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """Encoder layers + final layernorm on any token sequence ``h [B, L, d]``."""
        for layer in self.vit.encoder.layer:
            h = layer(h)
        return self.vit.layernorm(h)

    @torch.no_grad()
    def forward(self, signal, xyz, noise=None):
        """BrainLMModel.forward with mask_ratio 0: last_hidden_state [B, 1 + V*J, d]."""
        if noise is None:  # ascending noise = identity order (upstream's random order otherwise)
            noise = torch.arange(signal.shape[1] * (signal.shape[2] // P), dtype=torch.float32)
            noise = noise.expand(signal.shape[0], -1)
        return self.encode_tokens(self.vit.embeddings(signal, xyz, noise))


CONFIG = {
    "architectures": ["BrainLMForPretraining"],
    "attention_probs_dropout_prob": 0.1,
    "conv_kernel_size": K,
    "decoder_hidden_size": D,
    "decoder_intermediate_size": FF,
    "decoder_num_attention_heads": HEADS,
    "decoder_num_hidden_layers": 1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "hidden_size": D,
    "image_size": 224,
    "initializer_range": 0.02,
    "intermediate_size": FF,
    "inv_coeff_init_option": False,
    "layer_norm_eps": 1e-12,
    "loss_fn": "mse",
    "mask_ratio": 0.2,
    "model_type": "brainlm_mae",
    "norm_pix_loss": False,
    "num_attention_heads": HEADS,
    "num_brain_voxels": 3,
    "num_channels": 3,
    "num_hidden_layers": LAYERS,
    "num_landmarks": 64,
    "num_timepoints_per_voxel": T,
    "patch_size": 16,
    "qkv_bias": True,
    "segment_means_seq_len": 64,
    "timepoint_patching_size": P,
    "torch_dtype": "float32",
    "transformers_version": "4.28.0.dev0",
    "use_tanh_decoder": False,
}


def write_brainlm_dir(root: Path, *, seed: int = 0, fmt: str = "bin", **overrides):
    """config.json + pytorch_model.bin (HF Trainer checkpoint layout), or model.safetensors."""
    root.mkdir(parents=True, exist_ok=True)
    model = UpstreamBrainLM(seed)
    (root / "config.json").write_text(json.dumps({**CONFIG, **overrides}, indent=2))
    state = model.state_dict()
    if fmt == "bin":
        torch.save(state, root / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(root / "model.safetensors"))
    (root / "trainer_state.json").write_text("{}")  # the Trainer's other files are ignored
    return model


def brain_data(n_regions: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(1, n_regions, T, generator=g)
    xyz = torch.randn(1, n_regions, 3, generator=g) * 40.0  # A424 coordinates in mm
    return signal, xyz


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_reader_and_whole_brain_encoder_match_upstream(tmp_path, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors", reason="the [safetensors] extra is not installed")
    model = write_brainlm_dir(tmp_path, fmt=fmt)
    ck = read_brainlm(tmp_path)
    assert (ck.dim, ck.heads, ck.num_layers, ck.patch_size) == (D, HEADS, LAYERS, P)
    assert not any(k.startswith("decoder") for k in ck.state)
    blocks, final_norm = brainlm_blocks(ck)
    creator = TwoStreamMessage(blocks, final_norm=final_norm)
    signal, xyz = brain_data()
    expected = model(signal, xyz)  # [1, 1 + V*J, d]: upstream's whole-brain sequence
    tokens = model.vit.embeddings(signal, xyz, torch.arange(expected.shape[1] - 1.0)[None])
    with torch.no_grad():
        got = creator.encode(tokens)
    err = (got - expected).abs().max().item()
    assert err < 2e-5, err


def test_conv_and_final_norm_are_used(tmp_path):
    model = write_brainlm_dir(tmp_path)
    msg = brainlm_message(read_brainlm(tmp_path)).eval()
    h = torch.randn(2, 6, D)
    with torch.no_grad():
        ref = model.encode_tokens(h)
        torch.testing.assert_close(msg.encode(h), ref, rtol=0, atol=2e-5)
        # zeroing the conv changes the output, so the conv is really applied
        for blk in msg.blocks:
            blk.value_term.conv.weight.zero_()
        assert (msg.encode(h) - ref).abs().max() > 1e-2


def test_token_order_matters_like_upstream(tmp_path):
    """The conv makes BrainLM order-dependent; the adapter keeps that (no silent reordering)."""
    model = write_brainlm_dir(tmp_path)
    msg = brainlm_message(read_brainlm(tmp_path))
    h = torch.randn(1, 6, D)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        a = msg.encode(h)[:, perm]
        b = msg.encode(h[:, perm])
        torch.testing.assert_close(b, model.encode_tokens(h[:, perm]), rtol=0, atol=2e-5)
    assert (a - b).abs().max() > 1e-3


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_brainlm(tmp_path / "nope")
    write_brainlm_dir(tmp_path / "vitmae", model_type="vit_mae")
    with pytest.raises(ConfigError, match="ViT-MAE"):
        read_brainlm(tmp_path / "vitmae")
    write_brainlm_dir(tmp_path / "nys", num_landmarks=16)
    with pytest.raises(ConfigError, match="landmark"):
        read_brainlm(tmp_path / "nys")
    write_brainlm_dir(tmp_path / "short")
    state = torch.load(tmp_path / "short" / "pytorch_model.bin", weights_only=True)
    del state["vit.encoder.layer.1.attention.self.conv.weight"]
    torch.save(state, tmp_path / "short" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"vit\.encoder\.layer\.1\.attention\.self\.conv"):
        read_brainlm(tmp_path / "short")
    write_brainlm_dir(tmp_path / "k", conv_kernel_size=9)  # config and tensor disagree
    with pytest.raises(CheckpointError, match="expected"):
        read_brainlm(tmp_path / "k")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(CheckpointError, match=r"neither pytorch_model\.bin"):
        read_brainlm(tmp_path / "empty")


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_weights_file_is_refused(tmp_path):
    write_brainlm_dir(tmp_path)
    marker = tmp_path / "marker"
    torch.save({"vit.layernorm.weight": _Exploit(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_brainlm(tmp_path)
    assert not marker.exists()
