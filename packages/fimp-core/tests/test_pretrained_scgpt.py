"""scGPT loader: tiny checkpoints written in upstream's exact directory/key layouts.

``UpstreamScGPT`` below re-creates the modules of ``scgpt.model.TransformerModel`` that the
checkpoint holds (same attribute names, so ``state_dict()`` has upstream's keys) and its
``_encode`` is upstream's forward for embeddings: ``enc_norm(embedding(gene)) +
value_encoder(value)`` through PyTorch's own post-LN ``nn.TransformerEncoder`` (``batch_first``,
ReLU, ``norm_first=False``) - the slow, independent reference for the loader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from fimp.errors import CheckpointError, ConfigError, UnknownGeneError
from fimp.pretrained.scgpt import map_genes, read_scgpt, scgpt_blocks
from fimp.pretrained.two_stream import TwoStreamMessage

D, HEADS, HID, LAYERS = 16, 4, 24, 2
GENES = [f"GENE{i}" for i in range(10)]


class _GeneEncoder(nn.Module):
    def __init__(self, ntoken: int, d: int, padding_idx: int):
        super().__init__()
        self.embedding = nn.Embedding(ntoken, d, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.enc_norm(self.embedding(x))


class _ContinuousValueEncoder(nn.Module):
    def __init__(self, d: int, max_value: int = 512):
        super().__init__()
        self.linear1 = nn.Linear(1, d)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.max_value = max_value

    def forward(self, x):
        x = torch.clamp(x.unsqueeze(-1), max=self.max_value)
        return self.norm(self.linear2(self.activation(self.linear1(x))))


class UpstreamScGPT(nn.Module):
    """Mirror of upstream TransformerModel(do_mvc=True, use_fast_transformer=False)."""

    def __init__(self, ntoken: int, pad_id: int, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = _GeneEncoder(ntoken, D, pad_id)
        self.value_encoder = _ContinuousValueEncoder(D)
        layer = nn.TransformerEncoderLayer(D, HEADS, HID, 0.2, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.decoder = nn.Module()
        self.decoder.fc = nn.Sequential(
            nn.Linear(D, D), nn.LeakyReLU(), nn.Linear(D, D), nn.LeakyReLU(), nn.Linear(D, 1)
        )
        self.cls_decoder = nn.Module()
        self.cls_decoder._decoder = nn.ModuleList(
            [
                nn.Linear(D, D),
                nn.ReLU(),
                nn.LayerNorm(D),
                nn.Linear(D, D),
                nn.ReLU(),
                nn.LayerNorm(D),
            ]
        )
        self.cls_decoder.out_layer = nn.Linear(D, 1)
        self.mvc_decoder = nn.Module()
        self.mvc_decoder.gene2query = nn.Linear(D, D)
        self.mvc_decoder.W = nn.Linear(D, D, bias=False)
        self.encoder.embedding.weight.data.uniform_(
            -0.1, 0.1
        )  # upstream init_weights (pad row too)
        # non-trivial norms so a mis-wired LayerNorm shows
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
        self.eval()

    @torch.no_grad()
    def _encode(self, src, values, src_key_padding_mask):
        total = self.encoder(src) + self.value_encoder(values)
        return self.transformer_encoder(total, src_key_padding_mask=src_key_padding_mask)


def upstream_state(model: UpstreamScGPT, layout: str) -> dict[str, torch.Tensor]:
    """The model's state dict in one of scGPT's three attention key layouts."""
    state = dict(model.state_dict())
    if layout == "pytorch":
        return state
    out = {}
    for k, v in state.items():
        if layout == "flash":
            k = k.replace("self_attn.in_proj_", "self_attn.Wqkv.")
        elif layout == "flash_compat":
            k = k.replace("self_attn.in_proj_", "self_attn._impl.Wqkv.")
            k = k.replace("self_attn.out_proj.", "self_attn._impl.out_proj.")
        out[k] = v
    out["flag_encoder.weight"] = torch.randn(2, D)  # present in released checkpoints, unused
    return out


def write_scgpt_dir(root: Path, *, layout: str = "flash", seed: int = 0, specials_in_vocab=False):
    """Write args.json, vocab.json, best_model.pt exactly as upstream's model directories are."""
    root.mkdir(parents=True, exist_ok=True)
    tokens = list(GENES)
    if specials_in_vocab:
        tokens = ["<pad>", "<cls>", "<eoc>", *tokens]
    vocab = {t: i for i, t in enumerate(tokens)}
    full = dict(vocab)
    for s in ("<pad>", "<cls>", "<eoc>"):
        full.setdefault(s, len(full))
    model = UpstreamScGPT(len(full), full["<pad>"], seed=seed)
    args = {
        "data_source": "/scratch/ssd004/datasets/cellxgene/scb_strict/human",
        "embsize": D,
        "nheads": HEADS,
        "d_hid": HID,
        "nlayers": LAYERS,
        "n_layers_cls": 3,
        "dropout": 0.2,
        "pad_token": "<pad>",
        "pad_value": -2,
        "mask_value": -1,
        "n_bins": 51,
        "input_emb_style": "continuous",
        "input_style": "binned",
        "max_seq_len": 1200,
        "fast_transformer": True,
    }
    (root / "args.json").write_text(json.dumps(args, indent=2))
    # reversed key order: GeneVocab.from_file sorts by index
    (root / "vocab.json").write_text(json.dumps(dict(reversed(list(vocab.items())))))
    torch.save(upstream_state(model, layout), root / "best_model.pt")
    return model, full


