"""Sparse node features (fimp_data's ``x`` of a sparse .h5ad) through the spatial tasks: the same
bits as dense input, never densified whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from conftest import spatial_data
from fimp_bench import _data
from fimp_bench.tasks import get_preset, get_task
from fimp_bench.tasks import spatial as spatial_mod
from fimp_bench.tasks._common import central_subset, sparse_csr


def _sparsified(n_side=12, n_genes=40, seed=0) -> tuple[Data, Data]:
    """(dense, sparse) copies of one synthetic slide with ~60% zeros."""
    d = spatial_data(n_side=n_side, n_genes=n_genes, seed=seed)
    x = d.x.clone()
    x[x < 1.6] = 0.0
    dense = d.clone()
    dense.x = x
    sparse = d.clone()
    sparse.x = x.to_sparse_coo().coalesce()
    return dense, sparse


def _reference_expression(data, train, n_genes):
    """The dense formula as it was before sparse support (the leaderboards' numbers)."""
    x = np.log1p(data.x.numpy().astype(np.float64))
    var = x[train].var(axis=0)
    genes = np.sort(np.argsort(-var, kind="stable")[:n_genes])
    x = x[:, genes]
    mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
    return ((x - mu) / np.where(sd > 0, sd, 1.0)).astype(np.float32), genes


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)


@pytest.mark.parametrize("block_cols", [None, 2, 3, 7])
def test_expression_dense_and_sparse_bit_identical(monkeypatch, block_cols):
    dense, sparse = _sparsified()
    train = np.sort(np.random.default_rng(1).permutation(dense.num_nodes)[:90])
    if block_cols is not None:  # force many gene blocks (the full-size case)
        monkeypatch.setattr(spatial_mod, "_VAR_BLOCK_BYTES", 8 * train.size * block_cols)
    for panel in (12, 40, 64):
        xd, gd = spatial_mod._expression(dense, train, panel)
        xs, gs = spatial_mod._expression(sparse, train, panel)
        ref, genes = _reference_expression(dense, train, panel)
        assert gd == gs == [f"G{g}" for g in genes]
        np.testing.assert_array_equal(_bits(xd), _bits(xs))
        np.testing.assert_array_equal(_bits(xd), _bits(ref))


def test_expression_rejects_negative_sparse_values():
    _, sparse = _sparsified()
    sparse.x = (-sparse.x.to_dense()).to_sparse_coo()
    with pytest.raises(ValueError, match="non-negative"):
        spatial_mod._expression(sparse, np.arange(10), 5)


def test_sparse_csr_layouts_share_values():
    dense, sparse = _sparsified()
    for t in (sparse.x, sparse.x.to_sparse_csr()):
        m = sparse_csr(t)
        np.testing.assert_array_equal(m.toarray(), dense.x.numpy())
    assert sparse_csr(dense.x) is None


def test_central_subset_keeps_x_sparse():
    dense, sparse = _sparsified()
    sub_d, sub_s = central_subset(dense, 50), central_subset(sparse, 50)
    assert sub_s.x.layout == torch.sparse_coo and sub_s.num_nodes == 50
    torch.testing.assert_close(sub_s.x.to_dense(), sub_d.x, rtol=0, atol=0)
    assert torch.equal(sub_s.edge_index, sub_d.edge_index)


def test_dataset_sha256_same_for_dense_and_sparse(monkeypatch):
    dense, sparse = _sparsified()
    monkeypatch.setattr(_data, "_HASH_ROWS", 7)  # several row blocks
    assert _data.dataset_sha256(dense) == _data.dataset_sha256(sparse)
    changed = sparse.clone()
    changed.x = (sparse.x.to_dense() * 2).to_sparse_coo()
    assert _data.dataset_sha256(changed) != _data.dataset_sha256(sparse)


@pytest.mark.parametrize("task", ["spatial-expression", "spatial-celltype"])
@pytest.mark.parametrize("preset", ["smoke", "quick"])
def test_prepared_tasks_identical_for_dense_and_sparse(task, preset):
    dense, sparse = _sparsified()
    t = get_task(task)
    pd_ = t.prepare(seed=3, preset=get_preset(preset), data=dense)
    ps = t.prepare(seed=3, preset=get_preset(preset), data=sparse)
    gd, gs = pd_.graphs[0], ps.graphs[0]
    assert set(gd.keys()) == set(gs.keys())
    for key in gd.keys():
        a, b = gd[key], gs[key]
        if isinstance(a, torch.Tensor):
            assert a.layout == torch.strided and torch.equal(a, b), key
    assert pd_.token_info == ps.token_info
    assert pd_.info == ps.info  # same split id, dataset hash, counts
