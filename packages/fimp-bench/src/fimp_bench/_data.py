"""The bench's only door to fimp_data: loading datasets and computing splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Data

from fimp_bench.errors import BenchConfigError, UnknownNameError

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


def load_dataset(name: str, *, root: str | None = None, download: bool = True) -> Data | list[Data]:
    """``fimp_data.load(name, root=root, download=download)``.

    The bench downloads a registered dataset's missing files by default (verified by sha256,
    kept in fimp_data's cache, so later runs read the cache); ``download=False`` (CLI
    ``--no-download``) fails instead. Embedded datasets never need the network; user-supplied
    ones (``fmri-ukb``, ``image-mapillary``, ``register_local`` entries) are read from ``root``
    (CLI ``--data-root``) or from their registered paths. fimp_data's errors come back as
    :class:`~fimp_bench.errors.BenchConfigError` (:class:`UnknownNameError` for an unknown name)
    naming the dataset, so the CLI reports them in one line.
    """
    import fimp_data
    from fimp_data.errors import DataFileNotFoundError, FIMPDataError, UnknownDatasetError

    try:
        return fimp_data.load(name, root=root, download=download)
    except UnknownDatasetError as exc:
        raise UnknownNameError(str(exc)) from exc
    except FIMPDataError as exc:
        msg = str(exc)
        if repr(name) not in msg:
            msg = f"dataset {name!r}: {msg}"
        if isinstance(exc, DataFileNotFoundError):
            if fimp_data.get_entry(name).user_supplied:
                msg += " [fimp-bench run: pass --data-root <the folder with these files>]"
            elif not download:
                msg += " [fimp-bench run: drop --no-download to fetch it, verified by sha256]"
        raise BenchConfigError(msg) from exc


#: Rows of a sparse tensor densified at a time while hashing it.
_HASH_ROWS = 1024


def _update_tensor(h: Any, v: torch.Tensor) -> None:
    """Hash the bytes of ``v`` as a dense C-contiguous array: a sparse tensor is densified a
    block of rows at a time, so it hashes like its dense form without ever being dense whole."""
    if v.layout == torch.strided:
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return
    from fimp_bench.tasks._common import sparse_csr

    m = sparse_csr(v)
    dtype = v.dtype
    for start in range(0, m.shape[0], _HASH_ROWS):
        block = torch.from_numpy(m[start : start + _HASH_ROWS].toarray()).to(dtype)
        h.update(block.numpy().tobytes())


def dataset_sha256(data: Data | list[Data]) -> str:
    """The dataset checksum fimp_data attaches (``data.sha256``), or a hash of the tensors
    (a sparse ``x`` hashes like its dense form)."""
    first = data[0] if isinstance(data, list) else data
    sha = getattr(first, "sha256", None)
    if isinstance(sha, str) and len(sha) == 64:
        return sha
    h = hashlib.sha256()
    for d in data if isinstance(data, list) else [data]:
        for key in ("x", "pos", "y", "edge_index"):
            v = getattr(d, key, None)
            if isinstance(v, torch.Tensor):
                _update_tensor(h, v)
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
