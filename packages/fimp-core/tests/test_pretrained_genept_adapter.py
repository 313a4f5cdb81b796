"""load_genept / fimp_genept: GenePT vectors as the frozen gene identity of the gene tokenizer.

GenePT has no transformer blocks, so its "self-loop identity" is the identity of the lookup: every
gene token's identity term must be ``LayerNorm(Linear(genept[g]))`` of exactly the vector stored in
the upstream pickle, computed here from the raw pickle numbers by a slow reference.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import fimp
from fimp.errors import ConfigError, UnknownGeneError
from fimp.nn import CrossAttention
from fimp.pretrained.genept import UnsafePickleError, load_genept
from fimp.tokenizers import GeneTokenizer

E = 1536


def write_genept(path, genes=("Actb", "Gapdh", "Cd3e", "Sst", "Pvalb"), *, lists=False):
    rng = np.random.default_rng(7)
    d = {g: rng.standard_normal(E) * 0.02 for g in genes}
    d[genes[-1]] = np.zeros(E)  # a gene without an NCBI summary
    if lists:
        d = {g: [float(x) for x in v] for g, v in d.items()}
    with open(path, "wb") as fh:
        pickle.dump(d, fh)
    return d


@pytest.mark.parametrize("lists", [False, True])
def test_gene_identity_equals_genept_vectors(tmp_path, lists):
    raw = write_genept(tmp_path / "GPT_3_5_gene_embeddings.pickle", lists=lists)
    panel = ["Sst", "Actb", "Cd3e"]
    tok, msg, config = load_genept(
        tmp_path / "GPT_3_5_gene_embeddings.pickle", dim=32, heads=4, genes=panel
    )
    assert isinstance(tok, GeneTokenizer) and isinstance(msg, CrossAttention)
    assert config["embedding_dim"] == E and config["vocab_size"] == 3
    assert json.loads(json.dumps(config)) == config  # JSON-serialisable, for records
    assert not tok.gene_embedding.weight.requires_grad  # GenePT stays fixed
    assert tok.gene_projection.weight.requires_grad  # the projection to d is learned
    x = torch.zeros(2, 3)  # zero expression: the value term is value_encoder(0) for every token
    tok.eval()
    with torch.no_grad():
        tokens, mask = tok(x, panel)
        value_term = tok.value_encoder(torch.zeros(1))[0]
        for j, g in enumerate(panel):
            vec = torch.tensor(np.asarray(raw[g], dtype=np.float64), dtype=torch.float32)
            proj = vec @ tok.gene_projection.weight.T + tok.gene_projection.bias
            ref = nn.functional.layer_norm(
                proj, (32,), tok.gene_norm.weight, tok.gene_norm.bias, eps=1e-5
            )
            torch.testing.assert_close(tokens[0, j], ref + value_term, rtol=0, atol=1e-5)
    assert bool(mask.all())


def test_missing_genes(tmp_path):
    path = tmp_path / "g.pickle"
    write_genept(path)
    with pytest.raises(UnknownGeneError) as info:
        load_genept(path, genes=["Actb", "Xist", "Malat1"])
    assert "'Xist'" in str(info.value) and "'Malat1'" in str(info.value)
    tok, _, cfg = load_genept(path, genes=["Actb", "Xist"], missing="zero", dim=16)
    assert cfg["zero_vector_genes"] == ["Xist"]
    assert torch.count_nonzero(tok.gene_embedding.weight[1]) == 0
    tok, _, cfg = load_genept(path, genes=["Actb", "Xist", "Sst"], missing="drop", dim=16)
    assert cfg["vocab_size"] == 2
    tokens, mask = tok(torch.ones(1, 3), ["Actb", "Xist", "Sst"])
    assert tokens.shape == (1, 2, 16) and bool(mask.all())
    with pytest.raises(ConfigError):
        load_genept(path, missing="zero")


def test_hostile_pickle_is_refused_by_the_loader(tmp_path):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "GenePT_gene_embedding_ada_text.pickle"
    path.write_bytes(pickle.dumps({"Actb": Evil()}))
    with pytest.raises(UnsafePickleError):
        load_genept(path, genes=["Actb"])
    with pytest.raises(UnsafePickleError):
        fimp.create_model("fimp_genept", embeddings=path, genes=["Actb"])
    assert not marker.exists()


def test_registered_model_trains_only_what_it_should(tmp_path):
    path = tmp_path / "g.pickle"
    write_genept(path)
    assert "fimp_genept" in fimp.list_models()
    genes = ["Actb", "Gapdh", "Cd3e", "Sst"]
    model = fimp.create_model(
        "fimp_genept", embeddings=path, genes=genes, dim=16, heads=2, num_layers=2, num_classes=3
    )
    assert model.pretrained_config["family"] == "genept"
    x = torch.rand(5, 4)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0], [1, 0, 3, 2, 0, 4]])
    out = model(x, edge_index, genes=genes)
    assert out["logits"].shape == (5, 3)
    out["logits"].sum().backward()
    assert model.tokenizer.gene_embedding.weight.grad is None
    assert model.tokenizer.gene_projection.weight.grad is not None
