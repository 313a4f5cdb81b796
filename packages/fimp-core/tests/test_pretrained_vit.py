"""FIMP-ViT (load_timm_vit) on tiny random timm ViTs with qk_norm and layer scale.

Self-loop identity against timm's own ``forward_features``, the two streams against a slow
reference written from the timm block's raw tensors, loading from a name + checkpoint and from a
timm hub-layout directory, freezing, and bad input.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_pretrained_two_stream import ref_attention, ref_two_stream_message
from torch import Tensor, nn

timm = pytest.importorskip("timm")

from fimp.errors import CheckpointError, ConfigError  # noqa: E402
from fimp.pretrained import load_timm_vit  # noqa: E402


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial weights: norm scales and layer-scale gammas around 1, everything else ~N(0, .2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            scale_like = p.dim() == 1 and (name.endswith(".weight") or name.endswith("gamma"))
            p.copy_(1.0 + 0.2 * noise if scale_like else 0.2 * noise)
    return model.eval()


def tiny_vit(seed: int = 0, **kw) -> nn.Module:
    args = dict(
        img_size=28,
        patch_size=7,
        embed_dim=24,
        depth=2,
        num_heads=3,
        mlp_ratio=2.0,
        qkv_bias=True,
        qk_norm=True,
        init_values=0.5,
        num_classes=0,
    )
    args.update(kw)
    model = timm.models.vision_transformer.VisionTransformer(**args)
    return _randomise(model, seed)


def timm_tokens(model: nn.Module, imgs: Tensor) -> Tensor:
    """The sequence timm feeds its first block: [cls] + patches, position embedding added."""
    return model.norm_pre(model._pos_embed(model.patch_embed(imgs)))


def ref_timm_cross(blk: nn.Module):
    """CrossBlock from a timm Block's raw tensors, head by head."""

    def fn(z: Tensor, s: Tensor, smask: Tensor) -> Tensor:
        a = blk.attn
        d, h = a.qkv.in_features, a.num_heads
        dh = d // h
        w, b = a.qkv.weight, a.qkv.bias
        zq, sk = blk.norm1(z), blk.norm1(s)
        q = zq @ w[:d].T + b[:d]
        k = sk @ w[d : 2 * d].T + b[d : 2 * d]
        v = sk @ w[2 * d :].T + b[2 * d :]
        heads = []
        for i in range(h):
            sl = slice(i * dh, (i + 1) * dh)
            heads.append(
                ref_attention(
                    a.q_norm(q[:, sl]), a.k_norm(k[:, sl]), v[:, sl], smask, 1 / math.sqrt(dh)
                )
            )
        z = z + blk.ls1(a.proj(torch.cat(heads, -1)))
        return z + blk.ls2(blk.mlp(blk.norm2(z)))

    return fn


def _images(n: int = 3, size: int = 28, seed: int = 0) -> Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_tokenizer_matches_timm_embedding() -> None:
    model = tiny_vit(1)
    parts = load_timm_vit(model)
    imgs = _images()
    tokens, mask = parts.tokenizer(imgs)[:2]
    torch.testing.assert_close(tokens, timm_tokens(model, imgs), atol=1e-6, rtol=1e-6)
    assert mask.shape == tokens.shape[:2] and bool(mask.all())
    assert (
        parts.config["num_layers"] == 2 and parts.config["qk_norm"] and parts.config["layer_scale"]
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"qk_norm": True, "init_values": 0.5},
        {"qk_norm": False, "init_values": None},
        {"class_token": False, "global_pool": "avg", "fc_norm": False},
    ],
)
def test_self_loop_identity(kw: dict) -> None:
    from fimp.nn import FIMPConv

    model = tiny_vit(2, **kw)
    parts = load_timm_vit(model, source_stream="self")
    imgs = _images(seed=1)
    tokens, mask = parts.tokenizer(imgs)[:2]
    conv = FIMPConv(24, message=parts.message, combine=None, project=False, aggr="sum")
    loops = torch.arange(3).repeat(2, 1)
    with torch.no_grad():
        out = conv(tokens, loops, token_mask=mask)
        want = model.forward_features(imgs)
    assert out.shape == want.shape
    err = (out - want).abs().max().item()
    print(f"self-loop identity, tiny timm ViT {kw}: max abs error {err:.3e}")
    assert err < 1e-5, err
    # the check can fail: with a fixed source stream (keys from H_j at every layer) it must differ
    fixed = load_timm_vit(model, source_stream="fixed").message
    conv_fixed = FIMPConv(24, message=fixed, combine=None, project=False, aggr="sum")
    with torch.no_grad():
        assert (conv_fixed(tokens, loops, token_mask=mask) - want).abs().max() > 1e-3


@pytest.mark.parametrize("source_stream", ["self", "fixed"])
def test_two_streams_vs_reference(source_stream: str) -> None:
    model = tiny_vit(3)
    parts = load_timm_vit(model, source_stream=source_stream)
    imgs = _images(seed=2)
    with torch.no_grad():
        tokens = timm_tokens(model, imgs)
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    mask[1, 10:] = False  # padded patch tokens
    mask[2, 3:7] = False
    ei = torch.tensor([[0, 1, 2, 1, 0], [0, 0, 1, 2, 2]])
    msg = parts.message
    with torch.no_grad():
        t, s = msg.prepare(tokens, mask)
        got = msg.edge_messages(
            tuple(a[ei[1]] for a in t), tuple(a[ei[0]] for a in s), mask[ei[1]], mask[ei[0]]
        )
        layers = [ref_timm_cross(b) for b in model.blocks]
        for e in range(ei.size(1)):
            j, i = int(ei[0, e]), int(ei[1, e])
            want = ref_two_stream_message(
                layers, model.norm, tokens[i], tokens[j], mask[i], mask[j], source_stream
            )
            torch.testing.assert_close(got[e], want, atol=2e-5, rtol=2e-5)