def cell_tokens(vocab, genes, values, pad_value=-2.0):
    """Upstream embed_data: <cls> (value pad_value) + the cell's non-zero genes."""
    src = torch.tensor([vocab["<cls>"]] + [vocab[g] for g in genes])
    vals = torch.tensor([pad_value, *values], dtype=torch.float32)
    return src, vals


@pytest.mark.parametrize("layout", ["pytorch", "flash", "flash_compat"])
def test_all_three_layouts_read_to_the_same_tensors(tmp_path, layout):
    write_scgpt_dir(tmp_path / "ref", layout="pytorch")
    write_scgpt_dir(tmp_path / layout, layout=layout)
    ref, ck = read_scgpt(tmp_path / "ref"), read_scgpt(tmp_path / layout)
    assert ck.layout == layout and ref.layout == "pytorch"
    assert ck.vocab == ref.vocab
    assert ck.vocab["<pad>"] == 10 and ck.vocab["<cls>"] == 11 and ck.vocab["<eoc>"] == 12
    for k, v in ref.state.items():
        torch.testing.assert_close(ck.state[k], v, rtol=0, atol=0)
    assert (ck.dim, ck.heads, ck.num_layers, ck.pad_value) == (D, HEADS, LAYERS, -2.0)


@pytest.mark.parametrize("layout", ["pytorch", "flash", "flash_compat"])
def test_blocks_match_upstream_encoder(tmp_path, layout):
    model, vocab = write_scgpt_dir(tmp_path, layout=layout)
    ck = read_scgpt(tmp_path)
    creator = TwoStreamMessage(scgpt_blocks(ck), final_norm=None).eval()
    # two cells of different lengths, padded like upstream's collator (id <pad>, value -2)
    cells = [(["GENE3", "GENE0", "GENE7"], [3.0, 1.0, 50.0]), (["GENE9", "GENE1"], [2.0, 7.0])]
    length = 4
    src = torch.full((2, length), vocab["<pad>"])
    vals = torch.full((2, length), -2.0)
    for b, (g, v) in enumerate(cells):
        s, x = cell_tokens(vocab, g, v)
        src[b, : len(s)], vals[b, : len(x)] = s, x
    pad = src.eq(vocab["<pad>"])
    expected = model._encode(src, vals, pad)
    emb = model.encoder(src) + model.value_encoder(vals)
    with torch.no_grad():
        got = creator.encode(emb, ~pad)
    valid = ~pad
    err = (got - expected)[valid].abs().max().item()
    assert err < 1e-5, err
    assert torch.all(got[pad] == 0)


