"""spatial_block_split(stratify=...): blocks cut by class, assigned per class, every val/test
class also in train; without stratify the split is exactly what it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from fimp_data import group_split, spatial_block_split
from fimp_data.errors import SplitError


def _toy(n=2000, seed=0, n_classes=7):
    """Uniform points in [0, 100]^2; labels: a few spatial stripes mixed with random labels."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 100, size=(n, 2)).astype(np.float32)
    y = np.where(
        rng.random(n) < 0.5, (pos[:, 0] // (100 / n_classes)), rng.integers(0, n_classes, n)
    )
    d = Data(x=torch.zeros(n, 3), pos=torch.from_numpy(pos), y=torch.from_numpy(y.astype(np.int64)))
    d.dataset, d.sha256 = "toy", "ab" * 32
    return d


def _parts(split):
    return [p.numpy() for p in (split.train, split.val, split.test)]


def _part_of(split):
    part = np.full(split.num_items, -1)
    for i, p in enumerate(_parts(split)):
        part[p] = i
    return part


def _cells(d, split):
    xy = d.pos.numpy().astype(np.float64)[:, :2]
    cell = np.floor((xy - xy.min(axis=0)) / split.params["block_size"]).astype(np.int64)
    return cell[:, 0] * 10_000 + cell[:, 1]


def test_every_val_and_test_class_is_in_train():
    d = _toy()
    y = d.y.numpy()
    for seed in range(4):
        s = spatial_block_split(d, num_blocks=100, val=0.2, test=0.2, seed=seed, stratify="y")
        tr, va, te = _parts(s)
        assert te.size > 0 and va.size > 0
        assert set(y[te]) <= set(y[tr]) and set(y[va]) <= set(y[tr])
        assert s.params["stratified"] is True
        # each class is split about 60/20/20 (whole blocks of ~15 nodes)
        for c in np.unique(y):
            n_c = int((y == c).sum())
            assert abs(int((y[te] == c).sum()) - 0.2 * n_c) < 0.1 * n_c
            assert abs(int((y[va] == c).sum()) - 0.2 * n_c) < 0.1 * n_c


def test_blocks_never_span_classes_and_parts_are_disjoint():
    d = _toy()
    y = d.y.numpy()
    s = spatial_block_split(d, num_blocks=50, val=0.2, test=0.2, seed=1, stratify=d.y)
    tr, va, te = _parts(s)
    allp = np.concatenate([tr, va, te])
    assert allp.size == d.num_nodes and np.unique(allp).size == d.num_nodes  # no node twice
    part, cell = _part_of(s), _cells(d, s)
    blocks = set(zip(cell.tolist(), y.tolist(), strict=True))
    assert s.params["num_blocks"] == len(blocks) > np.unique(cell).size
    for c, k in blocks:  # a (cell, class) block lies wholly in one part
        assert np.unique(part[(cell == c) & (y == k)]).size == 1
    # grid cells themselves are cut: some cell has nodes in two parts
    assert any(np.unique(part[cell == c]).size > 1 for c in np.unique(cell))


def test_stratify_forms_and_determinism():
    d = _toy(600)
    y = d.y.numpy()
    ref = spatial_block_split(d, num_blocks=30, seed=2, stratify="y")
    for labels in (y, d.y, y.tolist(), [f"class-{v}" for v in y]):
        assert spatial_block_split(d, num_blocks=30, seed=2, stratify=labels).split_id == (
            ref.split_id
        )
    # a pos array with explicit labels gives the same indices
    arr = spatial_block_split(d.pos.numpy(), num_blocks=30, seed=2, stratify=y)
    assert arr.split_id == ref.split_id and arr.dataset_sha256 is None
    assert spatial_block_split(d, num_blocks=30, seed=3, stratify="y").split_id != ref.split_id
    assert spatial_block_split(d, num_blocks=30, seed=2).split_id != ref.split_id


#: split ids computed with the code before ``stratify`` existed (must never change)
_BEFORE = {
    "toy2000 seed0": "7f5ed4d1400d0e00",
    "toy2000 seed1": "224c212230adf626",
    "toy2000 seed5": "0412c2b423c2b5ee",
    "toy2000 nb100 v0.2 t0.2 s3": "5a486d7abc9b2fe1",
    "toy400 groups bs25 s0": "373e86149b1c471c",
    "toy400 array pos s2": "641e522a86a5369e",
    "group_split int": "553206282ae036ce",
}


def _uniform(n, seed=0):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 100, size=(n, 2)).astype(np.float32)
    return Data(x=torch.zeros(n, 3), pos=torch.from_numpy(pos))


def test_without_stratify_split_ids_are_unchanged():
    d = _uniform(2000)
    got = {f"toy2000 seed{s}": spatial_block_split(d, seed=s).split_id for s in (0, 1, 5)}
    got["toy2000 nb100 v0.2 t0.2 s3"] = spatial_block_split(
        d, num_blocks=100, val=0.2, test=0.2, seed=3, stratify=None
    ).split_id
    d4 = _uniform(400)
    groups = np.repeat(["slideA", "slideB"], 200)
    got["toy400 groups bs25 s0"] = spatial_block_split(
        d4, groups=groups, block_size=25.0, seed=0
    ).split_id
    got["toy400 array pos s2"] = spatial_block_split(d4.pos.numpy(), seed=2).split_id
    got["group_split int"] = group_split(
        300, groups=np.arange(300) % 17, val=0.1, test=0.2, seed=4
    ).split_id
    assert got == _BEFORE
    assert "stratified" not in spatial_block_split(d, seed=0).params


def test_single_block_class_goes_wholly_to_train_and_two_blocks_keep_one():
    d = _toy(400)
    y = d.y.numpy().copy()
    pos = d.pos.numpy().copy()
    # class 50: five images at one spot (one block); class 60: two far-apart spots (two blocks)
    pos[:5] = [10.0, 10.0]
    y[:5] = 50
    pos[5:8], pos[8:11] = [90.0, 90.0], [10.0, 90.0]
    y[5:11] = 60
    d.pos, d.y = torch.from_numpy(pos), torch.from_numpy(y)
    for seed in range(6):
        # targets so large that, without the rules, both classes would lose all their train blocks
        s = spatial_block_split(d, block_size=10.0, val=0.3, test=0.6, seed=seed, stratify="y")
        part = _part_of(s)
        assert (part[:5] == 0).all()
        assert (part[5:11] == 0).any() and np.unique(part[5:8]).size == 1
        tr, va, te = _parts(s)
        assert set(y[te]) <= set(y[tr]) and set(y[va]) <= set(y[tr])


def test_bad_stratify_raises_split_error():
    d = _toy(100)
    with pytest.raises(SplitError, match="one label per node"):
        spatial_block_split(d, stratify=d.y[:50])
    with pytest.raises(SplitError, match="one label per node"):
        spatial_block_split(d, stratify=np.zeros((100, 2)))
    with pytest.raises(SplitError, match='"y"'):
        spatial_block_split(d, stratify="label")
    with pytest.raises(SplitError, match="needs a Data"):
        spatial_block_split(d.pos.numpy(), stratify="y")
    with pytest.raises(SplitError, match="needs a Data"):
        spatial_block_split(Data(pos=d.pos), stratify="y")
