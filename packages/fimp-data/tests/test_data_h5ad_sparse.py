"""read_h5ad keeps a sparse X sparse (a coalesced torch COO tensor), through load() as well.

Correctness only: the memory this saves at Slide-seqV2 scale is measured by
benchmarks/bench_read_h5ad_memory.py, not asserted here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import fimp_data
from fimp_data import read_h5ad
from fimp_data.errors import NonFiniteError


def _sparse_adata(n=40, g=15, density=0.2, seed=0, fmt="csr"):
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    dense = (rng.random((n, g)) < density) * rng.integers(1, 30, (n, g))
    x = sp.csr_matrix(dense.astype(np.float32)) if fmt == "csr" else sp.csc_matrix(dense)
    obs = pd.DataFrame(
        {"cluster": pd.Categorical(rng.integers(0, 3, n).astype(str))},
        index=[f"bead{i}" for i in range(n)],
    )
    a = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(g)]))
    a.layers["dense"] = dense.astype(np.float32)
    a.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    return a, dense.astype(np.float32)


def _nnz(x: torch.Tensor) -> int:
    return int(x._nnz())


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_x_stays_sparse_and_equals_dense(tmp_path, fmt):
    a, dense = _sparse_adata(fmt=fmt)
    a.write_h5ad(tmp_path / "a.h5ad")
    d = read_h5ad(tmp_path / "a.h5ad", label_key="cluster")
    assert d.x.layout == torch.sparse_coo and d.x.is_coalesced()
    assert d.x.dtype == torch.float32 and tuple(d.x.shape) == dense.shape
    assert _nnz(d.x) == int(np.count_nonzero(dense))  # only the nonzeros are held
    np.testing.assert_array_equal(d.x.to_dense().numpy(), dense)
    rows = d.x.indices()[0].numpy()
    assert np.all(np.diff(rows) >= 0)  # row-major order
    # the same file read dense (sparse=False) gives the same values, a dense tensor
    full = read_h5ad(tmp_path / "a.h5ad", sparse=False)
    assert full.x.layout == torch.strided
    np.testing.assert_array_equal(full.x.numpy(), dense)


def test_gene_subset_and_layers_follow_the_storage(tmp_path):
    a, dense = _sparse_adata()
    a.write_h5ad(tmp_path / "a.h5ad")
    p = tmp_path / "a.h5ad"
    sub = read_h5ad(p, genes=["G4", "G1"])
    assert sub.x.layout == torch.sparse_coo and sub.feature_names == ["G4", "G1"]
    np.testing.assert_array_equal(sub.x.to_dense().numpy(), dense[:, [4, 1]])
    layer = read_h5ad(p, layer="dense")  # stored dense -> dense x
    assert layer.x.layout == torch.strided
    forced = read_h5ad(p, layer="dense", sparse=True)
    assert forced.x.layout == torch.sparse_coo
    np.testing.assert_array_equal(forced.x.to_dense().numpy(), dense)


def test_duplicates_summed_and_explicit_zeros_dropped(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    # row 0 holds gene 1 twice (1 + 2) and an explicit zero at gene 2; indices unsorted
    x = sp.csr_matrix(
        (np.array([2.0, 1.0, 0.0, 5.0], np.float32), np.array([1, 1, 2, 0]), np.array([0, 3, 4])),
        shape=(2, 3),
    )
    a = ad.AnnData(X=x, obs=pd.DataFrame(index=["c0", "c1"]))
    a.obsm["spatial"] = np.zeros((2, 2))
    a.write_h5ad(tmp_path / "a.h5ad")
    d = read_h5ad(tmp_path / "a.h5ad")
    assert _nnz(d.x) == 2
    np.testing.assert_array_equal(d.x.to_dense().numpy(), [[0, 3, 0], [5, 0, 0]])


def test_nonfinite_sparse_values_name_the_cell(tmp_path):
    a, _ = _sparse_adata()
    x = a.X.tolil()
    x[7, 3] = np.inf
    a.X = x.tocsr()
    a.write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(NonFiniteError, match=r"1 rows .*bead7"):
        read_h5ad(tmp_path / "a.h5ad")


def test_load_keeps_sparse_x_and_builds_graph(tmp_path, monkeypatch):
    """Through the registry (a test-local registry file) as spatial-slideseqv2 is read."""
    a, dense = _sparse_adata(n=60)
    a.write_h5ad(tmp_path / "beads.h5ad")
    reg = tmp_path / "registry.yaml"
    reg.write_text(
        "schema_version: 1\n"
        "datasets:\n"
        "  - name: test-sparse-beads\n"
        "    domain: spatial\n"
        "    kind: node\n"
        "    user_supplied: true\n"
        f"    files: [{{name: beads, local: {tmp_path / 'beads.h5ad'}}}]\n"
        "    licence: test\n    citation: test\n    description: test\n"
        "    reader: fimp_data.readers:read_h5ad\n"
        "    reader_args: {spatial_key: spatial, label_key: cluster}\n"
        "    graph: {builder: knn, k: 4}\n"
    )
    monkeypatch.setenv("FIMP_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FIMP_DATA_REGISTRY", str(reg))
    d = fimp_data.load("test-sparse-beads")
    assert d.x.layout == torch.sparse_coo and d.x.dtype == torch.float32
    np.testing.assert_array_equal(d.x.to_dense().numpy(), dense)
    assert d.num_nodes == 60 and d.edge_index.shape == (2, 60 * 4)
    assert len(d.sha256) == 64 and d.y.shape == (60,)
    split = fimp_data.spatial_block_split(d, val=0.2, test=0.2, seed=0)
    assert split.train.numel() + split.val.numel() + split.test.numel() == 60
