"""Image folder + coordinates CSV reader (geo-referenced images, e.g. Mapillary-style)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import DataFileNotFoundError, MissingKeyError, NonFiniteError, ShapeError
from ._common import (
    check_nonempty,
    check_unique,
    encode_labels,
    existing_path,
    make_data,
    parsing,
)


def read_image_folder(
    root: str | os.PathLike[str],
    coordinates_csv: str | os.PathLike[str],
    *,
    image_column: str = "image",
    lat_column: str = "lat",
    lon_column: str = "lon",
    label_column: str | None = None,
    size: int | Sequence[int] | None = None,
):
    """Read geo-tagged images listed in a CSV into a node-level ``Data`` (one node per image).

    Args:
        root: folder the CSV's image paths are relative to.
        coordinates_csv: CSV (``.tsv`` = tab-separated) with one row per image: ``image_column``
            (path relative to ``root``), ``lat_column`` and ``lon_column`` in degrees (WGS84) and
            optionally ``label_column`` (e.g. country).
        size: ``(height, width)`` or an int to resize every image to (bilinear); ``None`` = all
            images must already share one size.

    Returns:
        ``Data(x [N, 3*H*W] float32 RGB in [0, 1], channel-first flattened (reshape with
        ``image_shape`` = (3, H, W)), pos [N, 2] float32 = (lat, lon) degrees, y [N] long +
        label_names (if label_column), node_ids [N] = image paths)``.
        Build graphs with ``metric="haversine"`` (radius in km).
    """
    from PIL import Image

    root = existing_path(root, "image folder")
    if not root.is_dir():
        raise DataFileNotFoundError(f"image folder {str(root)!r} is not a folder")
    csv = existing_path(coordinates_csv, "coordinates CSV")
    import pandas as pd

    with parsing(csv, "coordinates CSV"):
        df = pd.read_csv(csv, sep="\t" if csv.suffix == ".tsv" else ",")
    need = [image_column, lat_column, lon_column] + ([label_column] if label_column else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise MissingKeyError(
            f"{csv.name}: columns {missing} not found; it has {list(df.columns)}. Pass "
            "image_column=/lat_column=/lon_column=/label_column= to name yours"
        )
    check_nonempty(len(df), f"images ({csv.name} has no rows)", "list at least one image")
    ids = [str(v) for v in df[image_column]]
    check_unique(ids, f"image paths in {csv.name}", "list each image once")
    latlon = df[[lat_column, lon_column]].apply(lambda c: pd.to_numeric(c, errors="coerce"))
    latlon = latlon.to_numpy(np.float64)
    bad = ~np.isfinite(latlon).all(axis=1)
    if bad.any():
        raise NonFiniteError(
            f"{int(bad.sum())} images have no coordinates (first: {[ids[i] for i in np.flatnonzero(bad)[:5]]}); "
            "drop those rows or fill lat/lon"
        )
    if (np.abs(latlon[:, 0]) > 90).any() or (np.abs(latlon[:, 1]) > 180).any():
        raise ShapeError(
            f"{csv.name}: latitude must be in [-90, 90] and longitude in [-180, 180] degrees; "
            "are the columns swapped?"
        )
    paths = [root / i for i in ids]
    absent = [i for i, p in zip(ids, paths) if not p.is_file()]
    if absent:
        raise DataFileNotFoundError(
            f"{len(absent)} images listed in {csv.name} are missing under {root} (first: "
            f"{absent[:5]}); fix the paths or drop those rows"
        )
    if isinstance(size, int):
        size = (size, size)
    arrays = []
    for i, p in zip(ids, paths):
        with parsing(p, "image"), Image.open(p) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
        if arrays and arr.shape != arrays[0].shape:
            raise ShapeError(
                f"image {i!r} is {arr.shape[1]}x{arr.shape[0]} but {ids[0]!r} is "
                f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; pass size=(H, W) to resize"
            )
        arrays.append(arr)
    images = np.stack(arrays).transpose(0, 3, 1, 2)
    image_shape = tuple(int(v) for v in images.shape[1:])
    x = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    y = label_names = None
    if label_column:
        col = df[label_column]
        if col.isna().any():
            raise MissingKeyError(
                f"{csv.name}: {label_column!r} is empty for {int(col.isna().sum())} images; "
                "label or drop them"
            )
        y, label_names = encode_labels(col)
    return make_data(
        x=x,
        pos=latlon.astype(np.float32),
        y=y,
        image_shape=image_shape,
        label_names=label_names,
        node_ids=ids,
    )
