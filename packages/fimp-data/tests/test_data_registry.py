"""Registry schema, load() (verified files, graph recipes, user-supplied data), light import."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

import fimp_data
from fimp_data.errors import (
    ChecksumError,
    DataFileNotFoundError,
    RegistryError,
    UnknownDatasetError,
)
from fimp_data.registry import parse_registry


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FIMP_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FIMP_DATA_REGISTRY", raising=False)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_import_is_light():
    code = (
        "import sys, fimp_data; fimp_data.list_datasets();"
        "print(sorted(m for m in ('anndata', 'nibabel', 'PIL', 'matplotlib', 'h5py')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_packaged_registry_is_valid():
    names = fimp_data.list_datasets()
    for name in ("spatial-slideseqv2", "spatial-seqfish", "fmri-ukb", "image-mapillary"):
        assert name in names
    assert set(fimp_data.list_datasets(domain="fmri")) >= {"fmri-ukb"}
    assert "spatial-seqfish" in fimp_data.list_datasets(task="spatial-celltype")
    slide = fimp_data.get_entry("spatial-slideseqv2")
    assert slide.sha256 == "224a0f2b3d4f6c0ac1583c93bb6bfa910a986df82302c4a927d61883b8b63d8b"
    assert slide.files[0].url.startswith("https://") and slide.kind == "node"
    with pytest.raises(UnknownDatasetError, match="registered"):
        fimp_data.get_entry("no-such-data")


GOOD_ENTRY = {
    "name": "x",
    "domain": "spatial",
    "tasks": [],
    "kind": "node",
    "files": [{"name": "a.h5ad", "url": "https://e.org/a", "sha256": "0" * 64, "size": 3}],
    "licence": "MIT",
    "citation": "c",
    "description": "d",
    "reader": "fimp_data.readers:read_h5ad",
    "graph": {"builder": "knn", "k": 3},
}


def _yaml(**changes) -> str:
    import yaml

    entry = {**GOOD_ENTRY, **changes}
    entry = {k: v for k, v in entry.items() if v is not None}
    return yaml.safe_dump({"schema_version": 1, "datasets": [entry]})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"licence": None}, "missing required keys"),
        ({"domain": "audio"}, "domain"),
        ({"kind": "edge"}, "kind"),
        ({"reader": "not a path"}, "module:function"),
        ({"colour": "red"}, "unknown keys"),
        ({"name": "Bad_Name"}, "name"),
        ({"graph": {"builder": "knn", "k": 0}}, "positive integer"),
        ({"graph": {"builder": "radius", "r": 1, "k": 2}}, "takes no"),
        ({"files": [{"name": "a", "url": "https://e.org/a", "sha256": "XYZ"}]}, "64 lowercase"),
        ({"files": [{"name": "a", "url": "https://e.org/a"}]}, "needs a `sha256`"),
        ({"files": [{"name": "a", "url": "ftp://e.org/a", "sha256": "0" * 64}]}, "https"),
        ({"files": [{"name": "a", "local": "p"}]}, "user_supplied"),
        (
            {"files": [{"name": "a", "embedded": True, "path": "../x", "sha256": "0" * 64}]},
            "relative",
        ),
        ({"files": []}, "non-empty"),
    ],
)
def test_schema_errors_name_the_problem(changes, message):
    assert "x" in parse_registry(_yaml(), source="t.yaml")
    with pytest.raises(RegistryError, match=message):
        parse_registry(_yaml(**changes), source="t.yaml")


def test_schema_version_and_duplicates():
    with pytest.raises(RegistryError, match="schema_version"):
        parse_registry("schema_version: 9\ndatasets: []\n", source="t")
    import yaml

    twice = yaml.safe_dump({"schema_version": 1, "datasets": [GOOD_ENTRY, GOOD_ENTRY]})
    with pytest.raises(RegistryError, match="defined twice"):
        parse_registry(twice, source="t")


# ------------------------------------------------------------------ load() through a user registry


def _write_h5ad(path, n=12):
    import anndata as ad

    rng = np.random.default_rng(0)
    a = ad.AnnData(
        X=rng.poisson(1.0, size=(n, 5)).astype(np.float32),
        obs=pd.DataFrame({"ct": rng.choice(["t", "b"], n)}, index=[f"c{i}" for i in range(n)]),
    )
    a.obsm["spatial"] = rng.uniform(0, 10, size=(n, 2))
    a.write_h5ad(path)
    return a


def _user_registry(tmp_path, monkeypatch, source: dict, graph: str = "{builder: knn, k: 3}"):
    files = ", ".join(
        f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in source.items()
    )
    text = textwrap.dedent(
        f"""\
        schema_version: 1
        datasets:
          - name: tiny-h5ad
            domain: spatial
            tasks: [spatial-celltype]
            kind: node
            files:
              - {{name: tiny.h5ad, {files}}}
            licence: test
            citation: test
            description: tiny test file
            reader: fimp_data.readers:read_h5ad
            reader_args: {{label_key: ct}}
            graph: {graph}
        """
    )
    path = tmp_path / "user_registry.yaml"
    path.write_text(text)
    monkeypatch.setenv("FIMP_DATA_REGISTRY", str(path))


def test_load_downloads_verifies_and_builds_graph(tmp_path, monkeypatch):
    src = tmp_path / "src.h5ad"
    a = _write_h5ad(src)
    sha = _sha(src)
    size = src.stat().st_size
    _user_registry(tmp_path, monkeypatch, {"url": src.as_uri(), "sha256": sha, "size": size})
    with pytest.raises(DataFileNotFoundError, match="download=True"):
        fimp_data.load("tiny-h5ad")
    d = fimp_data.load("tiny-h5ad", download=True)
    cached = tmp_path / "cache" / "tiny-h5ad" / "tiny.h5ad"
    assert cached.is_file() and _sha(cached) == sha
    assert d.x.shape == (12, 5) and d.x.dtype == torch.float32
    assert d.dataset == "tiny-h5ad" and d.sha256 == sha
    assert d.node_ids == list(a.obs_names) and d.label_names == ["b", "t"]
    expected = fimp_data.knn_graph(a.obsm["spatial"], 3)
    assert torch.equal(d.edge_index, expected)
    d2 = fimp_data.load("tiny-h5ad", graph={"builder": "radius", "r": 2.0})
    assert torch.equal(d2.edge_index, fimp_data.radius_graph(a.obsm["spatial"], 2.0))


def test_wrong_checksum_is_caught_and_cache_kept(tmp_path, monkeypatch):
    src = tmp_path / "src.h5ad"
    _write_h5ad(src)
    wrong = "1" * 64
    _user_registry(tmp_path, monkeypatch, {"url": src.as_uri(), "sha256": wrong})
    cache = tmp_path / "cache" / "tiny-h5ad"
    with pytest.raises(ChecksumError, match="sha256"):
        fimp_data.load("tiny-h5ad", download=True)
    assert not cache.exists() or list(cache.iterdir()) == []
    # a file already in the cache that does not match: reported, never deleted or overwritten
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "tiny.h5ad").write_bytes(src.read_bytes())
    with pytest.raises(ChecksumError, match="does not match"):
        fimp_data.load("tiny-h5ad")
    with pytest.raises(ChecksumError):
        fimp_data.load("tiny-h5ad", download=True)
    assert _sha(cache / "tiny.h5ad") == _sha(src)


def test_embedded_file_checksum_is_verified(tmp_path, monkeypatch):
    pkg_file = "registry.yaml"
    real = hashlib.sha256((fimp_data.datasets._package_dir() / pkg_file).read_bytes()).hexdigest()
    _user_registry(tmp_path, monkeypatch, {"embedded": True, "path": pkg_file, "sha256": "2" * 64})
    with pytest.raises(ChecksumError, match="reinstall"):
        fimp_data.load("tiny-h5ad")
    _user_registry(tmp_path, monkeypatch, {"embedded": True, "path": "nope.npz", "sha256": real})
    with pytest.raises(DataFileNotFoundError, match="reinstall"):
        fimp_data.load("tiny-h5ad")


def _ukb_folder(root, subjects=("s1", "s2", "s3"), regions=10, t=30):
    rng = np.random.default_rng(0)
    (root / "series").mkdir(parents=True)
    for s in subjects:
        np.save(root / "series" / f"{s}.npy", rng.normal(size=(regions, t)))
    pd.DataFrame(
        {
            "name": [f"P{i}" for i in range(regions)],
            "x": rng.normal(size=regions),
            "y": rng.normal(size=regions),
            "z": rng.normal(size=regions),
        }
    ).to_csv(root / "regions.csv", index=False)


def test_user_supplied_parcel_series(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="root="):
        fimp_data.load("fmri-ukb")
    _ukb_folder(tmp_path / "ukb")
    graphs = fimp_data.load("fmri-ukb", root=tmp_path / "ukb")
    assert [g.group for g in graphs] == ["s1", "s2", "s3"]
    for g in graphs:
        assert g.x.shape == (10, 30) and g.edge_index.shape == (2, 10 * 8)
        assert g.dataset == "fmri-ukb" and len(g.sha256) == 64
    assert graphs[0].sha256 == fimp_data.load("fmri-ukb", root=tmp_path / "ukb")[0].sha256
    np.save(tmp_path / "ukb" / "series" / "s1.npy", np.zeros((10, 30)))
    assert fimp_data.load("fmri-ukb", root=tmp_path / "ukb")[0].sha256 != graphs[0].sha256


def test_user_supplied_image_folder_uses_haversine(tmp_path):
    from PIL import Image

    root = tmp_path / "mapillary"
    (root / "images").mkdir(parents=True)
    lat = [0.0, 0.0, 0.0, 0.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0]
    lon = [179.0, -179.0, 178.0, -178.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    for i in range(10):
        Image.fromarray(np.full((4, 4, 3), i, dtype=np.uint8)).save(root / "images" / f"{i}.png")
    pd.DataFrame(
        {
            "image": [f"images/{i}.png" for i in range(10)],
            "lat": lat,
            "lon": lon,
            "label": ["A"] * 4 + ["B"] * 6,
        }
    ).to_csv(root / "coordinates.csv", index=False)
    d = fimp_data.load("image-mapillary", root=root)
    assert d.x.shape == (10, 48) and d.y.tolist() == [0] * 4 + [1] * 6
    assert torch.equal(d.edge_index, fimp_data.knn_graph(d.pos, 8, metric="haversine"))
    nb0 = set(d.edge_index[0][d.edge_index[1] == 0].tolist())
    assert {1, 2, 3} <= nb0  # across the date line


def test_register_local(tmp_path):
    _ukb_folder(tmp_path / "mine", subjects=("a", "b"))
    fimp_data.register_local(
        "my-fmri",
        [tmp_path / "mine" / "series", tmp_path / "mine" / "regions.csv"],
        kind="graph",
        domain="fmri",
        reader="fimp_data.readers:read_parcel_timeseries",
        reader_args={"tr": 2.0},
        graph={"builder": "knn", "k": 3},
        tasks=["fmri-reconstruction"],
    )
    assert "my-fmri" in fimp_data.list_datasets(task="fmri-reconstruction")
    graphs = fimp_data.load("my-fmri")
    assert len(graphs) == 2 and graphs[1].tr == 2.0 and graphs[0].edge_index.shape[1] == 30
    with pytest.raises(RegistryError, match="overwrite=True"):
        fimp_data.register_local(
            "my-fmri",
            tmp_path / "mine" / "series",
            kind="graph",
            domain="fmri",
            reader="fimp_data.readers:read_parcel_timeseries",
        )
    with pytest.raises(RegistryError, match="packaged"):
        fimp_data.register_local(
            "fmri-ukb",
            tmp_path / "mine" / "series",
            kind="graph",
            domain="fmri",
            reader="fimp_data.readers:read_parcel_timeseries",
        )
    with pytest.raises(DataFileNotFoundError):
        fimp_data.register_local(
            "other",
            tmp_path / "absent",
            kind="graph",
            domain="fmri",
            reader="fimp_data.readers:read_parcel_timeseries",
        )


def test_missing_registry_file_in_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FIMP_DATA_REGISTRY", str(tmp_path / "absent.yaml"))
    with pytest.raises(DataFileNotFoundError, match="FIMP_DATA_REGISTRY"):
        fimp_data.list_datasets()
