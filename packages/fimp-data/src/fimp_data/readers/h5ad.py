"""AnnData (.h5ad) reader for spatial transcriptomics."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MissingKeyError, NonFiniteError, ShapeError
from ._common import (
    check_finite,
    check_nonempty,
    check_unique,
    encode_labels,
    existing_path,
    make_data,
    parsing,
)


def _coordinates(adata: Any, spatial_key: str | Sequence[str]) -> np.ndarray:
    if isinstance(spatial_key, str):
        if spatial_key not in adata.obsm:
            raise MissingKeyError(
                f"obsm[{spatial_key!r}] not found; obsm has {sorted(adata.obsm.keys())} and obs "
                f"has columns {list(adata.obs.columns)}. Pass spatial_key=<obsm key> or a tuple of "
                "obs columns, e.g. spatial_key=('x', 'y')"
            )
        coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] not in (2, 3):
            raise ShapeError(
                f"obsm[{spatial_key!r}] has shape {coords.shape}; expected [n_obs, 2] or "
                "[n_obs, 3] coordinates"
            )
        return coords
    cols = list(spatial_key)
    if len(cols) not in (2, 3):
        raise ShapeError(f"spatial_key columns must be 2 or 3 names, got {cols}")
    missing = [c for c in cols if c not in adata.obs.columns]
    if missing:
        raise MissingKeyError(
            f"obs columns {missing} not found; obs has {list(adata.obs.columns)} and obsm has "
            f"{sorted(adata.obsm.keys())}"
        )
    import pandas as pd

    return np.stack(
        [pd.to_numeric(adata.obs[c], errors="coerce").to_numpy(np.float64) for c in cols], axis=1
    )


def _sparse_x(matrix: Any, what: str, node_ids: Sequence[str]):
    """A coalesced float32 ``torch.sparse_coo_tensor`` of a scipy sparse matrix, checked finite.

    The stored values are shared, not copied (CSC is converted to CSR first); duplicates are
    summed and explicit zeros dropped, so the tensor holds each nonzero once, row-major sorted.
    """
    import scipy.sparse as sp
    import torch

    m = matrix.tocsr() if matrix.format != "csr" else matrix
    m = sp.csr_matrix(m.astype(np.float32, copy=False), copy=False)
    m.sum_duplicates()  # sorted column indices, no duplicates (in place)
    m.eliminate_zeros()
    bad = ~np.isfinite(m.data)
    if bad.any():
        rows = np.unique(np.searchsorted(m.indptr, np.flatnonzero(bad), side="right") - 1)
        raise NonFiniteError(
            f"{what} holds NaN/inf in {len(rows)} rows (first: "
            f"{[str(node_ids[i]) for i in rows[:5]]}); remove or impute those values before loading"
        )
    indices = np.empty((2, m.nnz), dtype=np.int64)
    for a in range(0, m.shape[0], 8192):  # row ids in blocks: no nnz-sized temporary
        b = min(a + 8192, m.shape[0])
        counts = np.diff(m.indptr[a : b + 1])
        indices[0, m.indptr[a] : m.indptr[b]] = np.repeat(np.arange(a, b, dtype=np.int64), counts)
    indices[1] = m.indices
    return torch.sparse_coo_tensor(
        torch.from_numpy(indices),
        torch.from_numpy(np.ascontiguousarray(m.data)),
        size=m.shape,
        is_coalesced=True,
        check_invariants=True,
    )


def read_h5ad(
    path: str | os.PathLike[str],
    *,
    spatial_key: str | Sequence[str] = "spatial",
    label_key: str | None = None,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    group_key: str | None = None,
    sparse: bool | None = None,
):
    """Read an AnnData ``.h5ad`` file into a node-level ``Data`` (one node per cell / spot).

    Args:
        path: the ``.h5ad`` file.
        spatial_key: ``obsm`` key of an ``[n_obs, 2|3]`` coordinate array (default ``"spatial"``),
            or a tuple of ``obs`` column names, e.g. ``("x", "y")`` or ``("row", "col")``.
        label_key: optional ``obs`` column of cell labels -> ``y`` (codes in category order for a
            categorical column, else sorted label order) and ``label_names``.
        layer: ``None`` = ``X``; a ``layers`` key (e.g. ``"counts"``); or ``"raw"`` = ``raw.X``
            with ``raw.var_names``. Values are used as stored (raw counts or normalised).
        genes: optional subset of ``var_names`` (kept in the given order).
        group_key: optional ``obs`` column (slide / sample id) stored as ``group`` (list[str]).
        sparse: layout of ``x``. ``None`` (default) keeps the file's: a matrix stored sparse
            (CSR/CSC) gives a sparse ``x``, a dense one a dense ``x``. ``True``: always sparse;
            ``False``: always dense (densifies a sparse matrix: N x G x 4 bytes).

    Returns:
        ``Data(x [N, G] float32, pos [N, 2|3] float32, y [N] long (if label_key),
        feature_names [G], label_names, node_ids [N] = obs_names, group [N] (if group_key))``.

        ``x`` holds the values as stored. For a sparse matrix (e.g. Slide-seqV2, 41,786 x 4,000
        at a few percent nonzeros: ~0.7 GB dense, ~0.1 GB sparse) it is a coalesced
        ``torch.sparse_coo_tensor`` (``x.layout == torch.sparse_coo``; rows = cells, columns =
        genes; each nonzero once, sorted row-major; explicit zeros dropped): select genes
        before densifying, e.g. ``x.index_select(1, cols).to_dense()``, or ``x.to_dense()``
        for everything. A dense matrix gives a dense tensor.

    Raises:
        DataFileNotFoundError: the file does not exist.
        MissingKeyError: a key is missing (the message lists the keys that exist).
        fimp_data.errors.NonFiniteError: NaN/inf expression, or coordinates (= cells without
            coordinates).
        DuplicateIdError: duplicate ``obs_names``.
        fimp_data.errors.EmptySelectionError: the selection (cells, genes) is empty.
    """
    import anndata as ad

    path = existing_path(path, "h5ad file")
    with parsing(path, ".h5ad (AnnData HDF5) file"):
        adata = ad.read_h5ad(path)
    if layer is None:
        matrix, var_names = adata.X, adata.var_names
    elif layer == "raw" and "raw" not in adata.layers:
        if adata.raw is None:
            raise MissingKeyError(
                f"layer='raw' but {path.name} has no .raw; layers are {sorted(adata.layers.keys())}"
            )
        matrix, var_names = adata.raw.X, adata.raw.var_names
    else:
        if layer not in adata.layers:
            raise MissingKeyError(
                f"layer {layer!r} not found; layers are {sorted(adata.layers.keys())}"
                + (" (and 'raw' = .raw.X)" if adata.raw is not None else "")
                + "; pass layer=None for X"
            )
        matrix, var_names = adata.layers[layer], adata.var_names
    var_names = [str(v) for v in var_names]
    node_ids = [str(o) for o in adata.obs_names]
    check_nonempty(len(node_ids), "cells (the file has 0 observations)", "use a non-empty file")
    check_unique(node_ids, "cell ids (obs_names)", "call adata.obs_names_make_unique() and save")
    check_unique(var_names, "gene names (var_names)", "call adata.var_names_make_unique() and save")
    cols = None
    if genes is not None:
        index = {g: i for i, g in enumerate(var_names)}
        unknown = [g for g in genes if g not in index]
        if unknown:
            raise MissingKeyError(
                f"{len(unknown)} genes not in var_names (first: {unknown[:5]}); "
                f"var_names start with {var_names[:5]}"
            )
        cols = np.array([index[g] for g in genes], dtype=np.int64)
        check_nonempty(len(cols), "genes (genes=[])", "pass at least one gene or genes=None")
        var_names = list(genes)
    check_nonempty(len(var_names), "genes (the matrix has 0 columns)", "use a file with genes")
    import scipy.sparse as sp

    if cols is not None:
        matrix = matrix[:, cols]
    stored_sparse = sp.issparse(matrix)
    if not stored_sparse and hasattr(matrix, "toarray"):  # array-likes that densify themselves
        matrix = matrix.toarray()
    if tuple(matrix.shape) != (len(node_ids), len(var_names)):
        raise ShapeError(
            f"expression matrix has shape {tuple(matrix.shape)}, expected "
            f"{(len(node_ids), len(var_names))}"
        )
    what = f"expression ({'X' if layer is None else layer})"
    if stored_sparse if sparse is None else sparse:
        if not stored_sparse:
            matrix = sp.csr_matrix(np.asarray(matrix, dtype=np.float32))
        x = _sparse_x(matrix, what, node_ids)
    else:
        if stored_sparse:
            matrix = matrix.toarray()
        x = np.asarray(matrix, dtype=np.float32)
        check_finite(x, what, node_ids)

    coords = _coordinates(adata, spatial_key)
    missing = ~np.isfinite(coords).all(axis=1)
    if missing.any():
        first = [node_ids[i] for i in np.flatnonzero(missing)[:5]]
        raise NonFiniteError(
            f"{int(missing.sum())} cells have no (finite) coordinates in {spatial_key!r} "
            f"(first: {first}); drop them before loading, e.g. "
            "adata = adata[np.isfinite(coords).all(axis=1)].copy()"
        )

    y = label_names = None
    if label_key is not None:
        if label_key not in adata.obs.columns:
            raise MissingKeyError(
                f"label_key {label_key!r} is not an obs column; obs has {list(adata.obs.columns)}"
            )
        col = adata.obs[label_key]
        if col.isna().any():
            raise MissingKeyError(
                f"obs[{label_key!r}] is missing for {int(col.isna().sum())} cells; drop or label "
                "them before loading"
            ) from None
        categories = list(col.cat.categories) if hasattr(col, "cat") else None
        y, label_names = encode_labels(col, categories)
    group = None
    if group_key is not None:
        if group_key not in adata.obs.columns:
            raise MissingKeyError(
                f"group_key {group_key!r} is not an obs column; obs has {list(adata.obs.columns)}"
            )
        group = [str(g) for g in adata.obs[group_key]]
    return make_data(
        x=x,
        pos=coords.astype(np.float32),
        y=y,
        feature_names=var_names,
        label_names=label_names,
        node_ids=node_ids,
        group=group,
    )
