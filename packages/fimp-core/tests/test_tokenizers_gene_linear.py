"""GeneTokenizer(value_encoding="linear"): token = E[gene] + v * W[gene] (FT-Transformer's
numerical tokenizer), checked entry by entry against that definition."""

from __future__ import annotations

import torch

from fimp.tokenizers import GeneTokenizer


def test_linear_value_encoding_is_gene_bias_plus_value_times_gene_vector():
    torch.manual_seed(0)
    vocab = ["A", "B", "C", "D"]
    tok = GeneTokenizer(vocab, 6, value_encoding="linear")
    x = torch.randn(3, 3)  # standardised values may be negative
    cols = ["C", "A", "D"]
    mask = torch.tensor([[False, True, False], [False, False, False], [True, False, False]])
    tokens, valid = tok(x, cols, mask=mask)
    assert tokens.shape == (3, 3, 6) and bool(valid.all())
    for i in range(3):
        for t, g in enumerate(cols):
            row = vocab.index(g)
            value = tok.mask_embedding if mask[i, t] else x[i, t] * tok.value_weight.weight[row]
            torch.testing.assert_close(tokens[i, t], tok.gene_embedding.weight[row] + value)
    # linear in the value: doubling an unmasked value doubles its value term
    t2, _ = tok(x * 2, cols, mask=mask)
    gene = tok.gene_embedding.weight[vocab.index("C")]
    torch.testing.assert_close(t2[1, 0] - gene, 2 * (tokens[1, 0] - gene))


def test_linear_value_encoding_gradients_and_reset():
    tok = GeneTokenizer(["A", "B"], 4, value_encoding="linear")
    x = torch.tensor([[1.0, -2.0]], requires_grad=True)
    tokens, _ = tok(x)
    tokens.sum().backward()
    torch.testing.assert_close(x.grad, tok.value_weight.weight.sum(1, keepdim=True).T.detach())
    before = tok.value_weight.weight.detach().clone()
    tok.reset_parameters()
    assert not torch.equal(before, tok.value_weight.weight)
    assert "value_encoding='linear'" in repr(tok)
