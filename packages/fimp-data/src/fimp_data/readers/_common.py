"""Shared checks for the readers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    CorruptFileError,
    DataFileNotFoundError,
    DuplicateIdError,
    EmptySelectionError,
    FIMPDataError,
    NonFiniteError,
)


@contextlib.contextmanager
def parsing(path: Path, what: str):
    """Turn any failure of a third-party parser (h5py, numpy, pandas, nibabel, PIL) on ``path``
    into one :class:`CorruptFileError` naming the file and what looks wrong."""
    try:
        yield
    except FIMPDataError:
        raise
    except Exception as err:  # the parsers raise OSError, ValueError, KeyError, EOFError, ...
        if path.is_dir():
            why = "it is a directory, not a file"
        elif path.stat().st_size == 0:
            why = "the file is empty (0 bytes)"
        else:
            why = f"{path.stat().st_size:,} bytes: truncated, corrupt or not a {what}"
        raise CorruptFileError(
            f"{path}: cannot read it as a {what} ({why}; {type(err).__name__}: {err}); "
            "re-download or re-export it"
        ) from err


def existing_path(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataFileNotFoundError(
            f"{what} {str(p)!r} does not exist; check the path (relative paths are resolved "
            f"from {os.getcwd()!r})"
        )
    return p


def check_finite(values: np.ndarray, what: str, row_ids: Sequence[str] | None = None) -> None:
    finite = np.isfinite(values)
    if finite.all():
        return
    bad_rows = np.flatnonzero(~finite.reshape(finite.shape[0], -1).all(axis=1))
    names = (
        [str(row_ids[i]) for i in bad_rows[:5]] if row_ids is not None else bad_rows[:5].tolist()
    )
    raise NonFiniteError(
        f"{what} holds NaN/inf in {len(bad_rows)} rows (first: {names}); remove or impute those "
        "values before loading"
    )


def check_unique(ids: Sequence[Any], what: str, fix: str) -> None:
    seen: set[Any] = set()
    dups = []
    for i in ids:
        if i in seen:
            dups.append(i)
        seen.add(i)
    if dups:
        raise DuplicateIdError(
            f"{len(dups)} duplicate {what} (first: {[str(d) for d in dups[:5]]}); {fix}"
        )


def check_nonempty(n: int, what: str, fix: str) -> None:
    if n == 0:
        raise EmptySelectionError(f"no {what} selected; {fix}")


def encode_labels(values: Sequence[Any], categories: Sequence[Any] | None = None):
    """Integer codes [N] (int64) and the label names (categories order, else sorted unique)."""
    import pandas as pd

    ser = pd.Series(list(values) if not isinstance(values, pd.Series) else values)
    if categories is None:
        categories = sorted(ser.dropna().astype(str).unique())
    cat = pd.Categorical(
        ser.astype(str).where(ser.notna()), categories=[str(c) for c in categories]
    )
    return np.asarray(cat.codes, dtype=np.int64), [str(c) for c in cat.categories]


def make_data(**attrs: Any):
    import torch
    from torch_geometric.data import Data

    out = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        out[key] = value
    return Data(**out)
