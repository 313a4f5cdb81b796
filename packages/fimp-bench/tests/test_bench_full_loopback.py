"""The full preset end to end, on small files in the registry's upstream layouts.

A loopback HTTP server serves a Slide-seqV2-shaped and a seqFISH-shaped .h5ad (written by
anndata, with the obsm / obs keys the registry's entries read); a test registry
(``FIMP_DATA_REGISTRY``) copies the packaged ``spatial-slideseqv2`` / ``spatial-seqfish`` entries
(file name, reader, reader_args, graph recipe) with the server's URL and these files' sha256. The
user-supplied full datasets (``fmri-ukb``: parcel series folder + regions.csv; ``image-mapillary``:
image folder + coordinates.csv) are read with ``--data-root``, and a user's own file through
``fimp_data.register_local``. Every run goes through ``fimp_bench.cli.main`` with
``--preset full --max-epochs 2 --tuning-budget 1 --seeds 0``: download (or local paths),
checksum, cache, reader, graph builder, split, training and the record on disk.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import fimp_data
from fimp_bench.cli import main
from fimp_bench.records import validate_record

pytest.importorskip("anndata")
pytest.importorskip("PIL")

FAST = ["--preset", "full", "--seeds", "0", "--max-epochs", "2", "--tuning-budget", "1"]
COMMON = [*FAST, "--device", "cpu", "--no-progress", "--model", "mlp,fimp-base"]


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    hits: ClassVar[dict[str, int]] = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        body = _Handler.files.get(self.path)
        if body is None:
            self.send_error(404, "not found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _slide(n: int, n_genes: int, label_key: str, *, sparse: bool, seed: int):
    """An AnnData with spatially structured clusters and counts, coordinates in obsm['spatial']."""
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 1000, size=(n, 2))
    cluster = (pos[:, 0] // 250).astype(int)  # 4 vertical bands
    rate = 0.3 + 2.0 * (np.arange(n_genes)[None] % 4 == cluster[:, None])
    counts = rng.poisson(rate).astype(np.float32)  # mostly zeros
    obs = pd.DataFrame(
        {label_key: pd.Categorical([f"type{c}" for c in cluster])},
        index=[f"cell{i}" for i in range(n)],
    )
    var = pd.DataFrame(index=[f"Gene{j}" for j in range(n_genes)])
    a = ad.AnnData(X=sp.csr_matrix(counts) if sparse else counts, obs=obs, var=var)
    a.obsm["spatial"] = pos
    return a


def _write(a, path: Path) -> bytes:
    a.write_h5ad(path)
    return path.read_bytes()


def _entry_like(packaged: str, name: str, url: str, mirrors: list[str], body: bytes) -> dict:
    """A registry entry copied from a packaged one, its file served by the loopback server."""
    e = fimp_data.get_entry(packaged)
    (f,) = e.files
    return {
        "name": name,
        "domain": e.domain,
        "tasks": list(e.tasks),
        "kind": e.kind,
        "files": [
            {
                "name": f.name,
                "url": url,
                "mirrors": mirrors,
                "sha256": hashlib.sha256(body).hexdigest(),
                "size": len(body),
            }
        ],
        "licence": "test data",
        "citation": "test data",
        "description": f"loopback copy of {packaged}",
        "reader": e.reader,
        "reader_args": dict(e.reader_args),
        "graph": dict(e.graph),
    }


@pytest.fixture(scope="module")
def env(server, tmp_path_factory):
    """Files, the test registry and the user-supplied folders, built once for the module."""
    root = tmp_path_factory.mktemp("full")
    src = root / "upstream"
    src.mkdir()
    slide = _write(_slide(320, 48, "cluster", sparse=True, seed=0), src / "slideseqv2.h5ad")
    seqfish = _write(
        _slide(260, 24, "celltype_mapped_refined", sparse=False, seed=1), src / "seqfish.h5ad"
    )
    _Handler.files.update(
        {"/files/28242783": slide, "/files/26098403": seqfish, "/files/corrupt": slide[:-7]}
    )
    entries = [
        # the primary URL is gone (404): the mirror serves the file
        _entry_like(
            "spatial-slideseqv2",
            "loopback-slideseqv2",
            f"{server}/gone/slideseqv2.h5ad",
            [f"{server}/files/28242783"],
            slide,
        ),
        _entry_like("spatial-seqfish", "loopback-seqfish", f"{server}/files/26098403", [], seqfish),
        # registered sha256 of the real bytes, but the server sends a truncated copy
        _entry_like("spatial-slideseqv2", "loopback-corrupt", f"{server}/files/corrupt", [], slide),
    ]
    registry = root / "registry.test.yaml"
    registry.write_text(yaml.safe_dump({"schema_version": 1, "datasets": entries}))

    rng = np.random.default_rng(2)
    ukb = root / "ukb"
    (ukb / "series").mkdir(parents=True)
    regions = rng.normal(0, 50, size=(12, 3))
    pd.DataFrame(
        {
            "name": [f"R{i}" for i in range(12)],
            "x": regions[:, 0],
            "y": regions[:, 1],
            "z": regions[:, 2],
        }
    ).to_csv(ukb / "regions.csv", index=False)
    t = np.arange(240)[None] / 9.0
    for s in range(5):
        series = np.sin(t + rng.random((12, 1)) * 6) + 0.2 * rng.standard_normal((12, 240))
        if s % 2:
            np.save(ukb / "series" / f"sub-{s}.npy", series.astype(np.float32))
        else:
            pd.DataFrame(series).to_csv(ukb / "series" / f"sub-{s}.csv", index=False)

    from PIL import Image

    img = root / "mapillary"
    (img / "images").mkdir(parents=True)
    rows = []
    centres = {"AA": (10, 10), "BB": (10, 60), "CC": (45, 10), "DD": (45, 60)}
    for i in range(160):
        label = list(centres)[i % 4]
        lat, lon = np.array(centres[label]) + rng.uniform(-8, 8, 2)
        pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        pixels[..., i % 3] //= 2 + (i % 4)
        Image.fromarray(pixels).save(img / "images" / f"{i:04d}.png")
        rows.append({"image": f"images/{i:04d}.png", "lat": lat, "lon": lon, "label": label})
    pd.DataFrame(rows).to_csv(img / "coordinates.csv", index=False)

    own = root / "mine" / "my_slide.h5ad"
    own.parent.mkdir()
    _write(_slide(200, 30, "annotation", sparse=True, seed=3), own)
    return {
        "root": root,
        "registry": registry,
        "slide": slide,
        "seqfish": seqfish,
        "ukb": ukb,
        "img": img,
        "own": own,
    }


@pytest.fixture
def cache(env, tmp_path, monkeypatch):
    """A fresh fimp-data cache per test and the test registry on FIMP_DATA_REGISTRY."""
    c = tmp_path / "cache"
    monkeypatch.setenv("FIMP_DATA_DIR", str(c))
    monkeypatch.setenv("FIMP_DATA_REGISTRY", str(env["registry"]))
    return c


def _records(out: Path, task: str) -> list[dict]:
    paths = sorted(out.glob(f"{task}/records/*/seed-0.json"))
    return [validate_record(json.loads(p.read_text()), source=str(p)) for p in paths]


def _check_full(rec: dict, dataset: str, sha: str, num_nodes: int | None = None) -> None:
    assert rec["preset"] == "full" and rec["seed"] == 0
    assert rec["dataset"] == {"name": dataset, "sha256": sha}
    training = rec["task_info"]["training"]
    assert training["overrides"] == {"max_epochs": 2, "tuning_budget": 1}
    assert training["max_epochs"] == 2 and training["min_epochs"] == 2
    assert rec["tuning"]["budget"] == 1 and len(rec["tuning"]["trials"]) == 1
    assert rec["split_id"]
    if num_nodes is not None:
        assert rec["task_info"]["num_nodes"] == num_nodes
    for m in rec["metrics"]["test"].values():
        assert np.isfinite(m)


def test_spatial_full_downloads_verifies_caches(env, cache, tmp_path, capsys):
    out = tmp_path / "out"
    before = dict(_Handler.hits)
    code = main(
        ["run", "--task", "spatial", "--dataset", "loopback-slideseqv2", *COMMON, "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    # one download (through the mirror) for both spatial tasks, then the verified cache
    assert _Handler.hits["/files/28242783"] - before.get("/files/28242783", 0) == 1
    assert _Handler.hits["/gone/slideseqv2.h5ad"] - before.get("/gone/slideseqv2.h5ad", 0) >= 1
    cached = cache / "loopback-slideseqv2" / "slideseqv2.h5ad"
    assert cached.read_bytes() == env["slide"]
    assert sorted(p.name for p in cached.parent.iterdir()) == ["slideseqv2.h5ad"]
    sha = hashlib.sha256(env["slide"]).hexdigest()
    for task in ("spatial-expression", "spatial-celltype"):
        recs = _records(out, task)
        assert [r["model"]["name"] for r in recs] == ["fimp-base", "mlp"]
        for r in recs:
            _check_full(r, "loopback-slideseqv2", sha, num_nodes=320)
            assert r["task_info"]["num_features"] == 48  # full panel 256 > 48 genes: all
    assert (
        "preset overridden: max_epochs=2, tuning_budget=1"
        in (out / "spatial-celltype" / "README.md").read_text()
    )
    # a second run reads the cache, offline
    data = fimp_data.load("loopback-slideseqv2")
    assert data.x.layout == torch.sparse_coo  # the sparse X stayed sparse
    code = main(
        [
            "run",
            "--task",
            "spatial-celltype",
            "--dataset",
            "loopback-slideseqv2",
            *COMMON,
            "--no-download",
            "--model",
            "mlp",
            "--out",
            str(tmp_path / "again"),
        ]
    )
    assert code == 0
    assert _Handler.hits["/files/28242783"] - before.get("/files/28242783", 0) == 1


def test_seqfish_full(env, cache, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--task", "spatial-celltype", "--dataset", "loopback-seqfish", *COMMON]
    assert main([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    recs = _records(out, "spatial-celltype")
    assert len(recs) == 2
    for r in recs:
        _check_full(r, "loopback-seqfish", hashlib.sha256(env["seqfish"]).hexdigest(), 260)
    assert fimp_data.load("loopback-seqfish").x.layout == torch.strided  # stored dense


def test_corrupt_download_and_offline_fail_cleanly(env, cache, tmp_path, capsys):
    args = ["run", "--task", "spatial-celltype", *COMMON, "--out", str(tmp_path / "o")]
    assert main([*args, "--dataset", "loopback-corrupt"]) == 2
    err = capsys.readouterr().err
    assert "fimp-bench: error: dataset 'loopback-corrupt'" in err and "slideseqv2.h5ad" in err
    folder = cache / "loopback-corrupt"
    assert not folder.exists() or list(folder.iterdir()) == []  # nothing half-written
    assert main([*args, "--dataset", "loopback-seqfish", "--no-download"]) == 2
    assert "drop --no-download" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main([*args, "--dataset", "loopback-seqfish", "--max-epochs", "0"]) == 2
    assert "max_epochs must be a positive integer" in capsys.readouterr().err


def test_fmri_full_user_supplied_folder(env, cache, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--task", "fmri", *COMMON, "--data-root", str(env["ukb"]), "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err  # default full dataset: fmri-ukb
    subjects = fimp_data.load("fmri-ukb", root=env["ukb"])
    assert [s.group for s in subjects] == [f"sub-{s}" for s in range(5)]
    for r in _records(out, "fmri-reconstruction"):
        _check_full(r, "fmri-ukb", subjects[0].sha256)
        assert r["task_info"]["num_nodes"] == 12 and r["task_info"]["window"] == 200
        assert r["task_info"]["num_graphs"] == 5  # 240 TRs: one 200-TR window per subject
    # without --data-root the user-supplied files are looked for in the cache: a clear error
    assert main(["run", "--task", "fmri", *COMMON, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "fmri-ukb" in err and "pass --data-root" in err


def test_image_full_user_supplied_folder(env, cache, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--task", "image", *COMMON, "--data-root", str(env["img"]), "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err  # default full dataset: image-mapillary
    sha = fimp_data.load("image-mapillary", root=env["img"]).sha256
    for task in ("image-country", "image-zeroshot", "image-zeroshot-random"):
        recs = _records(out, task)
        assert len(recs) == 2, task
        for r in recs:
            assert r["dataset"] == {"name": "image-mapillary", "sha256": sha}
            assert r["preset"] == "full" and r["task_info"]["num_nodes"] == 160
            assert r["task_info"]["image_shape"] == [3, 32, 32]  # full: no pooling
    fimp = next(r for r in _records(out, "image-country") if r["model"]["name"] == "fimp-base")
    assert fimp["task_info"]["training"]["overrides"] == {"max_epochs": 2, "tuning_budget": 1}


def test_register_local_dataset_full(env, cache, tmp_path, capsys):
    fimp_data.register_local(
        "my-slide",
        env["own"],
        kind="node",
        domain="spatial",
        reader="fimp_data.readers:read_h5ad",
        reader_args={"label_key": "annotation"},
        graph={"builder": "knn", "k": 6},
    )
    out = tmp_path / "out"
    args = [
        "run",
        "--task",
        "spatial-celltype",
        "--dataset",
        "my-slide",
        *COMMON,
        "--out",
        str(out),
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert main(["list", "datasets"]) == 0 and "my-slide" in capsys.readouterr().out
    sha = hashlib.sha256(env["own"].read_bytes()).hexdigest()
    recs = _records(out, "spatial-celltype")
    assert len(recs) == 2
    for r in recs:
        _check_full(r, "my-slide", sha, num_nodes=200)