def test_missing_files_and_bad_content(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_scgpt(tmp_path / "nope")
    write_scgpt_dir(tmp_path / "m")
    (tmp_path / "m" / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match=r"vocab\.json is missing"):
        read_scgpt(tmp_path / "m")
    write_scgpt_dir(tmp_path / "v")
    (tmp_path / "v" / "vocab.json").write_text(json.dumps({"A": 0, "B": 2}))
    with pytest.raises(CheckpointError, match="consecutive"):
        read_scgpt(tmp_path / "v")
    write_scgpt_dir(tmp_path / "extra")  # vocab with one gene more than the embedding has rows
    vocab = {g: i for i, g in enumerate([*GENES, "NEWGENE"])}
    (tmp_path / "extra" / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(CheckpointError, match=r"vocab\.json and the embedding disagree"):
        read_scgpt(tmp_path / "extra")
    write_scgpt_dir(tmp_path / "a")
    args = json.loads((tmp_path / "a" / "args.json").read_text())
    args["input_emb_style"] = "category"
    (tmp_path / "a" / "args.json").write_text(json.dumps(args))
    with pytest.raises(ConfigError, match="continuous"):
        read_scgpt(tmp_path / "a")
    write_scgpt_dir(tmp_path / "lin")
    state = torch.load(tmp_path / "lin" / "best_model.pt", weights_only=True)
    state["transformer_encoder.fast_transformer_encoder.layers.0.x"] = torch.zeros(1)
    torch.save(state, tmp_path / "lin" / "best_model.pt")
    with pytest.raises(CheckpointError, match="linear-attention"):
        read_scgpt(tmp_path / "lin")
    write_scgpt_dir(tmp_path / "short")
    state = torch.load(tmp_path / "short" / "best_model.pt", weights_only=True)
    del state["transformer_encoder.layers.1.linear2.weight"]
    torch.save(state, tmp_path / "short" / "best_model.pt")
    with pytest.raises(CheckpointError, match="lacks 1 scGPT tensors"):
        read_scgpt(tmp_path / "short")


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_are_loaded_with_weights_only(tmp_path):
    write_scgpt_dir(tmp_path)
    marker = tmp_path / "marker"
    torch.save({"encoder.embedding.weight": _Exploit(marker)}, tmp_path / "best_model.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_scgpt(tmp_path)
    assert not marker.exists()


def test_specials_already_in_vocab(tmp_path):
    write_scgpt_dir(tmp_path, specials_in_vocab=True)
    ck = read_scgpt(tmp_path)
    assert ck.vocab["<pad>"] == 0 and ck.vocab["GENE0"] == 3 and len(ck.vocab) == 13


def test_map_genes(tmp_path):
    write_scgpt_dir(tmp_path)
    vocab = read_scgpt(tmp_path).vocab
    ids, kept = map_genes(["GENE2", "GENE0"], vocab)
    assert ids.tolist() == [2, 0] and kept == [0, 1]
    with pytest.raises(UnknownGeneError) as info:
        map_genes(["GENE2", "Xist", "Malat1"], vocab, vocab_name="scGPT's vocabulary")
    msg = str(info.value)
    assert "'Xist'" in msg and "'Malat1'" in msg and "2 of 3" in msg and "missing='drop'" in msg
    assert isinstance(info.value, KeyError)
    ids, kept = map_genes(["GENE2", "Xist", "GENE5"], vocab, missing="drop")
    assert ids.tolist() == [2, 5] and kept == [0, 2]
    with pytest.raises(UnknownGeneError, match="none of"):
        map_genes(["Xist"], vocab, missing="drop")
