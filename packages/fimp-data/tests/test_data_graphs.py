"""Graph builders against slow brute-force references (ties, duplicates, groups, haversine)."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations

import numpy as np
import pytest
import torch

from fimp_data import delaunay_graph, knn_graph, radius_graph
from fimp_data.errors import GraphBuildError, NonFiniteError, ShapeError
from fimp_data.graphs import EARTH_RADIUS_KM


def _hav_ref(t, s):
    lat1, lon1 = np.radians(t[0]), np.radians(t[1])
    lat2, lon2 = np.radians(s[0]), np.radians(s[1])
    return (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )


def _dist_key(pos, i, j, metric):
    if metric == "haversine":
        return _hav_ref(pos[i], pos[j])
    return ((pos[j] - pos[i]) ** 2).sum()


def knn_ref(pos, k, groups=None, metric="euclidean"):
    pos = np.asarray(pos, dtype=np.float64)
    n = len(pos)
    groups = np.zeros(n) if groups is None else np.asarray(groups)
    edges = []
    for i in range(n):
        cands = [j for j in range(n) if j != i and groups[j] == groups[i]]
        cands.sort(key=lambda j: (_dist_key(pos, i, j, metric), j))
        edges += [(j, i) for j in cands[:k]]
    return sorted(edges, key=lambda e: (e[1], e[0]))


def radius_ref(pos, r, groups=None, metric="euclidean"):
    pos = np.asarray(pos, dtype=np.float64)
    n = len(pos)
    groups = np.zeros(n) if groups is None else np.asarray(groups)
    edges = []
    for i in range(n):
        for j in range(n):
            if i == j or groups[i] != groups[j]:
                continue
            if metric == "haversine":
                d = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(min(_hav_ref(pos[i], pos[j]), 1.0)))
                ok = d <= r
            else:
                ok = ((pos[j] - pos[i]) ** 2).sum() <= r**2
            if ok:
                edges.append((j, i))
    return sorted(edges, key=lambda e: (e[1], e[0]))


def _strict_delaunay_pairs(pts):
    """Exact (rational) Delaunay graph of distinct integer points: (i, j) is an edge iff some
    circle through both has every other point strictly outside."""
    P = [(Fraction(int(a)), Fraction(int(b))) for a, b in pts]
    edges = set()
    for i, j in combinations(range(len(P)), 2):
        (xi, yi), (xj, yj) = P[i], P[j]
        mx, my = (xi + xj) / 2, (yi + yj) / 2
        nx, ny = -(yj - yi), (xj - xi)
        lo, hi = None, None
        feasible = True
        for p in range(len(P)):
            if p in (i, j):
                continue
            px, py = P[p]
            # |c - p|^2 > |c - i|^2 with c = m + t n  <=>  a t > b
            a = 2 * (nx * (xi - px) + ny * (yi - py))
            b = ((mx - xi) ** 2 + (my - yi) ** 2) - ((mx - px) ** 2 + (my - py) ** 2)
            if a == 0:
                if not b < 0:
                    feasible = False
                    break
            elif a > 0:
                lo = b / a if lo is None else max(lo, b / a)
            else:
                hi = b / a if hi is None else min(hi, b / a)
        if feasible and (lo is None or hi is None or lo < hi):
            edges.add((i, j))
    return edges


def delaunay_ref(pos, groups=None):
    pos = np.asarray(pos)
    n = len(pos)
    groups = np.zeros(n) if groups is None else np.asarray(groups)
    edges = set()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        locs = sorted({tuple(p) for p in pos[idx]})
        members = {loc: [int(i) for i in idx if tuple(pos[i]) == loc] for loc in locs}
        for a, b in _strict_delaunay_pairs(locs):
            for i in members[locs[a]]:
                for j in members[locs[b]]:
                    edges |= {(i, j), (j, i)}
        for mem in members.values():
            edges |= {(i, j) for i in mem for j in mem if i != j}
    return sorted(edges, key=lambda e: (e[1], e[0]))


def _pairs(ei: torch.Tensor):
    assert ei.dtype == torch.long and ei.shape[0] == 2
    return [tuple(e) for e in ei.t().tolist()]


def _grid(nx, ny):
    return np.stack(np.meshgrid(np.arange(nx), np.arange(ny)), -1).reshape(-1, 2).astype(float)


@pytest.mark.parametrize("k", [1, 3, 4, 6, 30])
def test_knn_ties_on_grid_match_reference(k):
    pos = _grid(5, 4)
    assert _pairs(knn_graph(pos, k)) == knn_ref(pos, k)


def test_knn_duplicates_and_random_match_reference():
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 6, size=(40, 2)).astype(float)  # many exact duplicates and ties
    pos = np.concatenate([pos, pos[:5]])
    for k in (1, 2, 5, 8):
        ei = knn_graph(pos, k)
        assert _pairs(ei) == knn_ref(pos, k)
        assert (ei[0] != ei[1]).all()
    pos3 = rng.normal(size=(30, 3))
    assert _pairs(knn_graph(torch.tensor(pos3), 4)) == knn_ref(pos3, 4)


def test_knn_groups_and_small_groups():
    rng = np.random.default_rng(1)
    pos = rng.integers(0, 4, size=(25, 2)).astype(float)
    groups = np.array(["a", "b", "c"] * 8 + ["d"])  # 'd' has one node -> no edges
    ei = knn_graph(pos, 10, groups=groups)
    assert _pairs(ei) == knn_ref(pos, 10, groups)
    assert (groups[ei[0].numpy()] == groups[ei[1].numpy()]).all()
    assert not (ei[1] == 24).any()
    counts = np.bincount(ei[1].numpy(), minlength=25)
    assert counts[0] == 7  # group 'a' has 8 nodes -> 7 neighbours although k = 10


def test_knn_haversine_matches_reference_and_wraps_dateline():
    rng = np.random.default_rng(2)
    pos = np.stack([rng.uniform(-60, 60, 30), rng.uniform(-180, 180, 30)], 1)
    pos = np.concatenate([pos, [[0.0, 179.9], [0.0, -179.9], [0.0, 0.0]]])
    ei = knn_graph(pos, 3, metric="haversine")
    assert _pairs(ei) == knn_ref(pos, 3, metric="haversine")
    nb = ei[0][ei[1] == 30].tolist()
    assert 31 in nb  # across the date line, 22 km away


def test_radius_matches_reference_inclusive_boundary():
    pos = _grid(4, 4)
    for r in (1.0, 1.5, np.sqrt(2.0), 2.0):
        assert _pairs(radius_graph(pos, r)) == radius_ref(pos, r)
    rng = np.random.default_rng(3)
    pos = rng.integers(0, 5, size=(30, 2)).astype(float)
    groups = rng.integers(0, 3, size=30)
    assert _pairs(radius_graph(pos, 1.0, groups=groups)) == radius_ref(pos, 1.0, groups)


def test_radius_haversine_km():
    # one degree of latitude ~ 111.2 km
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 180.0], [0.0, -179.5]])
    ei = radius_graph(pos, 112.0, metric="haversine")
    assert _pairs(ei) == radius_ref(pos, 112.0, metric="haversine")
    assert (1, 0) in _pairs(ei) and (2, 0) not in _pairs(ei) and (4, 3) in _pairs(ei)
    assert _pairs(radius_graph(pos, 110.0, metric="haversine")) == [(4, 3), (3, 4)]
    rng = np.random.default_rng(4)
    pos = np.stack([rng.uniform(-80, 80, 40), rng.uniform(-180, 180, 40)], 1)
    assert _pairs(radius_graph(pos, 3000.0, metric="haversine")) == radius_ref(
        pos, 3000.0, metric="haversine"
    )


def test_delaunay_cocircular_grid_is_unique_graph():
    pos = _grid(5, 4)
    ei = delaunay_graph(pos)
    assert _pairs(ei) == delaunay_ref(pos)
    assert ei.shape[1] == 2 * (4 * 4 + 5 * 3)  # lattice edges only, no diagonals


def test_delaunay_random_duplicates_collinear_groups():
    rng = np.random.default_rng(5)
    pos = rng.integers(0, 30, size=(25, 2))
    pos = np.unique(pos, axis=0)
    pos = np.concatenate([pos, pos[:3]]).astype(float)  # duplicates
    assert _pairs(delaunay_graph(pos)) == delaunay_ref(pos)
    line = np.array([[0, 0], [2, 2], [1, 1], [3, 3]], dtype=float)
    assert _pairs(delaunay_graph(line)) == delaunay_ref(line)
    groups = np.repeat([0, 1], [12, len(pos) - 12])
    assert _pairs(delaunay_graph(pos, groups=groups)) == delaunay_ref(pos, groups)
    two = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert _pairs(delaunay_graph(two)) == [(1, 0), (0, 1)]


def test_delaunay_3d_is_symmetric_and_connected():
    rng = np.random.default_rng(6)
    pos = rng.normal(size=(40, 3))
    ei = delaunay_graph(pos)
    pairs = set(_pairs(ei))
    assert all((j, i) in pairs for i, j in pairs)
    assert len(np.unique(ei[1].numpy())) == 40
    planar = np.concatenate([rng.normal(size=(20, 2)), np.zeros((20, 1))], 1)
    flat = delaunay_graph(planar)
    assert _pairs(flat) == _pairs(delaunay_graph(planar[:, :2]))


def test_outputs_sorted_and_deterministic():
    rng = np.random.default_rng(7)
    pos = rng.normal(size=(200, 2))
    for fn in (lambda p: knn_graph(p, 5), lambda p: radius_graph(p, 0.3), delaunay_graph):
        a, b = fn(pos), fn(pos.copy())
        assert torch.equal(a, b)
        key = a[1] * 1000 + a[0]
        assert (key[1:] > key[:-1]).all()


def test_bad_input():
    with pytest.raises(GraphBuildError, match="k must be"):
        knn_graph(np.zeros((3, 2)), 0)
    with pytest.raises(NonFiniteError, match="NaN"):
        knn_graph(np.array([[0.0, np.nan], [1.0, 1.0]]), 1)
    with pytest.raises(GraphBuildError, match="empty"):
        radius_graph(np.zeros((0, 2)), 1.0)
    with pytest.raises(GraphBuildError, match="r must be"):
        radius_graph(np.zeros((3, 2)), -1.0)
    with pytest.raises(GraphBuildError, match="latitude"):
        knn_graph(np.array([[120.0, 10.0], [0.0, 0.0]]), 1, metric="haversine")
    with pytest.raises(ShapeError, match="groups"):
        knn_graph(np.zeros((3, 2)), 1, groups=[0, 1])
    with pytest.raises(ShapeError):
        delaunay_graph(np.zeros((3, 4)))
    with pytest.raises(GraphBuildError, match="metric"):
        radius_graph(np.zeros((3, 2)), 1.0, metric="cosine")
