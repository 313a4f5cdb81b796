"""The bench's only door to fimp_data: loading datasets and computing splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from fimp_bench.errors import BenchConfigError

__all__ = ["SplitIndices", "dataset_sha256", "list_datasets", "load_dataset", "split_nodes"]


@dataclass(frozen=True)
class SplitIndices:
    """Train/val/test index arrays plus the split's identity (for the record)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    split_id: str


def list_datasets() -> list[str]:
    import fimp_data

    return list(fimp_data.list_datasets())


def load_dataset(name: str) -> Data | list[Data]:
    """``fimp_data.load(name)`` (embedded datasets need no network)."""
    import fimp_data

    return fimp_data.load(name)


def dataset_sha256(data: Data | list[Data]) -> str:
    """The dataset checksum fimp_data attaches (``data.sha256``), or a hash of the tensors."""
    first = data[0] if isinstance(data, list) else data
    sha = getattr(first, "sha256", None)
    if isinstance(sha, str) and len(sha) == 64:
        return sha
    h = hashlib.sha256()
    for d in data if isinstance(data, list) else [data]:
        for key in ("x", "pos", "y", "edge_index"):
            v = getattr(d, key, None)
            if isinstance(v, torch.Tensor):
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def split_nodes(
    kind: str, data: Any, *, seed: int, val: float, test: float, **options: Any
) -> SplitIndices:
    """A split from fimp_data of the nodes of ``data`` (a Data) or of graphs (a list of Data):
    ``kind`` = ``spatial_block`` (blocks of ``pos``), ``group`` (by ``group``, e.g. subject) or
    ``random``. ``options`` go to the fimp_data function as they are (e.g. ``num_blocks=`` and
    ``stratify=`` of ``spatial_block_split``)."""
    import fimp_data

    fn = {
        "spatial_block": fimp_data.spatial_block_split,
        "group": fimp_data.group_split,
        "random": fimp_data.random_split,
    }.get(kind)
    if fn is None:
        raise BenchConfigError(f"unknown split kind {kind!r}")
    split = fn(data, val=val, test=test, seed=seed, **options)
    parts = [
        np.asarray(p.cpu().numpy(), dtype=np.int64) for p in (split.train, split.val, split.test)
    ]
    return SplitIndices(parts[0], parts[1], parts[2], f"{split.method}-{split.split_id}")
