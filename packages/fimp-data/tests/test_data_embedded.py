"""Embedded real datasets: load offline, shapes/dtypes/labels, checksums match the registry."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fimp_data import embedded_readers as er
from fimp_data.errors import DataFileNotFoundError, MissingKeyError, NonFiniteError
from fimp_data.registry import get_entry

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
EMBEDDED = ("spatial-cscc", "fmri-hcp", "fmri-gw", "image-georelief")


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


@pytest.mark.parametrize("name", EMBEDDED)
def test_shipped_file_matches_registry(name):
    entry = get_entry(name)
    (file,) = entry.files
    assert file.embedded and file.path == er.EMBEDDED_FILES[name]
    path = er.embedded_path(name)
    data = path.read_bytes()
    assert len(data) == file.size
    assert hashlib.sha256(data).hexdigest() == file.sha256
    assert entry.reader == f"fimp_data.embedded_readers:{entry.reader.split(':')[1]}"
    assert entry.resolve_reader().__module__ == "fimp_data.embedded_readers"
    # stored without pickles, with the provenance the build script recorded
    with np.load(path, allow_pickle=False) as npz:
        assert all(not npz[k].dtype.hasobject for k in npz.files)
    prov = er.provenance(name)
    for source in prov.get("sources", [prov]):
        assert f"{source['package'].replace('-', '_')}-{source['version']}-" in entry.checksum_note
        assert source["wheel_sha256"] in entry.checksum_note
        for rec in source["files"]:
            assert len(rec["sha256"]) == 64 and rec["sha256"] in entry.checksum_note


def test_embedded_files_are_small():
    total = sum(er.embedded_path(n).stat().st_size for n in EMBEDDED)
    assert total < 15 * 2**20


def test_loading_needs_no_optional_dependency():
    """Load every embedded dataset in a fresh interpreter where the heavy optional packages and
    the socket module's connect are unavailable."""
    code = """
import socket, sys
for m in ("anndata", "h5py", "PIL", "nibabel", "matplotlib", "scanpy", "pooch"):
    sys.modules[m] = None
def refuse(*a, **k):
    raise AssertionError("network")
socket.socket.connect = refuse
socket.create_connection = refuse
from fimp_data import embedded_readers as er
print(er.load_spatial_cscc().x.shape[0], len(er.load_fmri_hcp()), len(er.load_fmri_gw()),
      er.load_image_georelief().x.shape[0])
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["621", "7", "5", "3288"]


def test_spatial_cscc(no_network):
    d = er.load_spatial_cscc()
    assert d.dataset == "spatial-cscc"
    assert d.x.shape == (621, 2000) and d.x.dtype == torch.float32
    assert torch.isfinite(d.x).all() and (d.x >= 0).all() and d.x.max() > 10
    assert d.pos.shape == (621, 2) and d.pos.dtype == torch.float32
    assert d.y.dtype == torch.long and d.y.shape == (621,)
    assert d.label_names == [str(i) for i in range(1, 11)]
    counts = torch.bincount(d.y, minlength=10)
    assert counts.sum() == 621 and counts.min() == 21 and counts.max() == 132
    assert len(d.feature_names) == 2000 == len(set(d.feature_names))
    assert len(d.node_ids) == 621 == len(set(d.node_ids))
    assert "edge_index" not in d
    # barcodes are "<col>x<row>" of the raw array coordinates
    row, col = d.array_coords[:, 0], d.array_coords[:, 1]
    assert all(b == f"{c}x{r}" for b, r, c in zip(d.node_ids, row.tolist(), col.tolist()))
    assert ((row + col) % 2 == 0).all()
    # HVG columns in decreasing score order; pos = hexagonal centres, unit spacing
    assert (d.hvg_zscore[:-1] >= d.hvg_zscore[1:]).all()
    expected = torch.stack([col / 2.0, row * (3**0.5 / 2.0)], dim=1).float()
    torch.testing.assert_close(d.pos, expected)
    dist = torch.cdist(d.pos.double(), d.pos.double())
    dist.fill_diagonal_(float("inf"))
    assert torch.allclose(dist.min(dim=1).values, torch.ones(621, dtype=torch.float64), atol=1e-4)
    n_unit = (dist - 1.0).abs().lt(1e-4).sum(dim=1)
    assert n_unit.max() == 6 and (n_unit == 6).sum() > 500


def test_spatial_hvg_rule_matches_slow_reference():
    hvg = _script("build_spatial_cscc")
    rng = np.random.default_rng(0)
    x = rng.gamma(0.5, 1.0, size=(40, 2500)) * (rng.random((40, 2500)) < 0.6)
    x[:, :50] = 0.0  # unexpressed genes never selected
    idx, z = hvg.hvg_order(x)
    assert len(idx) == hvg.N_TOP_GENES and not set(idx.tolist()) & set(range(50))
    # slow reference: per-gene loop over the same rule
    n_genes = x.shape[1]
    stats = []
    for g in range(n_genes):
        col = x[:, g]
        m, v = col.mean(), col.var(ddof=1)
        ok = (col > 0).sum() >= hvg.MIN_SPOTS and m > 0 and v > 0
        stats.append((ok, np.log1p(m), np.log(v / m) if ok else None))
    lm = [s[1] for s in stats if s[0]]
    lo, hi = min(lm), max(lm)
    width = (hi - lo) / hvg.N_BINS
    bins: dict[int, list[int]] = {}
    for g, (ok, m, _) in enumerate(stats):
        if ok:
            b = min(int(np.floor((m - lo) / width)), hvg.N_BINS - 1)
            bins.setdefault(b, []).append(g)
    zref = np.full(n_genes, -np.inf)
    for members in bins.values():
        d = np.array([stats[g][2] for g in members])
        sd = d.std(ddof=1) if len(members) > 1 else 0.0
        for g, v in zip(members, d):
            zref[g] = (v - d.mean()) / sd if sd > 0 else 0.0
    ref = sorted(range(n_genes), key=lambda g: (-round(zref[g], 9), g))[: hvg.N_TOP_GENES]
    assert idx.tolist() == ref
    np.testing.assert_allclose(z, zref[ref], rtol=1e-10)


@pytest.mark.parametrize(
    ("name", "loader", "n_subjects", "n_time", "tr"),
    [
        ("fmri-hcp", er.load_fmri_hcp, 7, 1200, 0.72),
        ("fmri-gw", er.load_fmri_gw, 5, 355, None),
    ],
)
def test_fmri(no_network, name, loader, n_subjects, n_time, tr):
    graphs = loader()
    assert isinstance(graphs, list) and len(graphs) == n_subjects
    groups = [g.group for g in graphs]
    assert groups == sorted(groups) and len(set(groups)) == n_subjects
    for g in graphs:
        assert g.dataset == name
        assert g.x.shape == (94, n_time) and g.x.dtype == torch.float32
        assert torch.isfinite(g.x).all()
        # raw scanner scale, not z-scored: large positive means, non-constant series
        assert g.x.mean() > 100 and (g.x.std(dim=1) > 0).all()
        assert g.pos.shape == (94, 3) and g.pos.dtype == torch.float32
        torch.testing.assert_close(g.pos, graphs[0].pos)
        assert len(g.node_ids) == 94 == len(set(g.node_ids))
        assert g.node_ids[:2] == ["Precentral_L", "Precentral_R"]
        assert g.node_ids[-1] == "Temporal_Inf_R"
        assert "y" not in g and "edge_index" not in g
        if tr is None:
            assert np.isnan(g.tr)
        else:
            assert g.tr == tr
    # distinct subjects carry distinct series
    assert not torch.equal(graphs[0].x, graphs[1].x)


def test_image_georelief(no_network):
    d = er.load_image_georelief()
    n = 3288
    assert d.dataset == "image-georelief"
    assert d.x.shape == (n, 3 * 32 * 32) and d.x.dtype == torch.float32
    assert d.x.min() >= 0 and d.x.max() <= 1 and torch.isfinite(d.x).all()
    assert tuple(d.image_shape) == (3, 32, 32)
    assert d.pos.shape == (n, 2) and d.pos.dtype == torch.float32
    assert d.pos[:, 0].abs().max() <= 72 and d.pos[:, 1].abs().max() <= 180
    assert d.y.dtype == torch.long and len(d.label_names) == 113
    counts = torch.bincount(d.y, minlength=113)
    assert counts.min() >= 10 and counts.max() <= 40 and counts.sum() == n
    assert all(len(c) == 2 and c.isupper() for c in d.label_names)
    assert d.label_names == sorted(d.label_names)
    assert set(d.continent_names) <= {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
    assert d.continent.shape == (n,) and int(d.continent.max()) < len(d.continent_names)
    assert len(d.node_ids) == n == len(set(d.node_ids))
    assert len(d.node_names) == n
    assert "edge_index" not in d
    # spot checks of real geography
    i = d.node_names.index("Tokyo")
    assert d.label_names[int(d.y[i])] == "JP" and d.continent_names[int(d.continent[i])] == "AS"
    assert abs(float(d.pos[i, 0]) - 35.69) < 0.1 and abs(float(d.pos[i, 1]) - 139.69) < 0.1
    # thinned to >= 50 km apart (brute force haversine over all pairs)
    lat, lon = np.radians(d.pos[:, 0].double().numpy()), np.radians(d.pos[:, 1].double().numpy())
    h = (
        np.sin((lat[:, None] - lat[None, :]) / 2) ** 2
        + np.cos(lat[:, None])
        * np.cos(lat[None, :])
        * np.sin((lon[:, None] - lon[None, :]) / 2) ** 2
    )
    km = 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))
    np.fill_diagonal(km, np.inf)
    assert km.min() >= 50.0 - 1e-3
    # x is the stored uint8 image, channel-first, scaled to [0, 1]
    with np.load(er.embedded_path("image-georelief"), allow_pickle=False) as npz:
        img = npz["images"][i]
    torch.testing.assert_close(
        d.x[i].reshape(3, 32, 32), torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
    )


def test_image_patch_extraction_matches_loop_reference():
    build = _script("build_image_georelief")
    rng = np.random.default_rng(1)
    relief = rng.integers(0, 256, size=(180, 360, 3), dtype=np.uint8)  # 1 px per degree
    lat = np.array([0.5, 89.9, -89.9, 10.2, -33.3])
    lon = np.array([179.9, -179.9, 0.0, -180.0, 45.7])
    got = build.patches(relief, lat, lon)
    assert got.shape == (5, 32, 32, 3) and got.dtype == np.uint8
    for k in range(5):
        r0 = int(np.floor(90.0 - lat[k])) - 16
        c0 = int(np.floor(lon[k] + 180.0)) - 16
        for a in range(32):
            for b in range(32):
                r = min(max(r0 + a, 0), 179)
                c = (c0 + b) % 360
                assert (got[k, a, b] == relief[r, c]).all()
    # the city's pixel sits at (16, 16) of its patch
    assert (got[0, 16, 16] == relief[89, 359]).all()


def test_deterministic_writer(tmp_path):
    common = _script("_embedded_common")
    arrays = {
        "a": np.arange(12, dtype=np.float32).reshape(3, 4),
        "names": np.array(["x", "yy"]),
        "meta": common.json_array({"k": 1}),
    }
    sha1 = common.write_npz_deterministic(tmp_path / "one.npz", arrays)
    sha2 = common.write_npz_deterministic(tmp_path / "two.npz", arrays)
    assert sha1 == sha2
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "one.npz") as zf:
        assert [i.filename for i in zf.infolist()] == ["a.npy", "names.npy", "meta.npy"]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
    with np.load(tmp_path / "one.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["a"], arrays["a"])
        assert npz["names"].tolist() == ["x", "yy"]
        assert json.loads(npz["meta"].item()) == {"k": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "two.npz"]  # no temp files
    with pytest.raises(TypeError, match="object"):
        common.write_npz_deterministic(tmp_path / "bad.npz", {"o": np.array([{}], dtype=object)})
    assert not (tmp_path / "bad.npz").exists()


def test_bad_files(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="not found"):
        er.load_spatial_cscc(tmp_path / "missing.npz")
    with pytest.raises(DataFileNotFoundError, match="not an embedded dataset"):
        er.embedded_path("spatial-nope")
    np.savez(tmp_path / "wrong.npz", bold=np.zeros((1, 94, 10), np.float32))
    with pytest.raises(MissingKeyError, match="subject_ids"):
        er.load_fmri_hcp(tmp_path / "wrong.npz")
    with np.load(er.embedded_path("fmri-gw"), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["bold"] = arrays["bold"].copy()
    arrays["bold"][0, 3, 7] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(NonFiniteError, match="bold"):
        er.load_fmri_gw(tmp_path / "nan.npz")


def test_load_embedded_through_fimp_data_load(no_network, tmp_path, monkeypatch):
    import fimp_data

    monkeypatch.setenv("FIMP_DATA_DIR", str(tmp_path / "cache"))
    assert set(EMBEDDED) <= set(fimp_data.list_datasets())

    d = fimp_data.load("spatial-cscc")
    assert d.x.shape == (621, 2000) and d.sha256 == get_entry("spatial-cscc").files[0].sha256
    ei = d.edge_index
    assert ei.shape == (2, 621 * 6)
    assert torch.equal(torch.bincount(ei[1], minlength=621), torch.full((621,), 6))
    length = (d.pos[ei[0]] - d.pos[ei[1]]).norm(dim=1)
    assert (length - 1.0).abs().lt(1e-4).float().mean() > 0.9  # hexagonal neighbours
    assert (ei[0] != ei[1]).all()

    for name, n_subjects, n_time in (("fmri-hcp", 7, 1200), ("fmri-gw", 5, 355)):
        graphs = fimp_data.load(name)
        assert len(graphs) == n_subjects
        for g in graphs:
            assert g.x.shape == (94, n_time) and g.edge_index.shape == (2, 94 * 6)
            assert g.sha256 == get_entry(name).files[0].sha256
        assert len({g.group for g in graphs}) == n_subjects

    img = fimp_data.load("image-georelief")
    assert img.x.shape == (3288, 3072) and img.edge_index.shape == (2, 3288 * 8)
    same_country = (img.y[img.edge_index[0]] == img.y[img.edge_index[1]]).float().mean()
    assert 0.75 < float(same_country) < 0.9
    assert torch.unique(torch.cat([img.edge_index[0], img.edge_index[1]])).numel() == 3288
    assert not (tmp_path / "cache").exists()  # embedded data never touch the cache
