import numpy as np
import pytest
import torch
from torch import nn

from fimp.errors import ConfigError, FIMPError, NonFiniteError, ShapeError, UnknownGeneError
from fimp.tokenizers import GeneTokenizer
from fimp.tokenizers.gene import DuplicateGeneError, scgpt_binning

VOCAB = ["A", "B", "C", "D", "E", "F"]


# --- slow references -------------------------------------------------------------------------


def reference_binning(
    row: np.ndarray, n_bins: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """scgpt.preprocess.binning with its random tie rule replaced by the documented midpoint."""
    row = row.astype(np.float64)
    out = np.zeros(len(row), dtype=np.int64)
    present = row != 0
    if exclude is not None:
        present &= ~exclude
    if not present.any():
        return out
    bins = np.quantile(row[present], np.linspace(0, 1, n_bins - 1))
    for i, v in enumerate(row):
        if v == 0:
            continue
        left = np.digitize(v, bins)
        right = np.digitize(v, bins, right=True)
        out[i] = (left + right + 1) // 2
    return out


def upstream_binning(row: np.ndarray, n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """scgpt.preprocess.binning + _digitize verbatim (random ties; np.random.rand -> rng)."""
    if row.max() == 0:
        return np.zeros_like(row, dtype=np.int64)
    non_zero_ids = row.nonzero()
    non_zero_row = row[non_zero_ids]
    bins = np.quantile(non_zero_row, np.linspace(0, 1, n_bins - 1))
    left_digits = np.digitize(non_zero_row, bins)
    right_digits = np.digitize(non_zero_row, bins, right=True)
    rands = rng.random(len(non_zero_row))
    digits = np.ceil(rands * (right_digits - left_digits) + left_digits).astype(np.int64)
    binned_row = np.zeros_like(row, dtype=np.int64)
    binned_row[non_zero_ids] = digits
    return binned_row


def reference_top_k(row: list[float], k: int) -> list[int]:
    """k largest positive values, ties by column order; returned in column order."""
    candidates = [(-v, col) for col, v in enumerate(row) if v > 0]
    return sorted(col for _, col in sorted(candidates)[:k])


class UpstreamContinuousValueEncoder(nn.Module):
    """scgpt.model.ContinuousValueEncoder, copied from upstream."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_value: int = 512):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.linear1 = nn.Linear(1, d_model)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.max_value = max_value

    def forward(self, x):
        x = x.unsqueeze(-1)
        x = torch.clamp(x, max=self.max_value)
        x = self.activation(self.linear1(x))
        x = self.linear2(x)
        x = self.norm(x)
        return self.dropout(x)


# --- tests -----------------------------------------------------------------------------------


def test_panel_tokens_by_hand():
    torch.manual_seed(0)
    tok = GeneTokenizer(VOCAB, 4).eval()
    x = torch.tensor([[1.5, 0.0, 3.0], [0.0, 2.0, 700.0]])
    tokens, token_mask, index = tok(x, ["C", "A", "F"], return_index=True)
    assert tokens.shape == (2, 3, 4) and token_mask.all()
    assert index.tolist() == [[0, 1, 2], [0, 1, 2]]
    emb = tok.gene_embedding.weight
    enc = tok.value_encoder
    for cell in range(2):
        for col, row in enumerate([2, 0, 5]):
            value = min(float(x[cell, col]), 512.0)  # scGPT clamps at 512
            h = torch.relu(enc.linear1.weight[:, 0] * value + enc.linear1.bias)
            h = enc.linear2.weight @ h + enc.linear2.bias
            h = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + 1e-5)
            h = h * enc.norm.weight + enc.norm.bias
            torch.testing.assert_close(tokens[cell, col], emb[row] + h)


def test_continuous_encoder_matches_upstream_by_state_dict():
    torch.manual_seed(1)
    tok = GeneTokenizer(VOCAB, 8, norm_gene_embedding=True).eval()
    upstream = UpstreamContinuousValueEncoder(8).eval()
    upstream.load_state_dict(tok.value_encoder.state_dict())
    values = torch.tensor([[0.0, 1.0, 3.5, 600.0, -2.0]])
    torch.testing.assert_close(tok.value_encoder(values), upstream(values))
    keys = set(tok.state_dict())
    # names the scGPT adapter maps encoder.embedding / encoder.enc_norm / value_encoder.* onto
    assert {
        "gene_embedding.weight",
        "gene_norm.weight",
        "gene_norm.bias",
        "value_encoder.linear1.weight",
        "value_encoder.linear2.weight",
        "value_encoder.norm.weight",
        "mask_embedding",
    } <= keys
    assert tok.state_dict()["value_encoder.linear1.weight"].shape == (8, 1)


def test_binning_matches_reference_with_ties_and_exclusion():
    gen = np.random.default_rng(0)
    counts = gen.poisson(1.5, size=(40, 30)).astype(np.float32)  # many ties
    counts[:, :3] *= 17  # a few larger values
    counts[5] = 0  # an empty cell
    counts[6] = 0
    counts[6, 4] = 3  # a cell with one expressed gene
    logn = np.log1p(gen.gamma(0.7, 2.0, size=(40, 30)) * (gen.random((40, 30)) < 0.4))
    exclude = gen.random((40, 30)) < 0.15
    for data in (counts, logn.astype(np.float32)):
        for n_bins in (3, 11, 51):
            got = scgpt_binning(torch.from_numpy(data), n_bins)
            want = np.stack([reference_binning(r, n_bins) for r in data])
            np.testing.assert_array_equal(got.numpy(), want)
            got = scgpt_binning(torch.from_numpy(data), n_bins, exclude=torch.from_numpy(exclude))
            want = np.stack([reference_binning(r, n_bins, e) for r, e in zip(data, exclude)])
            np.testing.assert_array_equal(got.numpy(), want)
    assert scgpt_binning(torch.from_numpy(counts), 51)[5].eq(0).all()
    # one expressed gene: all 50 edges equal it; scGPT draws from 1..50, we take (50 + 0 + 1) // 2
    assert scgpt_binning(torch.from_numpy(counts), 51)[6].tolist() == [0] * 4 + [25] + [0] * 25


def test_binning_equals_upstream_when_values_are_distinct():
    gen = np.random.default_rng(1)
    data = gen.gamma(1.0, 1.0, size=(20, 200)) * (gen.random((20, 200)) < 0.5)
    got = scgpt_binning(torch.from_numpy(data), 51).numpy()
    rng = np.random.default_rng(2)
    for row, got_row in zip(data, got):
        np.testing.assert_array_equal(got_row, upstream_binning(row, 51, rng))
        nz = row != 0
        assert got_row[nz].min() == 1 and got_row[nz].max() == 50
        assert got_row[np.argmin(np.where(nz, row, np.inf))] == 1


def test_binned_tokens_use_bins_of_all_mapped_columns():
    torch.manual_seed(0)
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    tok = GeneTokenizer(VOCAB, 4, value_encoding="binned", n_bins=6).eval()
    tokens, _ = tok(x, VOCAB)
    bins = scgpt_binning(x, 6)[0]
    assert bins.tolist() == [0, 1, 2, 3, 4, 5]
    expected = tok.gene_embedding.weight + tok.value_encoder(bins)
    torch.testing.assert_close(tokens[0], expected)
    # binned_continuous feeds the bin index as a float to the continuous encoder (scGPT_human)
    tok2 = GeneTokenizer(VOCAB, 4, value_encoding="binned_continuous", n_bins=6).eval()
    tokens2, _ = tok2(x, VOCAB)
    torch.testing.assert_close(
        tokens2[0], tok2.gene_embedding.weight + tok2.value_encoder(bins.float())
    )


def test_unknown_gene_error_lists_names_and_the_drop_option():
    tok = GeneTokenizer(VOCAB, 4)
    names = ["A"] + [f"G{i}" for i in range(25)]
    x = torch.ones(2, len(names))
    with pytest.raises(UnknownGeneError) as info:
        tok(x, names)
    msg = str(info.value)
    assert "25 of 26" in msg and "'G0'" in msg and "'G19'" in msg and "'G20'" not in msg
    assert "and 5 more" in msg and "unknown='drop'" in msg
    assert isinstance(info.value, KeyError) and isinstance(info.value, FIMPError)


def test_drop_unknown_genes_keeps_original_column_index():
    torch.manual_seed(0)
    tok = GeneTokenizer(VOCAB, 4, unknown="drop").eval()
    x = torch.tensor([[1.0, 9.0, 2.0, 9.0, 3.0]])
    tokens, token_mask, index = tok(x, ["B", "zz", "D", "yy", "A"], return_index=True)
    assert index.tolist() == [[0, 2, 4]] and token_mask.all()
    ref, _ = tok(x[:, [0, 2, 4]], ["B", "D", "A"])
    torch.testing.assert_close(tokens, ref)
    with pytest.raises(UnknownGeneError, match="none of the 2"):
        tok(torch.ones(1, 2), ["zz", "yy"])


def test_top_k_selection_padding_and_ties_against_reference():
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 4, (25, 12), generator=gen).float()  # ties and zero rows
    x[0] = 0
    x[1] = 0
    x[1, 7] = 2.0
    k = 5
    tok = GeneTokenizer(VOCAB + [f"g{i}" for i in range(6)], 4, selection="top_k", k=k).eval()
    names = tok.genes[::-1]
    tokens, token_mask, index = tok(x, names, return_index=True)
    assert tokens.shape == (25, k, 4)
    for cell in range(25):
        want = reference_top_k(x[cell].tolist(), k)
        assert index[cell, : len(want)].tolist() == want
        assert index[cell, len(want) :].eq(-1).all()
        assert token_mask[cell].tolist() == [True] * len(want) + [False] * (k - len(want))
        assert tokens[cell, len(want) :].eq(0).all()
    assert not token_mask[0].any()
    # the token of column c is the panel token of column c
    panel = GeneTokenizer(tok.genes, 4).eval()
    panel.load_state_dict(tok.state_dict())
    full, _ = panel(x, names)
    for cell in range(25):
        for pos in range(k):
            col = int(index[cell, pos])
            if col >= 0:
                torch.testing.assert_close(tokens[cell, pos], full[cell, col])


def test_top_k_larger_than_panel_and_sample_determinism():
    x = torch.tensor([[3.0, 0.0, 1.0, 2.0, 5.0, 4.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    tok = GeneTokenizer(VOCAB, 4, selection="top_k", k=100)
    _, m = tok(x, VOCAB)
    assert m.shape == (2, 6) and m.sum(1).tolist() == [5, 1]

    samp = GeneTokenizer(VOCAB, 4, selection="sample", k=3).eval()
    runs = []
    for seed in (0, 0, 1, 2, 3):
        out = samp(x, VOCAB, generator=torch.Generator().manual_seed(seed), return_index=True)
        runs.append(out)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][2], runs[1][2])
    assert any(not torch.equal(runs[0][2], r[2]) for r in runs[2:])
    for _, token_mask, index in runs:
        assert token_mask.sum(1).tolist() == [3, 1]
        picked = index[0].tolist()
        assert picked == sorted(picked) and len(set(picked)) == 3
        assert all(x[0, c] > 0 for c in picked)
        assert index[1].tolist() == [2, -1, -1]


def test_sample_is_uniform_over_expressed_genes():
    x = torch.tensor([[1.0, 0.0, 1.0, 50.0, 1.0, 0.0]]).repeat(400, 1)
    samp = GeneTokenizer(VOCAB, 4, selection="sample", k=2)
    _, _, index = samp(x, VOCAB, generator=torch.Generator().manual_seed(0), return_index=True)
    counts = torch.bincount(index.flatten(), minlength=6).float()
    assert counts[1] == 0 and counts[5] == 0
    freq = counts[[0, 2, 3, 4]] / 400
    assert torch.all((freq - 0.5).abs() < 0.1), freq  # each of 4 genes in 2 of 4 slots


@pytest.mark.parametrize("encoding", ["continuous", "binned", "binned_continuous"])
def test_mask_replaces_value_term_only_and_hides_values(encoding):
    torch.manual_seed(0)
    tok = GeneTokenizer(VOCAB, 8, value_encoding=encoding, n_bins=5).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 6, generator=gen) * (torch.rand(4, 6, generator=gen) < 0.8)
    mask = torch.rand(4, 6, generator=gen) < 0.3
    mask[0, 1] = True
    tokens, _ = tok(x, VOCAB, mask=mask)
    gene_term = tok.gene_embedding.weight.expand(4, 6, 8)
    torch.testing.assert_close(
        (tokens - gene_term)[mask], tok.mask_embedding.expand(int(mask.sum()), 8)
    )
    # the masked values cannot be recovered from any token
    x2 = torch.where(mask, torch.rand(4, 6, generator=gen) * 7, x)
    tokens2, _ = tok(x2, VOCAB, mask=mask)
    torch.testing.assert_close(tokens2, tokens)
    # gradients reach the mask embedding
    tokens.sum().backward()
    assert tok.mask_embedding.grad is not None and tok.mask_embedding.grad.abs().sum() > 0


def test_gene_embeddings_projection_freeze_and_reset():
    torch.manual_seed(0)
    vectors = torch.randn(len(VOCAB), 12)
    vectors[2] = 0  # GenePT has zero vectors for genes without a summary
    tok = GeneTokenizer(VOCAB, 4, gene_embeddings=vectors, freeze_gene_embeddings=True)
    assert isinstance(tok.gene_projection, nn.Linear) and tok.gene_projection.in_features == 12
    assert torch.equal(tok.gene_embedding.weight, vectors)
    x = torch.rand(3, 6)
    tokens, _ = tok(x, VOCAB)
    tokens.sum().backward()
    assert not tok.gene_embedding.weight.requires_grad and tok.gene_embedding.weight.grad is None
    assert tok.gene_projection.weight.grad is not None
    gene_term = tok.gene_projection(vectors)
    torch.testing.assert_close(tokens - gene_term, tok.value_encoder(x))
    tok2 = GeneTokenizer(VOCAB, 4, gene_embeddings=vectors)
    with torch.no_grad():
        tok2.gene_embedding.weight.add_(1.0)
    tok2.reset_parameters()
    assert torch.equal(tok2.gene_embedding.weight, vectors)
    assert "_initial_gene_embeddings" not in tok2.state_dict()
    with pytest.raises(ShapeError, match="rows"):
        GeneTokenizer(VOCAB, 4, gene_embeddings=torch.randn(3, 12))


def test_norm_cls_token_and_padding_idx():
    torch.manual_seed(0)
    vocab = [*VOCAB, "<pad>", "<cls>"]
    tok = GeneTokenizer(
        vocab, 8, norm_gene_embedding=True, padding_idx=6, cls_token="<cls>", cls_value=-2.0
    ).eval()
    assert isinstance(tok.gene_norm, nn.LayerNorm)
    assert tok.gene_embedding.weight[6].eq(0).all()
    x = torch.rand(2, 3)
    tokens, token_mask, index = tok(x, ["B", "A", "C"], return_index=True)
    assert tokens.shape == (2, 4, 8) and token_mask.all()
    assert index.tolist() == [[-1, 0, 1, 2]] * 2
    cls = tok.gene_norm(tok.gene_embedding.weight[7]) + tok.value_encoder(torch.tensor(-2.0))
    torch.testing.assert_close(tokens[:, 0], cls.expand(2, 8))
    torch.testing.assert_close(
        tokens[:, 1:], tok.gene_norm(tok.gene_embedding.weight[[1, 0, 2]]) + tok.value_encoder(x)
    )
    with pytest.raises(ConfigError, match="bin index"):
        GeneTokenizer(vocab, 8, value_encoding="binned", cls_token="<cls>", cls_value=-2)
    with pytest.raises(UnknownGeneError, match="cls_token"):
        GeneTokenizer(VOCAB, 8, cls_token="<cls>")


def test_bad_input_raises_typed_errors():
    tok = GeneTokenizer(VOCAB, 4)
    with pytest.raises(ShapeError, match="rank 2"):
        tok(torch.ones(6), VOCAB)
    with pytest.raises(ShapeError, match="floating"):
        tok(torch.ones(2, 6, dtype=torch.long), VOCAB)
    with pytest.raises(ShapeError, match="6 columns"):
        tok(torch.ones(2, 6), VOCAB[:5])
    with pytest.raises(NonFiniteError, match="1 NaN/inf"):
        tok(torch.tensor([[1.0, float("nan"), 0, 0, 0, 0]]), VOCAB)
    with pytest.raises(ShapeError, match="shape"):
        tok(torch.ones(2, 6), VOCAB, mask=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ShapeError, match="bool"):
        tok(torch.ones(2, 6), VOCAB, mask=torch.zeros(2, 6))
    with pytest.raises(DuplicateGeneError, match="more than once"):
        tok(torch.ones(2, 2), ["A", "A"])
    with pytest.raises(DuplicateGeneError):
        GeneTokenizer(["A", "B", "A"], 4)
    with pytest.raises(ShapeError, match="negative"):
        GeneTokenizer(VOCAB, 4, value_encoding="binned")(-torch.ones(1, 6), VOCAB)
    with pytest.raises(ConfigError, match="k must"):
        GeneTokenizer(VOCAB, 4, selection="top_k")
    with pytest.raises(ConfigError, match="panel"):
        GeneTokenizer(VOCAB, 4, k=3)
    with pytest.raises(ConfigError, match="value_encoding"):
        GeneTokenizer(VOCAB, 4, value_encoding="log")
    with pytest.raises(ConfigError, match="n_bins"):
        GeneTokenizer(VOCAB, 4, n_bins=2)


def test_repr_reset_and_device_dtype():
    tok = GeneTokenizer(VOCAB, 16, selection="top_k", k=3, value_encoding="binned")
    assert repr(tok) == "GeneTokenizer(6, 16, value_encoding='binned', selection='top_k', k=3)"
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    tok.reset_parameters()
    after = tok.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    tok = tok.double()
    tokens, _ = tok(torch.rand(2, 6, dtype=torch.float64), VOCAB)
    assert tokens.dtype == torch.float64
    empty, m = tok(torch.zeros(0, 6, dtype=torch.float64), VOCAB)
    assert empty.shape == (0, 3, 16) and m.shape == (0, 3)


def test_default_columns_and_gathering_reconstruction_targets():
    torch.manual_seed(0)
    tok = GeneTokenizer(VOCAB, 4, selection="top_k", k=2).eval()
    x = torch.tensor([[0.0, 5.0, 0.0, 1.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 2.0]])
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 4] = True
    tokens, token_mask, index = tok(x, mask=mask, return_index=True)  # columns = vocabulary
    assert token_mask.tolist() == [[True, True], [True, False]]
    assert index.tolist() == [[1, 4], [5, -1]] and tok.target_dim == 1
    assert GeneTokenizer.gather_values(x, index).tolist() == [[5.0, 3.0], [2.0, 0.0]]
    assert GeneTokenizer.gather_values(mask, index, fill=False).tolist() == [
        [False, True],
        [False, False],
    ]
    same, _ = tok(x, VOCAB, mask=mask)
    assert torch.equal(same, tokens) and tok.num_prefix_tokens == 0
    with pytest.raises(ShapeError, match="genes=None"):
        tok(x[:, :5])


def test_expressed_selection_is_scgpt_cell_tokenization():
    torch.manual_seed(0)
    x = torch.tensor([[0.0, 2.0, 0.0, 1.0, 0.0, 0.0], [3.0, 1.0, 1.0, 0.0, 4.0, 0.0]])
    tok = GeneTokenizer(VOCAB, 4, selection="expressed", value_encoding="binned_continuous")
    tokens, token_mask, index = tok(x, return_index=True)
    assert index.tolist() == [[1, 3, -1, -1], [0, 1, 2, 4]]
    assert token_mask.tolist() == [[True, True, False, False], [True] * 4]
    # each cell's tokens equal those of the cell alone (binning is per cell)
    alone, _ = tok(x[:1])
    torch.testing.assert_close(tokens[:1, :2], alone)
    assert tokens[0, 2:].eq(0).all()
    empty, empty_mask = tok(torch.zeros(2, 6))
    assert empty.shape == (2, 1, 4) and not empty_mask.any()
    with pytest.raises(ConfigError, match="k is only used"):
        GeneTokenizer(VOCAB, 4, selection="expressed", k=3)
