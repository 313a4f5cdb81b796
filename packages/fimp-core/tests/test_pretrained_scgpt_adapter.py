"""load_scgpt end to end: tokenizer + two-stream message creator vs upstream scGPT (self-loop identity)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_pretrained_scgpt import GENES, write_scgpt_dir

from fimp.errors import UnknownGeneError
from fimp.nn import FIMPConv
from fimp.pretrained.scgpt import load_scgpt
from fimp.pretrained.two_stream import TwoStreamMessage
from fimp.tokenizers import GeneTokenizer


def upstream_binning(row: np.ndarray, n_bins: int = 51) -> np.ndarray:
    """scgpt.preprocess.binning + _digitize(side="both"), as written upstream."""
    non_zero_ids = row.nonzero()
    non_zero_row = row[non_zero_ids]
    bins = np.quantile(non_zero_row, np.linspace(0, 1, n_bins - 1))
    left = np.digitize(non_zero_row, bins)
    right = np.digitize(non_zero_row, bins, right=True)
    rands = np.random.default_rng(0).random(len(non_zero_row))
    digits = np.ceil(rands * (left - right) + right).astype(np.int64)
    out = np.zeros_like(row, dtype=np.int64)
    out[non_zero_ids] = digits
    return out


def upstream_cell_embedding(model, vocab, x_row: np.ndarray, genes: list[str]) -> torch.Tensor:
    """upstream embed_data for one cell: <cls> + non-zero genes in column order, binned values."""
    nz = np.nonzero(x_row)[0]
    ids = [vocab["<cls>"]] + [vocab[genes[j]] for j in nz]
    vals = np.concatenate([[-2.0], upstream_binning(x_row[nz]).astype(np.float64)])
    src = torch.tensor([ids])
    values = torch.tensor(vals, dtype=torch.float32)[None]
    return model._encode(src, values, torch.zeros_like(src, dtype=torch.bool))[0]


def _data(genes):
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, 2.0, size=(4, len(genes)))
    x[rng.random(x.shape) < 0.35] = 0.0  # sparse, distinct non-zero values
    x[:, 0] = np.maximum(x[:, 0], 0.5)  # every cell expresses something
    return x


@pytest.mark.parametrize("layout", ["pytorch", "flash", "flash_compat"])
def test_self_loop_message_equals_upstream_hidden_states(tmp_path, layout):
    model, vocab = write_scgpt_dir(tmp_path, layout=layout)
    panel = ["GENE4", "GENE1", "GENE8", "GENE0", "GENE6", "GENE2", "GENE9"]
    x = _data(panel)
    tok, message, config = load_scgpt(tmp_path, genes=panel, k=len(panel))
    assert isinstance(tok, GeneTokenizer) and isinstance(message, TwoStreamMessage)
    assert config["weights"]["layout"] == layout and len(config["weights"]["sha256"]) == 64
    assert json.loads(json.dumps(config)) == config  # JSON-serialisable, for records
    tok.eval()
    conv = FIMPConv(message.dim, message=message, combine=None, project=False).eval()
    with torch.no_grad():
        tokens, mask = tok(torch.tensor(x, dtype=torch.float32), panel)
        worst = 0.0
        for node in range(x.shape[0]):
            edge_index = torch.tensor([[node], [node]])  # the graph's only edge: a self-loop
            out = conv(tokens, edge_index, token_mask=mask)
            expected = upstream_cell_embedding(model, vocab, x[node], panel)
            got = out[node][mask[node]]
            assert got.shape == expected.shape  # <cls> + the cell's non-zero genes
            worst = max(worst, (got - expected).abs().max().item())
            others = [i for i in range(x.shape[0]) if i != node]
            assert torch.all(out[others] == 0)  # nodes without in-edges get M = 0
            assert torch.all(out[node][~mask[node]] == 0)
    print(f"scGPT ({layout}) self-loop identity max abs error: {worst:.3g}")
    assert worst < 1e-5


def test_all_self_loops_and_cls_embedding(tmp_path):
    model, vocab = write_scgpt_dir(tmp_path)
    panel = list(GENES)
    x = _data(panel)
    tok, message, _ = load_scgpt(tmp_path, k=len(panel))
    tok.eval()
    n = x.shape[0]
    conv = FIMPConv(message.dim, message=message, combine=None, project=False, edge_chunk_size=2)
    with torch.no_grad():
        tokens, mask = tok(torch.tensor(x, dtype=torch.float32), panel)
        out = conv(tokens, torch.arange(n).repeat(2, 1), token_mask=mask)
        enc = message.encode(tokens, mask)
    torch.testing.assert_close(out, enc, rtol=0, atol=1e-5)
    for i in range(n):  # upstream's cell embedding: output at <cls>, L2-normalised
        ref = upstream_cell_embedding(model, vocab, x[i], panel)[0]
        got = out[i, 0]
        torch.testing.assert_close(got / got.norm(), ref / ref.norm(), rtol=0, atol=1e-5)


def test_missing_genes_error_or_drop(tmp_path):
    write_scgpt_dir(tmp_path)
    panel = ["GENE1", "Xist", "GENE2", "mt-Co1"]
    with pytest.raises(UnknownGeneError) as info:
        load_scgpt(tmp_path, genes=panel)
    assert "'Xist'" in str(info.value) and "'mt-Co1'" in str(info.value)
    tok, _, _ = load_scgpt(tmp_path, k=4)
    with pytest.raises(UnknownGeneError, match="Xist"):  # also caught at tokenization time
        tok(torch.ones(2, 4), panel)
    tok, _, _ = load_scgpt(tmp_path, genes=panel, missing="drop", k=4)
    _tokens, mask, index = tok(torch.ones(2, 4), panel, return_index=True)
    assert mask.sum(1).tolist() == [3, 3]  # <cls> + GENE1 + GENE2
    assert index[0, :3].tolist() == [-1, 0, 2]


def test_freeze_modes_and_fixed_source(tmp_path):
    write_scgpt_dir(tmp_path)
    tok, msg, cfg = load_scgpt(tmp_path)
    assert not any(p.requires_grad for p in tok.parameters())
    assert not any(p.requires_grad for p in msg.parameters()) and cfg["freeze"] == "all"
    tok, msg, cfg = load_scgpt(tmp_path, freeze="attention", source_stream="fixed")
    assert msg.source_stream == "fixed"
    names = msg.trainable_parameter_names()
    assert names and all(".q_proj." not in n and ".k_proj." not in n for n in names)
    assert any(".mlp." in n for n in names)
    assert all(p.requires_grad for p in tok.parameters())


def test_masked_values_look_like_upstream_mask_value(tmp_path):
    model, _vocab = write_scgpt_dir(tmp_path)
    tok, _, _ = load_scgpt(tmp_path, selection="panel")
    tok.eval()
    with torch.no_grad():
        expected = model.value_encoder(torch.tensor([-1.0]))[0]  # mask_value = -1
    torch.testing.assert_close(tok.mask_embedding.detach(), expected, rtol=0, atol=1e-6)


def test_registered_model_on_pyg_data(tmp_path):
    from torch_geometric.data import Data

    import fimp

    write_scgpt_dir(tmp_path)
    assert "fimp_scgpt" in fimp.list_models()
    panel = list(GENES)
    model = fimp.create_model("fimp_scgpt", checkpoint=tmp_path, k=len(panel), num_classes=3)
    assert model.pretrained_config["family"] == "scgpt"
    x = torch.tensor(_data(panel), dtype=torch.float32)
    data = Data(x=x, edge_index=torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]))
    data.feature_names = panel
    out = model(data)
    assert out["logits"].shape == (4, 3) and torch.isfinite(out["logits"]).all()
    out["logits"].sum().backward()
    assert all(p.grad is None for p in model.tokenizer.parameters())  # frozen: zero-shot backbone
    assert model.head[0].weight.grad is not None
    emb = fimp.embed(model, data)
    assert emb.shape == (4, 16)
