"""Splits: disjoint, reproducible, saved with checksum + seed, spatial blocks leak far less."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from fimp_data import (
    Split,
    group_split,
    knn_graph,
    load_split,
    random_split,
    spatial_block_split,
)
from fimp_data.errors import SplitError


def _tissue(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 100, size=(n, 2)).astype(np.float32)
    d = Data(x=torch.zeros(n, 3), pos=torch.from_numpy(pos))
    d.edge_index = knn_graph(pos, 6)
    d.dataset, d.sha256 = "toy", "ab" * 32
    return d


def _check_partition(split: Split, n: int):
    parts = [split.train, split.val, split.test]
    allp = torch.cat(parts)
    assert allp.numel() == n and torch.unique(allp).numel() == n
    for p in parts:
        assert p.dtype == torch.long and bool((p[1:] > p[:-1]).all())
    m = split.masks()
    assert (m["train"].int() + m["val"].int() + m["test"].int() == 1).all()


def _leakage(split: Split, edge_index: torch.Tensor) -> float:
    """Fraction of the in-neighbours of test nodes that are training nodes."""
    m = split.masks()
    to_test = m["test"][edge_index[1]]
    return float(m["train"][edge_index[0][to_test]].float().mean())


def test_random_split_reproducible_and_sized():
    d = _tissue()
    a, b = random_split(d, seed=3), random_split(d, seed=3)
    _check_partition(a, d.num_nodes)
    assert a.split_id == b.split_id and torch.equal(a.test, b.test)
    assert random_split(d, seed=4).split_id != a.split_id
    assert (a.test.numel(), a.val.numel()) == (400, 200)
    assert a.dataset_sha256 == "ab" * 32 and a.seed == 3 and a.dataset == "toy"


def test_spatial_block_split_leaks_far_less_than_random():
    d = _tissue()
    blocks = spatial_block_split(d, seed=0)
    _check_partition(blocks, d.num_nodes)
    assert 0.1 < blocks.test.numel() / d.num_nodes < 0.3
    rand = random_split(d, seed=0)
    leak_block, leak_rand = _leakage(blocks, d.edge_index), _leakage(rand, d.edge_index)
    assert leak_rand > 0.6  # ~70% of a random test node's neighbours are training nodes
    assert leak_block < leak_rand / 3
    assert blocks.params["block_size"] == pytest.approx(100 / np.sqrt(66), rel=0.05)  # N/30 blocks
    assert spatial_block_split(d, num_blocks=100).params["block_size"] == pytest.approx(
        10.0, rel=0.05
    )
    assert spatial_block_split(d, seed=0).split_id == blocks.split_id
    assert spatial_block_split(d, seed=1).split_id != blocks.split_id


def test_spatial_block_split_respects_groups():
    d = _tissue(400)
    groups = np.repeat(["slideA", "slideB"], 200)
    s = spatial_block_split(d, groups=groups, block_size=25.0, seed=0)
    _check_partition(s, 400)
    assert s.params["num_blocks"] > 16  # the same 4x4 grid, separately per slide
    with pytest.raises(SplitError, match="labels"):
        spatial_block_split(d, groups=groups[:10])
    with pytest.raises(SplitError, match="pos"):
        spatial_block_split(Data(x=torch.zeros(3, 1)))


def test_group_split_graph_level():
    graphs = []
    for s in range(10):
        g = Data(x=torch.zeros(4, 2))
        g.group, g.sha256, g.dataset = f"sub{s}", "cd" * 32, "toy-fmri"
        graphs.append(g)
    s = group_split(graphs, seed=0)
    _check_partition(s, 10)
    assert (s.test.numel(), s.val.numel()) == (2, 1)
    assert s.dataset_sha256 == "cd" * 32
    # node-level with repeated group labels: whole groups stay together
    labels = np.repeat(list("abcdefg"), 5)
    s2 = group_split(35, groups=labels, seed=1)
    part_of = np.zeros(35, dtype=int)
    for k, part in enumerate((s2.train, s2.val, s2.test)):
        part_of[part.numpy()] = k
    for label in set(labels):
        assert len(set(part_of[labels == label])) == 1
    # few groups: still a non-empty test and train part
    s3 = group_split(6, groups=["a", "a", "a", "b", "b", "b"], seed=0)
    assert s3.test.numel() == 3 and s3.train.numel() == 3
    with pytest.raises(SplitError, match="at least 2 groups"):
        group_split(3, groups=["a", "a", "a"])
    with pytest.raises(SplitError, match="needs groups"):
        group_split([Data(x=torch.zeros(1, 1))] * 3)


def test_save_load_roundtrip_and_tamper(tmp_path):
    d = _tissue(300)
    s = spatial_block_split(d, seed=5)
    path = s.save(tmp_path / "splits" / "s.json")
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]  # no temp file left
    back = load_split(path, data=d)
    assert back.split_id == s.split_id and torch.equal(back.train, s.train)
    assert back.seed == 5 and back.dataset_sha256 == d.sha256 and back.method == "spatial_block"
    other = _tissue(300)
    other.sha256 = "ef" * 32
    with pytest.raises(SplitError, match="make a new split"):
        load_split(path, data=other)
    raw = json.loads(path.read_text())
    raw["test"] = raw["test"][1:]
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(SplitError, match="edited or corrupted"):
        load_split(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(SplitError, match="JSON"):
        load_split(tmp_path / "junk.json")


def test_bad_fractions():
    with pytest.raises(SplitError, match="no training"):
        random_split(10, val=0.5, test=0.5)
    with pytest.raises(SplitError, match="fraction"):
        random_split(10, test=-0.1)
