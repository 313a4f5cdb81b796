"""Shared fixtures of the fimp-bench tests: tiny synthetic datasets with the fields fimp_data
gives (x raw features, pos, y, edge_index, group), and quick record folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from fimp_data import knn_graph


def spatial_data(n_side: int = 8, n_genes: int = 20, n_classes: int = 3, seed: int = 0) -> Data:
    """A grid of n_side^2 spots with non-negative expression that depends on position."""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(n_side), np.arange(n_side))
    pos = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    n = pos.shape[0]
    base = np.sin(pos[:, :1] / 3.0 + np.arange(n_genes)[None] / 5.0) + 1.5
    x = np.abs(base + 0.3 * rng.standard_normal((n, n_genes))).astype(np.float32)
    y = (pos[:, 0] * n_classes // n_side).astype(np.int64)
    d = Data(x=torch.from_numpy(x), pos=torch.from_numpy(pos), y=torch.from_numpy(y))
    d.edge_index = knn_graph(d.pos, 4)
    d.feature_names = [f"G{i}" for i in range(n_genes)]
    d.dataset = "synthetic-spatial"
    return d


def fmri_data(n_subjects: int = 5, n_regions: int = 10, t: int = 80, seed: int = 0) -> list[Data]:
    rng = np.random.default_rng(seed)
    pos = torch.from_numpy(rng.standard_normal((n_regions, 3)).astype(np.float32))
    ei = knn_graph(pos, 3)
    out = []
    for s in range(n_subjects):
        tt = np.arange(t)[None] / 7.0
        x = np.sin(tt + rng.random((n_regions, 1)) * 6) + 0.2 * rng.standard_normal((n_regions, t))
        d = Data(x=torch.from_numpy(x.astype(np.float32)), pos=pos, edge_index=ei)
        d.group = f"sub{s}"
        d.dataset = "synthetic-fmri"
        out.append(d)
    return out


def image_data(n_side: int = 8, n_classes: int = 4, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    lat, lon = np.meshgrid(np.linspace(-30, 30, n_side), np.linspace(-60, 60, n_side))
    pos = np.stack([lat.ravel(), lon.ravel()], 1).astype(np.float32)
    n = pos.shape[0]
    y = (np.arange(n) % n_classes).astype(np.int64)
    x = rng.integers(0, 255, (n, 3 * 16 * 16)).astype(np.float32)
    x[:, : 3 * 16] += (y[:, None] * 40) % 255
    d = Data(x=torch.from_numpy(x), pos=torch.from_numpy(pos), y=torch.from_numpy(y))
    d.edge_index = knn_graph(d.pos, 4, metric="haversine")
    d.image_shape = (3, 16, 16)
    d.dataset = "synthetic-image"
    return d


@pytest.fixture(scope="session")
def smoke_records(tmp_path_factory):
    """Records of mlp + gcn, seeds 0-4, spatial-celltype on the synthetic grid (smoke preset)."""
    from fimp_bench.tasks import get_task
    from fimp_bench.train import run_benchmark

    out = tmp_path_factory.mktemp("records")
    records = run_benchmark(
        [get_task("spatial-celltype")],
        ["mlp", "gcn"],
        [0, 1, 2, 3, 4],
        preset="smoke",
        device="cpu",
        out=str(out),
        progress=False,
        data=spatial_data(),
    )
    return out, records


@pytest.fixture(scope="session")
def browser():
    """The system Chromium driven by Playwright (see _browser.py); skips without it (fails
    under FIMP_STRICT_SKIPS=1)."""
    from _browser import launch, require_browser

    require_browser()
    with launch() as b:
        yield b


@pytest.fixture
def browser_page(browser):
    """``(page, log)``: a fresh page whose non-loopback requests are aborted and whose console
    errors, page errors, failed requests and blocked requests are recorded in ``log``."""
    from _browser import open_page

    with open_page(browser) as pair:
        yield pair


def pytest_configure(config):
    # also registered by the repository's conftest.py; repeated here because a run of this
    # folder alone (its rootdir is then packages/fimp-bench) does not load that one
    config.addinivalue_line("markers", "browser: drives a real browser (see _browser.py)")
