"""fMRI readers: parcel x time series files, and NIfTI BOLD + atlas (nibabel)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import EmptySelectionError, MissingKeyError, ShapeError
from ._common import (
    check_finite,
    check_nonempty,
    check_unique,
    existing_path,
    make_data,
    parsing,
)

SERIES_SUFFIXES = (".npy", ".csv", ".tsv")


_NAN_TOKENS = ("", "nan", "NaN", "NAN", "NA", "inf", "-inf", "Inf", "-Inf")


def _read_table(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """A numeric table from .csv/.tsv. A first row that is not numeric (or is the pandas default
    header 0, 1, 2, ...) is a header; a non-numeric first column holds row names."""
    import pandas as pd

    sep = "\t" if path.suffix == ".tsv" else ","
    with parsing(path, "numeric table"):
        raw = pd.read_csv(path, sep=sep, header=None, dtype=str, keep_default_na=False).to_numpy()
    if raw.size == 0:
        raise EmptySelectionError(f"{path} is empty; it needs a numeric table")
    num = pd.DataFrame(raw).apply(lambda c: pd.to_numeric(c, errors="coerce")).to_numpy(np.float64)
    named = (
        raw.shape[1] > 1
        and raw.shape[0] > 1
        and np.isnan(num[1:, 0]).all()
        and not np.isin(raw[1:, 0], _NAN_TOKENS).all()
    )
    body = slice(1, None) if named else slice(0, None)
    first = num[0, body]
    default_header = np.array_equal(first, np.arange(first.shape[0])) and raw.shape[0] > 1
    if (np.isnan(first).all() and not np.isin(raw[0, body], _NAN_TOKENS).all()) or default_header:
        raw, num = raw[1:], num[1:]
    names = [str(v) for v in raw[:, 0]] if named else None
    raw, num = raw[:, body], num[:, body]
    bad = np.isnan(num) & ~np.isin(raw, _NAN_TOKENS)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ShapeError(
            f"{path}: non-numeric value {raw[r, c]!r} at data row {r}, column {c}; the table must "
            "be numbers (optionally one header row and one name column)"
        )
    return num, names


def _read_series(path: Path) -> tuple[np.ndarray, list[str] | None]:
    if path.suffix == ".npy":
        with parsing(path, ".npy array"):
            arr = np.load(path, allow_pickle=False)
        return np.asarray(arr, dtype=np.float64), None
    return _read_table(path)


def _read_coordinates(
    coordinates: str | os.PathLike[str] | np.ndarray,
) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(coordinates, np.ndarray):
        arr = np.asarray(coordinates, dtype=np.float64)
        names = None
    else:
        path = existing_path(coordinates, "region coordinates file")
        if path.suffix == ".npy":
            with parsing(path, ".npy array"):
                arr, names = np.load(path, allow_pickle=False).astype(np.float64), None
        else:
            import pandas as pd

            sep = "\t" if path.suffix == ".tsv" else ","
            with parsing(path, "coordinates table"):
                df = pd.read_csv(path, sep=sep)
            cols = {c.lower(): c for c in df.columns}
            if all(k in cols for k in ("x", "y", "z")):
                arr = df[[cols["x"], cols["y"], cols["z"]]].to_numpy(np.float64)
                name_col = next((cols[k] for k in ("name", "region", "label") if k in cols), None)
                names = [str(v) for v in df[name_col]] if name_col else None
            else:
                raise MissingKeyError(
                    f"{path}: needs columns x, y, z (and optionally name); it has "
                    f"{list(df.columns)}"
                )
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise ShapeError(f"region coordinates must be [R, 3] (or [R, 2]), got {arr.shape}")
    check_finite(arr, "region coordinates")
    return arr, names


def read_parcel_timeseries(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    coordinates: str | os.PathLike[str] | np.ndarray | None = None,
    *,
    region_axis: int = 0,
    region_names: Sequence[str] | None = None,
    tr: float | None = None,
):
    """Read parcel x time BOLD series, one file per subject, into a list of ``Data``.

    Args:
        path: a ``.npy`` / ``.csv`` / ``.tsv`` file, a folder of them (sorted by name), or a list
            of files. The file stem is the subject id. A table may have one header row and one
            non-numeric name column.
        coordinates: region centres: a ``.csv``/``.tsv`` with columns ``x, y, z`` (+ optional
            ``name``), a ``.npy`` ``[R, 3]``, or an array; ``None`` leaves ``pos`` unset.
        region_axis: ``0`` if rows are regions (parcel x time, default), ``1`` if rows are time.
        region_names: optional names ``[R]``; else from the coordinates/name column, else
            ``region_<i>``.
        tr: repetition time in seconds, stored as ``tr`` if given.

    Returns:
        list of ``Data(x [R, T] float32, pos [R, 3] float32, node_ids [R], feature_names [T] =
        "t<k>", group = subject id[, tr])``, one per subject, in file-name order.
    """
    if isinstance(path, str | os.PathLike):
        root = existing_path(path, "parcel series path")
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.suffix in SERIES_SUFFIXES)
            check_nonempty(
                len(files), f"series files in {root} (looked for {SERIES_SUFFIXES})", "add files"
            )
        else:
            files = [root]
    else:
        files = [existing_path(p, "parcel series file") for p in path]
        check_nonempty(len(files), "series files (empty list)", "pass at least one file")
    for f in files:
        if f.suffix not in SERIES_SUFFIXES:
            raise ShapeError(f"{f}: unsupported suffix {f.suffix!r}; use one of {SERIES_SUFFIXES}")
    if region_axis not in (0, 1):
        raise ShapeError(
            f"region_axis must be 0 (regions x time) or 1 (time x regions), got {region_axis}"
        )
    subject_ids = [f.name[: -len(f.suffix)] for f in files]
    check_unique(subject_ids, "subject ids (file stems)", "rename the files so each stem is unique")

    pos = names = None
    if coordinates is not None:
        pos, names = _read_coordinates(coordinates)
    if region_names is not None:
        names = [str(n) for n in region_names]
    out = []
    n_regions = None
    for f, subject in zip(files, subject_ids):
        series, row_names = _read_series(f)
        if series.ndim != 2:
            raise ShapeError(f"{f}: expected a 2-D parcel x time array, got shape {series.shape}")
        if region_axis == 1:
            series = series.T
        if series.shape[0] == 0 or series.shape[1] == 0:
            raise EmptySelectionError(f"{f}: no regions or no time points (shape {series.shape})")
        if n_regions is None:
            n_regions = series.shape[0]
        elif series.shape[0] != n_regions:
            raise ShapeError(
                f"{f}: {series.shape[0]} regions but {files[0].name} has {n_regions}; all subjects "
                "must use the same parcellation (or check region_axis)"
            )
        if pos is not None and pos.shape[0] != n_regions:
            raise ShapeError(
                f"{f}: {n_regions} regions but {pos.shape[0]} coordinate rows; they must match "
                "(or check region_axis)"
            )
        node_ids = (
            names
            or (row_names if region_axis == 0 else None)
            or [f"region_{i}" for i in range(n_regions)]
        )
        if len(node_ids) != n_regions:
            raise ShapeError(f"{len(node_ids)} region names for {n_regions} regions")
        check_finite(series, f"BOLD series of subject {subject!r} ({f.name})", node_ids)
        out.append(
            make_data(
                x=series.astype(np.float32),
                pos=None if pos is None else pos.astype(np.float32),
                node_ids=list(node_ids),
                feature_names=[f"t{k}" for k in range(series.shape[1])],
                group=subject,
                tr=tr,
            )
        )
    return out


def read_nifti(
    bold: str | os.PathLike[str],
    atlas: str | os.PathLike[str],
    *,
    labels: Sequence[int] | None = None,
    region_names: Sequence[str] | None = None,
    subject_id: str | None = None,
):
    """Parcel series from a 4-D NIfTI BOLD image and a 3-D integer atlas on the same grid.

    Each region's series is the mean over the voxels carrying its label (label 0 = background).

    Args:
        bold: 4-D image ``[X, Y, Z, T]`` (``.nii`` / ``.nii.gz``).
        atlas: 3-D label image ``[X, Y, Z]`` on the same voxel grid (same shape and affine);
            resample it first if not (e.g. ``nilearn.image.resample_to_img(atlas, bold,
            interpolation="nearest")``).
        labels: the labels to keep, in this order (default: all non-zero labels, ascending).
        region_names: optional names for ``labels``; default ``label_<v>``.
        subject_id: ``group`` of the result; default the BOLD file name without extension.

    Returns:
        ``Data(x [R, T] float32, pos [R, 3] float32 = voxel centroid of each region in the
        image's world coordinates (mm, from the affine), node_ids [R], feature_names [T], group,
        tr (seconds, from the header, if set))``.
    """
    import nibabel as nib

    bold_path = existing_path(bold, "BOLD NIfTI file")
    atlas_path = existing_path(atlas, "atlas NIfTI file")
    with parsing(bold_path, "NIfTI image"):
        bold_img = nib.load(str(bold_path))
    with parsing(atlas_path, "NIfTI image"):
        atlas_img = nib.load(str(atlas_path))
    if len(bold_img.shape) != 4:
        raise ShapeError(f"{bold_path.name}: BOLD must be 4-D [X, Y, Z, T], got {bold_img.shape}")
    atlas_shape = (
        atlas_img.shape[:3]
        if len(atlas_img.shape) == 4 and atlas_img.shape[3] == 1
        else atlas_img.shape
    )
    if len(atlas_shape) != 3 or tuple(atlas_shape) != tuple(bold_img.shape[:3]):
        raise ShapeError(
            f"atlas grid {atlas_img.shape} differs from BOLD grid {bold_img.shape[:3]}; resample "
            "the atlas to the BOLD image (nearest neighbour) first"
        )
    if not np.allclose(atlas_img.affine, bold_img.affine, atol=1e-3):
        raise ShapeError(
            "atlas and BOLD affines differ (not the same space/grid); resample the atlas to the "
            "BOLD image (nearest neighbour) first"
        )
    lab = np.asarray(atlas_img.dataobj).reshape(-1)
    if not np.allclose(lab, np.round(lab)):
        raise ShapeError(f"{atlas_path.name}: atlas values must be integer labels")
    lab = np.round(lab).astype(np.int64)
    present = np.unique(lab[lab != 0])
    if labels is None:
        labels = present.tolist()
    labels = [int(v) for v in labels]
    check_nonempty(
        len(labels), f"regions (atlas {atlas_path.name} has no non-zero label)", "check the atlas"
    )
    check_unique(labels, "atlas labels", "list each label once")
    absent = [v for v in labels if v not in set(present.tolist())]
    if absent:
        raise EmptySelectionError(
            f"labels {absent[:10]} have no voxels in {atlas_path.name}; labels present: "
            f"{present[:20].tolist()}{'...' if len(present) > 20 else ''}"
        )
    data = np.asarray(bold_img.dataobj, dtype=np.float32)
    n_t = data.shape[3]
    data = data.reshape(-1, n_t)
    import scipy.sparse as sp

    row_of = {v: r for r, v in enumerate(labels)}
    vox = np.flatnonzero(np.isin(lab, labels))
    rows = np.array([row_of[v] for v in lab[vox]], dtype=np.int64)
    counts = np.bincount(rows, minlength=len(labels)).astype(np.float64)
    member = sp.csr_matrix((1.0 / counts[rows], (rows, vox)), shape=(len(labels), data.shape[0]))
    names = (
        [str(n) for n in region_names]
        if region_names is not None
        else [f"label_{v}" for v in labels]
    )
    if len(names) != len(labels):
        raise ShapeError(f"{len(names)} region_names for {len(labels)} labels")
    check_finite(data[vox], f"BOLD voxels inside the atlas ({bold_path.name})")
    series = np.asarray(member @ data.astype(np.float64))
    ijk = np.stack(np.unravel_index(vox, bold_img.shape[:3]), axis=1).astype(np.float64)
    centroid_ijk = np.asarray(member[:, vox] @ ijk)
    pos = nib.affines.apply_affine(bold_img.affine, centroid_ijk)
    zooms = bold_img.header.get_zooms()
    tr = float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else None
    stem = bold_path.name
    for ext in (".nii.gz", ".nii"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    return make_data(
        x=series.astype(np.float32),
        pos=pos.astype(np.float32),
        node_ids=names,
        feature_names=[f"t{k}" for k in range(n_t)],
        group=subject_id or stem,
        tr=tr,
    )
