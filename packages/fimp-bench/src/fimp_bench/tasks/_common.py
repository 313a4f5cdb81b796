"""Helpers shared by the task modules (the node-level ones: one graph, node masks)."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from fimp_bench import _data
from fimp_bench.errors import BenchConfigError


def is_sparse(t) -> bool:
    """Whether ``t`` is a sparse matrix: a torch sparse tensor (COO, as fimp_data gives for a
    sparse ``.h5ad``, or CSR) or a scipy sparse matrix."""
    if isinstance(t, torch.Tensor):
        return t.layout != torch.strided
    import scipy.sparse as sp

    return sp.issparse(t)


def to_numpy(t) -> np.ndarray:
    """A dense ndarray (a sparse matrix is densified: use :func:`sparse_csr` to avoid that)."""
    if isinstance(t, torch.Tensor):
        if t.layout != torch.strided:
            t = t.to_dense()
        return t.detach().cpu().numpy()
    if is_sparse(t):
        return t.toarray()
    return np.asarray(t)


def sparse_csr(t):
    """A scipy CSR matrix of a sparse ``t`` (torch COO/CSR tensor or scipy matrix), sharing the
    values where the layout allows; ``None`` when ``t`` is dense."""
    if not is_sparse(t):
        return None
    import scipy.sparse as sp

    if not isinstance(t, torch.Tensor):
        return sp.csr_matrix(t)
    t = t.detach().cpu()
    n, f = t.shape
    if t.layout == torch.sparse_csr:
        parts = (t.values().numpy(), t.col_indices().numpy(), t.crow_indices().numpy())
        return sp.csr_matrix(parts, shape=(n, f))
    if t.layout != torch.sparse_coo:
        raise BenchConfigError(f"unsupported sparse layout {t.layout} of node features")
    t = t.coalesce()  # row-major sorted, no duplicates (a no-op for fimp_data's tensors)
    rows, cols = t.indices().numpy()
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return sp.csr_matrix((t.values().numpy(), cols, indptr), shape=(n, f))


def take_rows(value: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``value[index]`` along dim 0, for dense and sparse (COO/CSR) tensors alike."""
    if value.layout == torch.strided:
        return value[index]
    if value.layout == torch.sparse_csr:
        value = value.to_sparse_coo()
    return value.index_select(0, index).coalesce()


def central_subset(data: Data, max_nodes: int | None) -> Data:
    """The induced subgraph on the ``max_nodes`` nodes nearest the centroid of ``pos``
    (all nodes when ``max_nodes`` is None or not smaller than N). Used by the smoke preset.
    Sparse node features (``x`` of a sparse ``.h5ad``) stay sparse."""
    n = data.num_nodes
    if max_nodes is None or max_nodes >= n:
        return data
    pos = to_numpy(data.pos).astype(np.float64)
    d = ((pos - pos.mean(axis=0)) ** 2).sum(axis=1)
    keep = np.sort(np.argsort(d, kind="stable")[:max_nodes])
    keep_t = torch.as_tensor(keep, dtype=torch.long)
    out = Data()
    for key, value in data.items():
        if key == "edge_index":
            continue
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.size(0) == n:
            out[key] = take_rows(value, keep_t)
        else:
            out[key] = value
    ei, _ = subgraph(keep_t, data.edge_index, relabel_nodes=True, num_nodes=n)
    out.edge_index = ei
    out.num_nodes = len(keep)
    return out


def require(data: Data, keys: tuple[str, ...], task: str) -> None:
    missing = [k for k in keys if getattr(data, k, None) is None]
    if missing:
        raise BenchConfigError(
            f"task {task!r} needs Data fields {missing}; load the dataset with fimp_data.load "
            "or attach them (x [N,F], pos [N,D], edge_index [2,E], y [N])"
        )


def masks_from_indices(n: int, *parts: np.ndarray) -> list[torch.Tensor]:
    out = []
    for p in parts:
        m = torch.zeros(n, dtype=torch.bool)
        m[torch.as_tensor(p, dtype=torch.long)] = True
        out.append(m)
    return out


def mask_entries(shape: tuple[int, int], ratio: float, rng: np.random.Generator) -> np.ndarray:
    """A bool ``[N, F]`` mask with ``round(ratio * F)`` (at least 1) random entries per row."""
    n, f = shape
    k = max(1, round(ratio * f))
    scores = rng.random((n, f))
    idx = np.argsort(scores, axis=1, kind="stable")[:, :k]
    mask = np.zeros((n, f), dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def load_node_data(
    task, preset, dataset: str | None, data: Data | None, keys: tuple[str, ...], max_nodes
) -> tuple[Data, str, str]:
    """``(data, name, sha256)`` of a node-level task: loaded (or given) data with the ``keys``
    it needs, the checksum of the whole dataset, then cut to ``max_nodes`` central nodes."""
    data, name = task.load_data(preset, dataset, data)
    require(data, keys, task.name)
    sha = _data.dataset_sha256(data)
    return central_subset(data, max_nodes), name, sha


def node_graph(data: Data, split: _data.SplitIndices, x: np.ndarray, **fields) -> Data:
    """The prepared graph: features ``x`` [N, F], ``fields`` (targets, labels, masks), the
    dataset's ``edge_index`` and ``pos``, and the split as ``train/val/test_mask`` [N]."""
    tr, va, te = masks_from_indices(data.num_nodes, split.train, split.val, split.test)
    return Data(
        x=torch.from_numpy(x),
        **fields,
        edge_index=data.edge_index,
        pos=data.pos.float(),
        train_mask=tr,
        val_mask=va,
        test_mask=te,
    )


def node_info(
    data: Data, name: str, sha: str, split: _data.SplitIndices, *, fill: str, **extra
) -> dict:
    """The record's ``task_info`` of a node-level task (``extra``: task-specific entries)."""
    return {
        "dataset": name,
        "dataset_sha256": sha,
        "split_id": split.split_id,
        "fill": fill,
        "num_nodes": data.num_nodes,
        "num_edges": int(data.edge_index.size(1)),
        **extra,
    }


def class_labels(data: Data) -> tuple[torch.Tensor, int]:
    """``(y [N] long, number of classes)``."""
    y = torch.as_tensor(to_numpy(data.y), dtype=torch.long)
    return y, int(y.max()) + 1
