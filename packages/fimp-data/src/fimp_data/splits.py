"""Train / val / test splits that are reproducible, saved with the dataset checksum and seed.

Every function returns a :class:`Split` of sorted ``long`` index tensors. The same input and seed
give the same split on every platform (``numpy.random.default_rng(seed)``). ``split_id`` is a hash
of the three index sets and the item count, so two runs can check they used the same split.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import EmptySelectionError, SplitError
from .registry import atomic_write_text

__all__ = ["Split", "group_split", "load_split", "random_split", "spatial_block_split"]

SPLIT_FORMAT = "fimp-split"
SPLIT_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Disjoint ``train`` / ``val`` / ``test`` index sets over ``num_items`` nodes or graphs.

    Attributes:
        train, val, test: sorted ``torch.long`` indices.
        num_items: number of nodes (node-level) or graphs (graph-level) split.
        method: ``"random"``, ``"spatial_block"`` or ``"group"``.
        seed: the seed used.
        dataset: dataset name, if known. dataset_sha256: its checksum, if known.
        params: the method's options (fractions, block size, ...).
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    num_items: int
    method: str
    seed: int
    dataset: str | None = None
    dataset_sha256: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def split_id(self) -> str:
        """16 hex digits of sha256 over the item count and the three sorted index lists."""
        h = hashlib.sha256(f"{self.num_items};".encode())
        for part in (self.train, self.val, self.test):
            h.update(",".join(map(str, part.tolist())).encode() + b";")
        return h.hexdigest()[:16]

    def masks(self) -> dict[str, torch.Tensor]:
        """Boolean masks ``{"train", "val", "test"}`` of shape ``[num_items]``."""
        out = {}
        for name in ("train", "val", "test"):
            m = torch.zeros(self.num_items, dtype=torch.bool)
            m[getattr(self, name)] = True
            out[name] = m
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what :meth:`save` writes)."""
        return {
            "format": SPLIT_FORMAT,
            "version": SPLIT_VERSION,
            "split_id": self.split_id,
            "method": self.method,
            "seed": self.seed,
            "dataset": self.dataset,
            "dataset_sha256": self.dataset_sha256,
            "num_items": self.num_items,
            "params": dict(self.params),
            "train": self.train.tolist(),
            "val": self.val.tolist(),
            "test": self.test.tolist(),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the split as JSON atomically (temp file + ``os.replace``)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def check(self, data: Any) -> None:
        """Raise :class:`SplitError` unless ``data`` (Data or list[Data]) is what was split."""
        n, sha, _ = _describe(data)
        if n != self.num_items:
            raise SplitError(f"split {self.split_id} covers {self.num_items} items, data has {n}")
        if self.dataset_sha256 and sha and sha != self.dataset_sha256:
            raise SplitError(
                f"split {self.split_id} was made for dataset sha256 {self.dataset_sha256}, the "
                f"data has {sha}; make a new split for this data"
            )


def load_split(path: str | os.PathLike[str], *, data: Any = None) -> Split:
    """Read a split written by :meth:`Split.save`; checks its id, and ``data`` if given."""
    path = Path(path)
    if not path.is_file():
        from .errors import DataFileNotFoundError

        raise DataFileNotFoundError(f"split file {str(path)!r} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SplitError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != SPLIT_FORMAT:
        raise SplitError(f"{path}: not a fimp split file (format != {SPLIT_FORMAT!r})")
    if raw.get("version") != SPLIT_VERSION:
        raise SplitError(f"{path}: split version {raw.get('version')!r} not supported")
    try:
        split = Split(
            train=torch.tensor(raw["train"], dtype=torch.long),
            val=torch.tensor(raw["val"], dtype=torch.long),
            test=torch.tensor(raw["test"], dtype=torch.long),
            num_items=int(raw["num_items"]),
            method=str(raw["method"]),
            seed=int(raw["seed"]),
            dataset=raw.get("dataset"),
            dataset_sha256=raw.get("dataset_sha256"),
            params=raw.get("params") or {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SplitError(f"{path}: malformed split ({exc})") from exc
    if split.split_id != raw.get("split_id"):
        raise SplitError(
            f"{path}: split_id {raw.get('split_id')!r} does not match its indices "
            f"({split.split_id}); the file was edited or corrupted"
        )
    _validate_parts(split.train.numpy(), split.val.numpy(), split.test.numpy(), split.num_items)
    if data is not None:
        split.check(data)
    return split


def _describe(data: Any) -> tuple[int, str | None, str | None]:
    """(number of items, dataset sha256, dataset name) of an int, Data or list[Data]."""
    if isinstance(data, int | np.integer):
        return int(data), None, None
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if len(data) == 0:
            raise EmptySelectionError("cannot split an empty list of graphs")
        first = data[0]
        return len(data), getattr(first, "sha256", None), getattr(first, "dataset", None)
    n = getattr(data, "num_nodes", None)
    if n is None:
        raise SplitError(
            f"cannot split {type(data).__name__}; pass a Data, a list of Data or an int"
        )
    return int(n), getattr(data, "sha256", None), getattr(data, "dataset", None)


def _fractions(val: float, test: float) -> None:
    for name, v in (("val", val), ("test", test)):
        if not 0.0 <= v < 1.0:
            raise SplitError(f"{name} fraction must be in [0, 1), got {v}")
    if val + test >= 1.0:
        raise SplitError(f"val + test = {val + test} leaves no training data; lower them")


def _validate_parts(train: np.ndarray, val: np.ndarray, test: np.ndarray, n: int) -> None:
    allp = np.concatenate([train, val, test])
    if allp.size and (allp.min() < 0 or allp.max() >= n):
        raise SplitError(f"split indices out of range for {n} items")
    if np.unique(allp).size != allp.size:
        raise SplitError("split parts overlap")
    if train.size == 0:
        raise SplitError("the training part is empty; lower val/test or use more items/groups")


def _make(
    parts: tuple[np.ndarray, np.ndarray, np.ndarray],
    data: Any,
    method: str,
    seed: int,
    params: dict[str, Any],
) -> Split:
    n, sha, name = _describe(data)
    train, val, test = (np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
    _validate_parts(train, val, test, n)
    return Split(
        train=torch.from_numpy(train),
        val=torch.from_numpy(val),
        test=torch.from_numpy(test),
        num_items=n,
        method=method,
        seed=int(seed),
        dataset=name,
        dataset_sha256=sha,
        params=params,
    )


def random_split(data: Any, *, val: float = 0.1, test: float = 0.2, seed: int = 0) -> Split:
    """Uniformly random split of nodes (``Data``), graphs (``list[Data]``) or ``range(n)`` (int).

    ``round(test * n)`` items go to test, ``round(val * n)`` to val, the rest to train.
    """
    _fractions(val, test)
    n, _, _ = _describe(data)
    if n == 0:
        raise EmptySelectionError("cannot split 0 items")
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(test * n), round(val * n)
    parts = (perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test])
    return _make(parts, data, "random", seed, {"val": val, "test": test})


def _fill_parts(
    part_of_unit: np.ndarray, order: np.ndarray, counts: np.ndarray, n: int, val: float, test: float
) -> None:
    """Visit the units in ``order`` and fill test, then val, with whole units up to their target
    node counts (``test * n``, ``val * n``); writes 1 (val) / 2 (test) into ``part_of_unit``, the
    units left at 0 are train."""
    filled = {1: 0, 2: 0}
    target = {2: test * n, 1: val * n}
    for u in order:
        for part in (2, 1):
            # take the unit while it brings the part closer to its target
            if target[part] > 0 and abs(filled[part] + counts[u] - target[part]) < abs(
                filled[part] - target[part]
            ):
                part_of_unit[u] = part
                filled[part] += counts[u]
                break


def _assign_units(
    unit_of: np.ndarray,
    val: float,
    test: float,
    seed: int,
    stratum_of: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle units (blocks or groups) and fill test, then val, with whole units up to their
    target node counts; the remaining units are train.

    With ``stratum_of`` (``[N]`` integer class codes; no unit may span two strata) the filling is
    done per stratum, with targets of ``val`` / ``test`` times the stratum's node count, visiting
    its units in the same shuffled order. A stratum with a single unit stays wholly in train; a
    stratum whose units were all taken gets one back in train (its last val unit in the shuffled
    order, else its last test unit), so every stratum keeps training nodes.
    """
    units, inverse, counts = np.unique(unit_of, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.random.default_rng(seed).permutation(units.shape[0])
    part_of_unit = np.zeros(units.shape[0], dtype=np.int64)  # 0 train, 1 val, 2 test
    if stratum_of is None:
        _fill_parts(part_of_unit, order, counts, unit_of.shape[0], val, test)
    else:
        stratum_of_unit = np.zeros(units.shape[0], dtype=np.int64)
        stratum_of_unit[inverse] = stratum_of
        if not np.array_equal(stratum_of_unit[inverse], stratum_of):
            raise SplitError("a block spans two strata")  # guarded by the callers' unit codes
        ordered_strata = stratum_of_unit[order]
        for c in np.unique(stratum_of_unit):
            sel = order[ordered_strata == c]
            if sel.shape[0] < 2:
                continue  # a single block: wholly train
            _fill_parts(part_of_unit, sel, counts, int(counts[sel].sum()), val, test)
            parts = part_of_unit[sel]
            if not (parts == 0).any():
                back = sel[parts == 1] if (parts == 1).any() else sel[parts == 2]
                part_of_unit[back[-1]] = 0
    node_part = part_of_unit[inverse]
    return tuple(np.flatnonzero(node_part == p) for p in (0, 1, 2))  # type: ignore[return-value]


def spatial_block_split(
    data: Any,
    *,
    block_size: float | None = None,
    num_blocks: int | None = None,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    groups: Sequence[Any] | np.ndarray | None = None,
    stratify: Sequence[Any] | np.ndarray | torch.Tensor | str | None = None,
) -> Split:
    """Split nodes by square grid blocks of ``pos``: whole blocks go to train, val or test.

    Neighbours of a test node then mostly lie in the same (test) block, so little of a test
    node's neighbourhood is training data (unlike :func:`random_split`).

    Args:
        data: a ``Data`` with ``pos [N, 2|3]`` (only the first two columns are used), or an array
            ``pos`` itself (then no dataset checksum is recorded).
        block_size: side of a block in ``pos`` units (degrees for (lat, lon)). Default: the side
            that tiles the bounding box into about ``num_blocks`` squares.
        num_blocks: target block count when ``block_size`` is None; default
            ``clip(N / 30, 10, 100)`` (about 30 nodes per block on small data, 100 blocks on
            large data).
        val, test: target fractions of nodes; whole blocks are added in random order while they
            bring a part closer to its target, so the achieved fractions are approximate.
        groups: optional ``[N]`` sample / slide ids: blocks never span two groups (default: the
            data's ``group`` attribute if it has one per node).
        stratify: optional ``[N]`` class labels (array, tensor or list), or ``"y"`` for
            ``data.y``. Blocks then never span two classes (a grid block holding three classes
            becomes three blocks), and blocks are assigned per class: each class's blocks are
            visited in the seed's shuffled order and fill that class's val / test targets
            (``val`` / ``test`` times its node count), so every class is split approximately
            in the given fractions, in whole blocks. A class with a single block goes wholly to
            train; a class with two or more blocks always keeps at least one block in train
            (if all were taken, its last val block, else its last test block, goes back), so
            every class in val or test is also in train. Small classes with few, large blocks
            may get no val or test block at all, so the achieved fractions can fall below the
            targets (use a smaller block); on tiny data val or test can even come out empty.
            ``None`` (default): the unstratified split, exactly as without this option.

    Returns:
        :class:`Split` with ``params`` holding the block size used (and ``stratified: True``
        when ``stratify`` was given).
    """
    _fractions(val, test)
    if isinstance(data, np.ndarray | torch.Tensor):
        pos, holder = data, int(data.shape[0])
    else:
        pos, holder = getattr(data, "pos", None), data
        if pos is None:
            raise SplitError("spatial_block_split needs node coordinates: the data has no `pos`")
    pos = pos.detach().cpu().numpy() if isinstance(pos, torch.Tensor) else np.asarray(pos)
    pos = pos.astype(np.float64)
    if pos.ndim != 2 or pos.shape[1] < 2 or pos.shape[0] == 0:
        raise SplitError(f"pos must be [N, 2|3] with N > 0, got {pos.shape}")
    if not np.isfinite(pos).all():
        raise SplitError("pos holds NaN/inf; fix the coordinates before splitting")
    xy = pos[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    if block_size is None:
        if num_blocks is None:
            num_blocks = int(np.clip(xy.shape[0] // 30, 10, 100))
        if num_blocks < 3:
            raise SplitError(f"num_blocks must be >= 3, got {num_blocks}")
        extent = np.maximum(hi - lo, 1e-12)
        block_size = float(math.sqrt(extent[0] * extent[1] / num_blocks)) or float(extent.max())
        if block_size <= 0 or not np.isfinite(block_size):
            block_size = float(extent.max() / math.sqrt(num_blocks))
    if not block_size > 0:
        raise SplitError(f"block_size must be > 0, got {block_size}")
    cell = np.floor((xy - lo) / block_size).astype(np.int64)
    if groups is None and holder is data:
        groups = getattr(data, "group", None)
        if groups is not None and (isinstance(groups, str) or len(groups) != xy.shape[0]):
            groups = None  # a graph-level id, not one label per node
    if groups is None:
        group_codes = np.zeros(xy.shape[0], dtype=np.int64)
    else:
        g = np.asarray([str(v) for v in groups])
        if g.shape[0] != xy.shape[0]:
            raise SplitError(f"groups has {g.shape[0]} labels for {xy.shape[0]} nodes")
        group_codes = np.unique(g, return_inverse=True)[1].reshape(-1)
    ncx = int(cell[:, 0].max()) + 1
    ncy = int(cell[:, 1].max()) + 1
    unit = (group_codes * ncx + cell[:, 0]) * ncy + cell[:, 1]
    strata = None
    if stratify is not None:
        strata = _stratum_codes(stratify, holder, xy.shape[0])
        # blocks never span two classes: the class code becomes the unit's leading digit
        unit = strata * (int(unit.max()) + 1) + unit
    parts = _assign_units(unit, val, test, seed, strata)
    params: dict[str, Any] = {
        "val": val,
        "test": test,
        "block_size": block_size,
        "num_blocks": int(np.unique(unit).size),
    }
    if strata is not None:
        params["stratified"] = True
    return _make(parts, holder, "spatial_block", seed, params)


def _stratum_codes(stratify: Any, holder: Any, n: int) -> np.ndarray:
    """``[n]`` integer class codes of ``stratify`` (labels, or ``"y"`` for ``holder.y``)."""
    if isinstance(stratify, str):
        if stratify != "y":
            raise SplitError(f'stratify must be [N] labels or "y", got {stratify!r}')
        labels = getattr(holder, "y", None)
        if labels is None:
            raise SplitError('stratify="y" needs a Data with per-node labels `y`')
    else:
        labels = stratify
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise SplitError(f"stratify has shape {tuple(arr.shape)}; need one label per node ({n})")
    if arr.dtype.kind not in "biuf":
        arr = np.asarray([str(v) for v in arr])
    return np.unique(arr, return_inverse=True)[1].reshape(-1).astype(np.int64)


def group_split(
    data: Any,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
) -> Split:
    """Split by group (subject, slide, region): every group lies wholly in one part.

    Args:
        data: ``list[Data]`` (graph-level; groups default to each item's ``group``), a ``Data``
            (node-level; groups default to its per-node ``group``), or an int with ``groups``.
        groups: ``[num_items]`` group labels, overriding the default.
        val, test: target fractions of items; groups are taken in random order while they bring
            a part closer to its target. With few groups, at least one goes to test when
            ``test > 0`` and one stays in train.
    """
    _fractions(val, test)
    n, _, _ = _describe(data)
    if groups is None:
        if isinstance(data, Sequence) and not isinstance(data, str | bytes):
            groups = [getattr(d, "group", None) for d in data]
        else:
            groups = getattr(data, "group", None)
        if groups is None or any(g is None for g in groups):
            raise SplitError(
                "group_split needs groups: pass groups=[...] or set `group` on the data"
            )
    g = np.asarray([str(x) for x in groups])
    if g.shape[0] != n:
        raise SplitError(f"groups has {g.shape[0]} labels for {n} items")
    codes = np.unique(g, return_inverse=True)[1].reshape(-1)
    n_groups = int(codes.max()) + 1
    if n_groups < 2:
        raise SplitError(f"group_split needs at least 2 groups, got {n_groups}")
    train, val_idx, test_idx = _assign_units(codes, val, test, seed)
    if (test > 0 and test_idx.size == 0) or train.size == 0:
        # guarantee a non-empty test and train part with few, large groups
        order = np.random.default_rng(seed).permutation(n_groups)
        test_g = order[:1] if test > 0 else order[:0]
        val_g = order[1:2] if val > 0 and n_groups > 2 else order[:0]
        part = np.zeros(n_groups, dtype=np.int64)
        part[val_g], part[test_g] = 1, 2
        node_part = part[codes]
        train, val_idx, test_idx = (np.flatnonzero(node_part == p) for p in (0, 1, 2))
    return _make((train, val_idx, test_idx), data, "group", seed, {"val": val, "test": test})
