"""load_brainlm end to end: tokenizer alignment with upstream's embeddings, self-loop identity.

Change of context (documented in fimp.pretrained.brainlm): upstream runs all regions' patches as
one sequence; a FIMP node is one region, so the self-loop message is compared with BrainLM run on
that region's own patch sequence (upstream's embedding for that region, without the CLS token).
"""

from __future__ import annotations

import json

import torch
from test_pretrained_brainlm import P, T, brain_data, write_brainlm_dir

import fimp
from fimp.nn import FIMPConv
from fimp.pretrained.brainlm import load_brainlm
from fimp.pretrained.two_stream import TwoStreamMessage
from fimp.tokenizers import TimeSeriesPatchTokenizer

J = T // P


def upstream_region_sequence(model, signal, xyz, region: int) -> torch.Tensor:
    """Upstream BrainLMEmbeddings for one region (identity order), CLS dropped: [1, J, d]."""
    with torch.no_grad():
        emb = model.vit.embeddings(
            signal[:, [region]], xyz[:, [region]], torch.arange(float(J))[None]
        )
    return emb[:, 1:]


def test_tokens_equal_upstream_embeddings(tmp_path):
    model = write_brainlm_dir(tmp_path)
    tok, _, config = load_brainlm(tmp_path)
    assert isinstance(tok, TimeSeriesPatchTokenizer) and config["patch_size"] == P
    signal, xyz = brain_data(n_regions=3)
    tokens, mask = tok(signal[0], xyz[0])
    assert tokens.shape == (3, J, tok.dim) and bool(mask.all())
    with torch.no_grad():  # whole-brain upstream embedding, voxel-major after the CLS token
        whole = model.vit.embeddings(signal, xyz, torch.arange(3.0 * J)[None])
    torch.testing.assert_close(tokens.reshape(1, 3 * J, -1), whole[:, 1:], rtol=0, atol=1e-6)


def test_self_loop_message_equals_upstream_on_region_sequence(tmp_path):
    model = write_brainlm_dir(tmp_path)
    tok, message, config = load_brainlm(tmp_path)
    assert isinstance(message, TwoStreamMessage) and config["freeze"] == "all"
    assert len(config["weights"]["sha256"]) == 64
    assert json.loads(json.dumps(config)) == config  # JSON-serialisable, for records
    signal, xyz = brain_data(n_regions=4, seed=3)
    conv = FIMPConv(message.dim, message=message, combine=None, project=False).eval()
    worst = 0.0
    with torch.no_grad():
        tokens, mask = tok(signal[0], xyz[0])
        for region in range(4):
            out = conv(tokens, torch.tensor([[region], [region]]), token_mask=mask)
            expected = model.encode_tokens(upstream_region_sequence(model, signal, xyz, region))[0]
            worst = max(worst, (out[region] - expected).abs().max().item())
            assert torch.all(out[[i for i in range(4) if i != region]] == 0)
    print(f"BrainLM self-loop identity max abs error: {worst:.3g}")
    assert worst < 2e-5


def test_cross_edge_uses_source_conv_and_pretrained_projections(tmp_path):
    """Edge j -> i: target patches query region j; the conv term comes from j's value stream."""
    model = write_brainlm_dir(tmp_path)
    tok, message, _ = load_brainlm(tmp_path)
    signal, xyz = brain_data(n_regions=2, seed=5)
    with torch.no_grad():
        tokens, mask = tok(signal[0], xyz[0])
        conv = FIMPConv(message.dim, message=message, combine=None, project=False)
        out = conv(tokens, torch.tensor([[1], [0]]), token_mask=mask)[0]
        # slow reference straight from the upstream modules: layer by layer, queries from the
        # target stream z, keys/values (and the conv) from the source stream s
        z, s = tokens[:1], tokens[1:]
        for layer in model.vit.encoder.layer:
            sa = layer.attention.self
            heads = sa.conv.in_channels
            dh = z.shape[-1] // heads

            def split(x, heads=heads, dh=dh):
                return x.view(1, J, heads, dh).permute(0, 2, 1, 3)

            q = split(sa.query(z)) / dh**0.25
            k = split(sa.key(s)) / dh**0.25
            v = split(sa.value(s))
            ctx = torch.softmax(q @ k.transpose(-1, -2), -1) @ v + sa.conv(v)
            ctx = ctx.permute(0, 2, 1, 3).reshape(1, J, -1)
            a = layer.attention.output(ctx, z)
            z = layer.output(layer.intermediate(a), a)
            s = layer(s)  # source stream: BrainLM on the source region's own sequence
        expected = model.vit.layernorm(z)[0]
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5)


def test_registered_model_builds_and_embeds(tmp_path):
    write_brainlm_dir(tmp_path)
    assert "fimp_brainlm" in fimp.list_models()
    model = fimp.create_model("fimp_brainlm", checkpoint=tmp_path, num_classes=2)
    assert model.pretrained_config["family"] == "brainlm"
    signal, xyz = brain_data(n_regions=3)
    edge_index = torch.tensor([[0, 1, 2, 1], [1, 0, 1, 2]])
    out = model(signal[0], edge_index, coords=xyz[0])
    assert out["logits"].shape == (3, 2) and out["tokens"].shape == (3, J, model.dim)
    emb = fimp.embed(model, signal[0], edge_index, coords=xyz[0])
    assert emb.shape == (3, model.dim) and torch.isfinite(emb).all()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("tokenizer.") for n in frozen)
    assert any(".message." in n for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("head."))
