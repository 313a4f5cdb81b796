"""Graph builders on node coordinates (scipy / scikit-learn; no pyg-lib or torch-cluster).

Conventions shared by every builder:

- ``edge_index`` is a ``torch.long`` tensor ``[2, E]`` in the PyG convention: ``edge_index[0]`` =
  source ``j``, ``edge_index[1]`` = target ``i`` (messages flow ``j -> i``).
- Edges are sorted by target, then by source; the output is a deterministic function of the input.
- No self loops. Two distinct nodes at the same coordinates are ordinary neighbours (distance 0).
- ``groups`` ([N] labels of any type, e.g. slide or subject ids): no edge joins two groups; each
  group is built on its own, as if the others did not exist.
- ``metric="haversine"``: ``pos`` is ``[N, 2]`` = (latitude, longitude) in degrees, distances are
  great-circle distances in **kilometres** on a sphere of radius :data:`EARTH_RADIUS_KM`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import Delaunay, QhullError, cKDTree

from .errors import GraphBuildError, NonFiniteError, ShapeError

__all__ = ["EARTH_RADIUS_KM", "delaunay_graph", "haversine_km", "knn_graph", "radius_graph"]

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG) in km used by ``metric="haversine"``."""

_METRICS = ("euclidean", "haversine")


def _as_pos(pos: object, metric: str = "euclidean") -> np.ndarray:
    if isinstance(pos, torch.Tensor):
        pos = pos.detach().cpu().numpy()
    arr = np.asarray(pos, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ShapeError(f"pos must be a 2-D array [N, D], got shape {arr.shape}; reshape it")
    if arr.shape[0] == 0:
        raise GraphBuildError("pos has no rows (empty graph); select at least one node")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr).all(axis=1)).sum())
        raise NonFiniteError(
            f"pos holds NaN/inf in {bad} rows; drop or impute those nodes' coordinates first"
        )
    if metric not in _METRICS:
        raise GraphBuildError(f"metric must be one of {_METRICS}, got {metric!r}")
    if metric == "haversine":
        if arr.shape[1] != 2:
            raise ShapeError(
                f"metric='haversine' needs pos [N, 2] = (lat, lon) in degrees, got {arr.shape}"
            )
        if np.abs(arr[:, 0]).max() > 90:
            raise GraphBuildError(
                "metric='haversine': latitude (column 0) outside [-90, 90] degrees; "
                "pass (lat, lon), not (lon, lat)"
            )
    return arr


def _as_groups(groups: object, n: int) -> list[np.ndarray]:
    """Index arrays (ascending) of each group, in order of first appearance."""
    if groups is None:
        return [np.arange(n)]
    if isinstance(groups, torch.Tensor):
        groups = groups.detach().cpu().numpy()
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] != n:
        raise ShapeError(f"groups must have shape [N] = [{n}], got {g.shape}")
    _, first, inverse = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    return [np.flatnonzero(inverse == label) for label in order]


