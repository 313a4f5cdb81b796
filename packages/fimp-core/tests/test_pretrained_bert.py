"""load_bert on a tiny BERT written by the test in the exact Hugging Face layout.

A slow reference BERT encoder (written from the raw state-dict tensors, head by head, explicit
softmax, post-LN, exact-erf GELU) gives ``last_hidden_state``; the self-loop message must equal it.
``transformers.BertModel`` is used as a second reference only when it is installed.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_pretrained_two_stream import ref_attention, ref_two_stream_message
from torch import Tensor

from fimp.errors import CheckpointError, ConfigError, ShapeError
from fimp.pretrained import load_bert
from fimp.pretrained.bert import WordPiece

CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_size": 16,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "intermediate_size": 24,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 12,
    "type_vocab_size": 2,
    "vocab_size": 30,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
}


def tiny_bert_state_dict(cfg: dict, seed: int = 0, prefix: str = "") -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    d, f = cfg["hidden_size"], cfg["intermediate_size"]

    def r(*shape, mean=0.0, std=0.3):
        return (mean + std * torch.randn(*shape, generator=g)).contiguous()

    sd = {
        "embeddings.word_embeddings.weight": r(cfg["vocab_size"], d),
        "embeddings.position_embeddings.weight": r(cfg["max_position_embeddings"], d),
        "embeddings.token_type_embeddings.weight": r(cfg["type_vocab_size"], d),
        "embeddings.LayerNorm.weight": r(d, mean=1.0, std=0.1),
        "embeddings.LayerNorm.bias": r(d, std=0.1),
        "embeddings.position_ids": torch.arange(cfg["max_position_embeddings"])[None],
        "pooler.dense.weight": r(d, d),
        "pooler.dense.bias": r(d),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            sd[p + name + ".weight"] = r(d, d)
            sd[p + name + ".bias"] = r(d, std=0.1)
        sd[p + "intermediate.dense.weight"] = r(f, d)
        sd[p + "intermediate.dense.bias"] = r(f, std=0.1)
        sd[p + "output.dense.weight"] = r(d, f)
        sd[p + "output.dense.bias"] = r(d, std=0.1)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[p + ln + ".weight"] = r(d, mean=1.0, std=0.1)
            sd[p + ln + ".bias"] = r(d, std=0.1)
    return {prefix + k: v for k, v in sd.items()}


def write_bert(tmp_path, cfg=CONFIG, seed=0, prefix="", fmt="safetensors"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    sd = tiny_bert_state_dict(cfg, seed, prefix)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    if fmt == "safetensors":
        save_file(sd, tmp_path / "model.safetensors")
    else:
        torch.save(sd, tmp_path / "pytorch_model.bin")
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def save_file(sd: dict[str, Tensor], path) -> None:
    """safetensors' writer; tests that need it are skipped where safetensors is absent."""
    st = pytest.importorskip("safetensors.torch")
    st.save_file(sd, str(path))