def test_original_model_untouched_and_freeze() -> None:
    model = tiny_vit(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parts = load_timm_vit(model, freeze="attention")
    with torch.no_grad():
        for p in parts.message.parameters():
            p.add_(1.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.parameters())
    frozen = set(parts.message.frozen_parameter_names())
    assert {"blocks.0.q_proj.weight", "blocks.1.k_proj.bias", "blocks.0.q_norm.weight"} <= frozen
    assert "blocks.0.mlp.fc1.weight" not in frozen and "blocks.0.ls2.gamma" not in frozen
    assert all(p.requires_grad for p in parts.tokenizer.parameters())
    frozen_all = load_timm_vit(model, freeze="all")
    assert not any(p.requires_grad for p in frozen_all.message.parameters())
    assert not any(p.requires_grad for p in frozen_all.tokenizer.parameters())


def test_name_checkpoint_and_hub_directory(tmp_path) -> None:
    from safetensors.torch import save_file

    kw = dict(img_size=32, depth=2)
    model = _randomise(
        timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **kw), 5
    )
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save(sd, tmp_path / "w.pth")
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file(sd, str(hub / "model.safetensors"))
    (hub / "config.json").write_text(
        json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 0, "model_args": kw})
    )
    imgs = _images(2, 32, seed=3)
    with torch.no_grad():
        want = model.forward_features(imgs)
    for parts in (
        load_timm_vit("vit_tiny_patch16_224", checkpoint=tmp_path / "w.safetensors", **kw),
        load_timm_vit("vit_tiny_patch16_224", checkpoint=tmp_path / "w.pth", **kw),
        load_timm_vit(hub),
    ):
        tokens, mask = parts.tokenizer(imgs)[:2]
        with torch.no_grad():
            torch.testing.assert_close(
                parts.message.encode(tokens, mask), want, atol=1e-5, rtol=1e-5
            )
        assert parts.config["architecture"] == "vit_tiny_patch16_224"


def test_bad_input(tmp_path) -> None:
    with pytest.raises(ConfigError, match="checkpoint"):
        load_timm_vit("vit_tiny_patch16_224")
    with pytest.raises(ConfigError, match="VisionTransformer"):
        load_timm_vit(nn.Linear(3, 3))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_timm_vit("vit_tiny_patch16_224", checkpoint=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(CheckpointError, match="does not match"):
        load_timm_vit("vit_tiny_patch16_224", checkpoint=bad, img_size=32, depth=1)
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_timm_vit(tmp_path)
    with pytest.raises(ConfigError, match="register"):
        load_timm_vit(tiny_vit(6, reg_tokens=1))


def test_registered_fimp_vit() -> None:
    import fimp

    assert "fimp_vit" in fimp.list_models()
    vit = tiny_vit(7)
    model = fimp.create_model(
        "fimp_vit", vit=vit, num_layers=2, num_classes=4, source_cache="stream", node_chunk_size=3
    )
    imgs = _images(4, seed=4)
    ei = torch.tensor([[0, 1, 2, 3, 0], [1, 0, 3, 2, 0]])
    out = model(imgs, ei)
    assert out["logits"].shape == (4, 4) and out["tokens"].shape == (4, 17, 24)
    assert model.pretrained_config["num_fimp_layers"] == 2
    assert model.pretrained_config["source_cache"] == "stream"
    assert model.convs[0].message.node_chunk_size == 3
    # freeze="all": the pretrained creators and tokenizer do not train; the projections and head do
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("convs.1.message.blocks.0.q_proj") for n in frozen)
    assert any(n.startswith("tokenizer.patch_embed") for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("head."))
    a, b = model.convs[0].message, model.convs[1].message
    assert a is not b and torch.equal(a.blocks[0].q_proj.weight, b.blocks[0].q_proj.weight)
    emb = fimp.embed(model, imgs, ei)
    assert emb.shape == (4, 24) and torch.isfinite(emb).all()


def test_num_blocks_truncates() -> None:
    model = tiny_vit(8)
    parts = load_timm_vit(model, num_blocks=1)
    imgs = _images(2, seed=5)
    with torch.no_grad():
        want = model.norm(model.blocks[0](timm_tokens(model, imgs)))
        got = parts.message.encode(*parts.tokenizer(imgs))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert parts.config["num_layers"] == 1 and parts.config["num_layers_pretrained"] == 2
    with pytest.raises(ConfigError, match="num_blocks"):
        load_timm_vit(model, num_blocks=3)


def test_attention_weights_through_fimp_conv() -> None:
    from fimp.nn import FIMPConv

    parts = load_timm_vit(tiny_vit(9), attention_layer=0)
    tokens, mask = parts.tokenizer(_images(3, seed=6))
    ei = torch.tensor([[0, 1, 2, 2], [1, 2, 0, 2]])
    conv = FIMPConv(24, message=parts.message, combine=None, project=False)
    with torch.no_grad():
        out, (ei_out, att) = conv(tokens, ei, token_mask=mask, return_attention_weights=True)
        plain = conv(tokens, ei, token_mask=mask)
    assert torch.equal(ei_out, ei) and att.shape == (4, 3, 17, 17)
    torch.testing.assert_close(att.sum(-1), torch.ones(4, 3, 17))
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