def _unit_vectors(latlon: np.ndarray) -> np.ndarray:
    lat = np.radians(latlon[:, 0])
    lon = np.radians(latlon[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def haversine_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distance in km between (lat, lon) degree pairs ``a`` [..., 2] and ``b`` [..., 2]."""
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(_hav(a, b), 0.0, 1.0)))


def _hav(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lat1, lon1 = np.radians(a[..., 0]), np.radians(a[..., 1])
    lat2, lon2 = np.radians(b[..., 0]), np.radians(b[..., 1])
    return (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )


def _key(x: np.ndarray, tgt: np.ndarray, src: np.ndarray, metric: str) -> np.ndarray:
    """Exact ranking key of the pairs (target, source): squared distance, or the haversine term."""
    if metric == "haversine":
        return _hav(x[tgt], x[src])
    return ((x[src] - x[tgt]) ** 2).sum(axis=1)


def _finish(src: list[np.ndarray], dst: list[np.ndarray]) -> torch.Tensor:
    s = np.concatenate(src) if src else np.zeros(0, dtype=np.int64)
    d = np.concatenate(dst) if dst else np.zeros(0, dtype=np.int64)
    order = np.lexsort((s, d))
    return torch.from_numpy(np.stack([s[order], d[order]]).astype(np.int64))


def _ball_pairs(
    tree: cKDTree, pts: np.ndarray, r: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    lists = tree.query_ball_point(pts, r)
    counts = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    tgt = np.repeat(np.arange(len(lists)), counts)
    src = np.fromiter((j for v in lists for j in v), dtype=np.int64, count=int(counts.sum()))
    keep = src != tgt
    return tgt[keep], src[keep]


def knn_graph(
    pos: np.ndarray | torch.Tensor,
    k: int,
    *,
    groups: np.ndarray | torch.Tensor | list | None = None,
    metric: str = "euclidean",
) -> torch.Tensor:
    """k-nearest-neighbour graph: each node ``i`` receives edges from its ``k`` nearest other nodes.

    Args:
        pos: coordinates ``[N, D]`` (any unit), or ``[N, 2]`` (lat, lon) degrees for haversine.
        k: neighbours per node (a node in a group of ``n <= k`` nodes gets all ``n - 1`` others).
        groups: optional ``[N]`` labels; no edges across groups.
        metric: ``"euclidean"`` or ``"haversine"`` (great-circle).

    Returns:
        ``edge_index`` ``[2, E]`` long, ``E = sum_i min(k, n_group(i) - 1)``, sorted by target then
        source. Ties: candidates are ranked by (distance, source index), so among equidistant
        nodes the one with the smaller index is taken.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise GraphBuildError(f"k must be a positive integer, got {k!r}")
    x = _as_pos(pos, metric)
    src_all, dst_all = [], []
    for idx in _as_groups(groups, x.shape[0]):
        n = idx.shape[0]
        if n < 2:
            continue
        kk = min(int(k), n - 1)
        pts = _unit_vectors(x[idx]) if metric == "haversine" else x[idx]
        tree = cKDTree(pts)
        dist, _ = tree.query(pts, k=kk + 1)
        dist = np.asarray(dist).reshape(n, -1)[:, kk]
        radius = dist * (1.0 + 1e-9) + 1e-12
        tgt, src = _ball_pairs(tree, pts, radius)
        key = _key(x[idx], tgt, src, metric)
        order = np.lexsort((src, key, tgt))
        tgt, src = tgt[order], src[order]
        starts = np.searchsorted(tgt, np.arange(n))
        rank = np.arange(tgt.shape[0]) - starts[tgt]
        keep = rank < kk
        src_all.append(idx[src[keep]])
        dst_all.append(idx[tgt[keep]])
    return _finish(src_all, dst_all)


def radius_graph(
    pos: np.ndarray | torch.Tensor,
    r: float,
    *,
    groups: np.ndarray | torch.Tensor | list | None = None,
    metric: str = "euclidean",
) -> torch.Tensor:
    """Radius graph: an edge ``j -> i`` (and ``i -> j``) for every pair at distance ``<= r``.

    Args:
        pos: coordinates ``[N, D]``, or ``[N, 2]`` (lat, lon) degrees for haversine.
        r: radius, in the unit of ``pos`` (euclidean; compared as squared distance ``<= r**2``) or
            in **km** (haversine).
        groups: optional ``[N]`` labels; no edges across groups.
        metric: ``"euclidean"`` or ``"haversine"``.

    Returns:
        ``edge_index`` ``[2, E]`` long, symmetric, sorted by target then source; no neighbour cap.
    """
    if isinstance(r, bool) or not isinstance(r, int | float | np.floating | np.integer):
        raise GraphBuildError(f"r must be a positive number, got {r!r}")
    if not np.isfinite(r) or r <= 0:
        raise GraphBuildError(f"r must be a positive finite number, got {r!r}")
    x = _as_pos(pos, metric)
    src_all, dst_all = [], []
    for idx in _as_groups(groups, x.shape[0]):
        if idx.shape[0] < 2:
            continue
        if metric == "haversine":
            pts = _unit_vectors(x[idx])
            angle = min(float(r) / EARTH_RADIUS_KM, np.pi)
            chord = 2.0 * np.sin(angle / 2.0) * (1.0 + 1e-9) + 1e-12
            tree = cKDTree(pts)
            tgt, src = _ball_pairs(tree, pts, chord)
            keep = haversine_km(x[idx][tgt], x[idx][src]) <= r
        else:
            tree = cKDTree(x[idx])
            tgt, src = _ball_pairs(tree, x[idx], float(r) * (1.0 + 1e-9) + 1e-12)
            keep = _key(x[idx], tgt, src, metric) <= float(r) ** 2
        src_all.append(idx[src[keep]])
        dst_all.append(idx[tgt[keep]])
    return _finish(src_all, dst_all)


def _incircle(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Sign-relevant in-circle determinant of d against circle (a, b, c), rows vectorised."""
    ad, bd, cd = a - d, b - d, c - d
    return (
        (ad[:, 0] ** 2 + ad[:, 1] ** 2) * (bd[:, 0] * cd[:, 1] - cd[:, 0] * bd[:, 1])
        - (bd[:, 0] ** 2 + bd[:, 1] ** 2) * (ad[:, 0] * cd[:, 1] - cd[:, 0] * ad[:, 1])
        + (cd[:, 0] ** 2 + cd[:, 1] ** 2) * (ad[:, 0] * bd[:, 1] - bd[:, 0] * ad[:, 1])
    )


def _delaunay_unique(u: np.ndarray) -> np.ndarray:
    """Undirected edges [M, 2] (i < j) of the Delaunay graph of distinct points ``u`` [m, D]."""
    m, dim = u.shape
    if m < 2:
        return np.zeros((0, 2), dtype=np.int64)
    centred = u - u.mean(axis=0)
    scale = float(np.abs(centred).max()) or 1.0
    sv = np.linalg.svd(centred / scale, compute_uv=False)
    rank = int((sv > 1e-10 * max(sv[0], 1e-300)).sum())
    if rank <= 1:
        # collinear: the Delaunay graph is the path along the line
        _, _, vt = np.linalg.svd(centred)
        order = np.argsort(centred @ vt[0], kind="stable")
        e = np.stack([order[:-1], order[1:]], axis=1)
        return np.sort(e, axis=1)
    if rank < dim:
        _, _, vt = np.linalg.svd(centred)
        return _delaunay_unique(centred @ vt[:rank].T)
    try:
        tri = Delaunay(u, qhull_options="Qbb Qc Qz Q12 Qt")
    except QhullError as exc:  # pragma: no cover - rank checks above make this rare
        raise GraphBuildError(
            f"Delaunay triangulation failed ({exc}); check for degenerate pos"
        ) from exc
    simp = tri.simplices
    # drop degenerate (zero-volume) simplices that qhull's triangulation option may emit
    vol = np.abs(np.linalg.det(u[simp[:, 1:]] - u[simp[:, :1]]))
    simp = simp[vol > 1e-12 * scale**dim]
    pairs = [(a, b) for a in range(dim + 1) for b in range(a + 1, dim + 1)]
    e = np.concatenate([simp[:, [a, b]] for a, b in pairs])
    e = np.sort(e, axis=1)
    if dim != 2:
        return np.unique(e, axis=0)
    # 2-D ties: an edge shared by two triangles whose four corners are cocircular is one of two
    # equally valid diagonals; it is dropped, leaving the unique Delaunay graph (Voronoi adjacency).
    opp = np.concatenate([simp[:, [c]] for c in (2, 1, 0)])
    order = np.lexsort((e[:, 1], e[:, 0]))
    e, opp = e[order], opp[order, 0]
    uniq, start, count = np.unique(e, axis=0, return_index=True, return_counts=True)
    inner = count == 2
    s = start[inner]
    i, j = uniq[inner, 0], uniq[inner, 1]
    a, b = opp[s], opp[s + 1]
    det = _incircle(u[i], u[j], u[a], u[b])
    tol = 1e-9 * scale**4
    ambiguous = np.zeros(uniq.shape[0], dtype=bool)
    ambiguous[np.flatnonzero(inner)] = np.abs(det) <= tol
    return uniq[~ambiguous]


def delaunay_graph(
    pos: np.ndarray | torch.Tensor,
    *,
    groups: np.ndarray | torch.Tensor | list | None = None,
) -> torch.Tensor:
    """Delaunay graph (2-D or 3-D): edges of the Delaunay triangulation, in both directions.

    Rules for degenerate input (all deterministic):

    - 2-D cocircular ties (e.g. a square grid): where four points lie on one empty circle, the
      two diagonals are equally valid and **neither** is kept, so the result is the unique Delaunay
      graph (nodes whose Voronoi cells share an edge). In 3-D, cospherical ties follow qhull.
    - Duplicate coordinates: the triangulation is built on the distinct locations; nodes at one
      location are all joined to each other and each gets the location's Delaunay neighbours.
    - Collinear points: a path along the line. Coplanar 3-D points: the 2-D graph in their plane.

    Args:
        pos: coordinates ``[N, 2]`` or ``[N, 3]``.
        groups: optional ``[N]`` labels; each group is triangulated on its own.

    Returns:
        ``edge_index`` ``[2, E]`` long, symmetric, sorted by target then source.
    """
    x = _as_pos(pos)
    if x.shape[1] not in (2, 3):
        raise ShapeError(f"delaunay_graph needs pos [N, 2] or [N, 3], got {x.shape}")
    src_all, dst_all = [], []
    for idx in _as_groups(groups, x.shape[0]):
        uniq, inverse = np.unique(x[idx], axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        ue = _delaunay_unique(uniq)
        s_parts, d_parts = [], []
        if uniq.shape[0] == idx.shape[0]:
            node = np.empty(uniq.shape[0], dtype=np.int64)
            node[inverse] = np.arange(idx.shape[0])
            s_parts.append(node[ue[:, 0]])
            d_parts.append(node[ue[:, 1]])
            ue = ue[:0]
        members = [np.flatnonzero(inverse == u) for u in range(uniq.shape[0])] if ue.size else []
        for a, b in ue:
            ma, mb = members[a], members[b]
            s_parts.append(np.repeat(ma, mb.shape[0]))
            d_parts.append(np.tile(mb, ma.shape[0]))
        for mem in members:
            if mem.shape[0] > 1:
                s_parts.append(np.repeat(mem, mem.shape[0]))
                d_parts.append(np.tile(mem, mem.shape[0]))
        if not s_parts:
            continue
        s = np.concatenate(s_parts)
        d = np.concatenate(d_parts)
        s, d = np.concatenate([s, d]), np.concatenate([d, s])
        keep = s != d
        pairs = np.unique(np.stack([s[keep], d[keep]], axis=1), axis=0)
        src_all.append(idx[pairs[:, 0]])
        dst_all.append(idx[pairs[:, 1]])
    return _finish(src_all, dst_all)