def _ln(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def ref_embeddings(sd, cfg, ids: Tensor) -> Tensor:
    """One sequence of ids [L] -> [L, d]."""
    length = ids.numel()
    x = sd["embeddings.word_embeddings.weight"][ids]
    x = x + sd["embeddings.position_embeddings.weight"][:length]
    x = x + sd["embeddings.token_type_embeddings.weight"][0]
    return _ln(
        x, sd["embeddings.LayerNorm.weight"], sd["embeddings.LayerNorm.bias"], cfg["layer_norm_eps"]
    )


def ref_bert_cross(sd, cfg, i: int):
    """BERT layer i with queries from z and keys/values from s (s = z: the model's own layer)."""
    d, h, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    dh = d // h
    p = f"encoder.layer.{i}."

    def lin(x, name):
        return x @ sd[p + name + ".weight"].T + sd[p + name + ".bias"]

    def fn(z: Tensor, s: Tensor, smask: Tensor) -> Tensor:
        q, k, v = (
            lin(z, "attention.self.query"),
            lin(s, "attention.self.key"),
            lin(s, "attention.self.value"),
        )
        ctx = torch.cat(
            [
                ref_attention(q[:, sl], k[:, sl], v[:, sl], smask, 1 / math.sqrt(dh))
                for sl in (slice(j * dh, (j + 1) * dh) for j in range(h))
            ],
            -1,
        )
        a = _ln(
            z + lin(ctx, "attention.output.dense"),
            sd[p + "attention.output.LayerNorm.weight"],
            sd[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        y = lin(_gelu(lin(a, "intermediate.dense")), "output.dense")
        return _ln(a + y, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps)

    return fn


def ref_last_hidden_state(sd, cfg, ids: Tensor, mask: Tensor) -> Tensor:
    """BERT's last_hidden_state for one sequence (padded rows zeroed for comparison)."""
    x = ref_embeddings(sd, cfg, ids)
    for i in range(cfg["num_hidden_layers"]):
        x = ref_bert_cross(sd, cfg, i)(x, x, mask)
    return x * mask[:, None].to(x.dtype)


def _ids(n=3, length=7, seed=0, vocab=30):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 6:] = False
    ids[~mask] = 0
    return ids, mask


@pytest.mark.parametrize("prefix,fmt", [("", "safetensors"), ("bert.", "safetensors"), ("", "bin")])
def test_self_loop_identity_tiny(tmp_path, prefix: str, fmt: str) -> None:
    from fimp.nn import FIMPConv

    sd = write_bert(tmp_path / "m", prefix=prefix, fmt=fmt)
    parts = load_bert(tmp_path / "m")
    ids, mask = _ids()
    tokens, tmask = parts.tokenizer(ids, attention_mask=mask)
    assert torch.equal(tmask, mask)
    conv = FIMPConv(16, message=parts.message, combine=None, project=False, aggr="sum")
    with torch.no_grad():
        out = conv(tokens, torch.arange(3).repeat(2, 1), token_mask=tmask)
    want = torch.stack([ref_last_hidden_state(sd, CONFIG, ids[i], mask[i]) for i in range(3)])
    err = (out - want).abs().max().item()
    print(
        f"self-loop identity, tiny BERT ({prefix or 'no'} prefix, {fmt}): max abs error {err:.3e}"
    )
    assert err < 1e-5, err
    assert parts.config["num_layers"] == 2 and parts.config["dim"] == 16


@pytest.mark.parametrize("source_stream", ["self", "fixed"])
def test_cross_edges_vs_reference(tmp_path, source_stream: str) -> None:
    sd = write_bert(tmp_path, seed=1, fmt="bin")
    parts = load_bert(tmp_path, source_stream=source_stream)
    ids, mask = _ids(seed=1)
    ei = torch.tensor([[1, 2, 0, 2], [0, 0, 1, 2]])
    with torch.no_grad():
        tokens, _ = parts.tokenizer(ids, attention_mask=mask)
        t, s = parts.message.prepare(tokens, mask)
        got = parts.message.edge_messages(
            tuple(a[ei[1]] for a in t), tuple(a[ei[0]] for a in s), mask[ei[1]], mask[ei[0]]
        )
        layers = [ref_bert_cross(sd, CONFIG, i) for i in range(2)]
        for e in range(ei.size(1)):
            j, i = int(ei[0, e]), int(ei[1, e])
            want = ref_two_stream_message(
                layers, None, tokens[i], tokens[j], mask[i], mask[j], source_stream
            )
            torch.testing.assert_close(got[e], want, atol=2e-5, rtol=2e-5)


def test_against_transformers_if_installed(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    write_bert(tmp_path, seed=2)
    hf = transformers.BertModel.from_pretrained(str(tmp_path)).eval()
    parts = load_bert(tmp_path)
    ids, mask = _ids(seed=2)
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = parts.message.encode(*parts.tokenizer(ids, attention_mask=mask))
    torch.testing.assert_close(got[mask], want[mask], atol=1e-5, rtol=1e-5)


def test_freeze_and_inputs_embeds(tmp_path) -> None:
    write_bert(tmp_path, seed=3, fmt="bin")
    parts = load_bert(tmp_path, freeze="attention")
    frozen = set(parts.message.frozen_parameter_names())
    assert "blocks.1.q_proj.weight" in frozen and "blocks.0.mlp.fc1.weight" not in frozen
    assert all(p.requires_grad for p in parts.tokenizer.parameters())
    all_frozen = load_bert(tmp_path)
    assert not any(p.requires_grad for p in all_frozen.tokenizer.parameters())
    assert not any(p.requires_grad for p in all_frozen.message.parameters())
    ids, _ = _ids(seed=3)
    emb = parts.tokenizer.word_embeddings(ids)
    a, _ = parts.tokenizer(ids)
    b, _ = parts.tokenizer(inputs_embeds=emb)
    torch.testing.assert_close(a, b)


def test_bad_checkpoints(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_bert(tmp_path)
    write_bert(tmp_path / "a", fmt="bin")
    cfg = dict(CONFIG, hidden_size=32)
    (tmp_path / "a" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        load_bert(tmp_path / "a")
    write_bert(tmp_path / "b", cfg=dict(CONFIG, hidden_act="swish"), fmt="bin")
    with pytest.raises(ConfigError, match="hidden_act"):
        load_bert(tmp_path / "b")
    write_bert(tmp_path / "c", cfg=dict(CONFIG, num_hidden_layers=1), fmt="bin")
    sd_dir = tmp_path / "c"
    full = tiny_bert_state_dict(dict(CONFIG, num_hidden_layers=1))
    del full["encoder.layer.0.output.dense.bias"]
    torch.save(full, sd_dir / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"output\.dense\.bias"):
        load_bert(sd_dir)
    write_bert(tmp_path / "d", fmt="bin")
    tok = load_bert(tmp_path / "d").tokenizer
    with pytest.raises(ShapeError, match="input_ids"):
        tok(torch.full((1, 3), 99))
    with pytest.raises(ShapeError, match="max_position_embeddings"):
        tok(torch.ones(1, 13, dtype=torch.long))


def test_wordpiece(tmp_path) -> None:
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "the",
        "cat",
        "##s",
        "sat",
        ".",
        "un",
        "##aff",
        "##able",
    ]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    wp = WordPiece(tmp_path / "vocab.txt")
    assert wp.encode("The cats sat.") == [2, 4, 5, 6, 7, 8, 3]
    assert wp.encode("unaffable", add_special_tokens=False) == [9, 10, 11]
    assert wp.encode("dog", add_special_tokens=False) == [1]
    ids, mask = wp.batch(["the cat", "the cats sat ."])
    assert ids.shape == (2, 7) and mask.sum().item() == 4 + 7
    assert ids[0, 4:].tolist() == [0, 0, 0]


def test_num_blocks_truncates(tmp_path) -> None:
    sd = write_bert(tmp_path, seed=4, fmt="bin")
    parts = load_bert(tmp_path, num_blocks=1)
    ids, mask = _ids(seed=4)
    with torch.no_grad():
        got = parts.message.encode(*parts.tokenizer(ids, attention_mask=mask))
    one = dict(CONFIG, num_hidden_layers=1)
    want = torch.stack([ref_last_hidden_state(sd, one, ids[i], mask[i]) for i in range(3)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert parts.config["num_layers"] == 1 and parts.config["num_layers_pretrained"] == 2
    with pytest.raises(ConfigError, match="num_blocks"):
        load_bert(tmp_path, num_blocks=0)


def test_gene_symbols_through_word_pieces(tmp_path) -> None:
    import fimp
    from fimp.pretrained.bert import bert_gene_tokenizer

    sd = write_bert(tmp_path, seed=5, fmt="bin")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "cd", "##3", "##e", "alb", "##8", "##a"]
    vocab += [f"[unused{i}]" for i in range(CONFIG["vocab_size"] - len(vocab))]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    wp = WordPiece(tmp_path / "vocab.txt")
    parts = load_bert(tmp_path)
    genes = ["CD3E", "ALB", "CD8A"]
    tok = bert_gene_tokenizer(parts.tokenizer, wp, genes)
    word = sd["embeddings.word_embeddings.weight"]
    want = torch.stack([word[[4, 5, 6]].mean(0), word[7], word[[4, 8, 9]].mean(0)])
    torch.testing.assert_close(tok.gene_embedding.weight, want)
    assert not tok.gene_embedding.weight.requires_grad
    x = torch.rand(5, 3)
    tokens, mask = tok(x, genes)
    assert tokens.shape == (5, 3, 16) and bool(mask.all())
    model = fimp.create_model("fimp_bert", checkpoint=tmp_path, genes=genes, recon_out=1)
    ei = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
    out = model(x, ei, genes=genes)
    assert out["recon"].shape == (5, 3, 1)
    with pytest.raises(ConfigError, match="genes"):
        fimp.create_model("fimp_bert", checkpoint=tmp_path, gene_tokenizer_kwargs={"k": 2})
