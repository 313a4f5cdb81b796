"""``load()``: registry entry -> verified local files -> reader -> graph -> PyG ``Data``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .download import download_file, extract_archive, sha256_file, verify_file
from .errors import (
    ChecksumError,
    DataFileNotFoundError,
    EmptySelectionError,
    RegistryError,
    ShapeError,
)
from .graphs import delaunay_graph, knn_graph, radius_graph
from .registry import DatasetEntry, FileEntry, cache_dir, dataset_checksum, get_entry

__all__ = ["build_graph", "dataset_files", "load"]


def _package_dir() -> Path:
    return Path(str(resources.files("fimp_data")))


def _hash_path(path: Path) -> str:
    """sha256 of a file, or of the lines ``"<relative path>:<sha256>\\n"`` of a folder's files."""
    if path.is_file():
        return sha256_file(path)
    lines = [
        f"{p.relative_to(path).as_posix()}:{sha256_file(p)}\n"
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def dataset_files(
    entry: DatasetEntry, *, root: str | os.PathLike[str] | None = None, download: bool = False
) -> list[Path]:
    """Local, verified paths of an entry's files (downloading them if ``download``)."""
    base = Path(root).expanduser() if root is not None else cache_dir() / entry.name
    paths = []
    for f in entry.files:
        if f.source == "embedded":
            paths.append(_embedded_file(entry, f))
        elif f.source == "url":
            paths.append(_cached_file(entry, f, base, download))
        else:
            paths.append(_local_file(entry, f, base, root is not None))
    return paths


def _embedded_file(entry: DatasetEntry, f: FileEntry) -> Path:
    path = _package_dir() / str(f.path)
    if not path.is_file():
        raise DataFileNotFoundError(
            f"dataset {entry.name!r}: embedded file {f.path!r} is missing from the installed "
            f"fimp_data package ({path}); reinstall fimp-data"
        )
    try:
        verify_file(path, sha256=f.sha256, size=f.size)
    except ChecksumError as exc:
        raise ChecksumError(
            f"dataset {entry.name!r}: embedded file {f.path!r} does not match its registry "
            f"checksum ({exc}); reinstall fimp-data or rebuild the file with its script"
        ) from exc
    return path


def _cached_file(entry: DatasetEntry, f: FileEntry, base: Path, download: bool) -> Path:
    target = base / f.name
    if target.exists():
        try:
            verify_file(target, sha256=f.sha256, size=f.size)
        except ChecksumError as exc:
            if not download:
                raise ChecksumError(
                    f"dataset {entry.name!r}: cached {target} does not match the registry ({exc}); "
                    "call load(..., download=True) to fetch a verified copy (the old file is "
                    "replaced only once the new one verifies), or delete it"
                ) from exc
            download_file([f.url, *f.mirrors], target, sha256=str(f.sha256), size=f.size)
    elif not download:
        raise DataFileNotFoundError(
            f"dataset {entry.name!r}: {f.name} is not in {base}; call "
            f"fimp_data.load({entry.name!r}, download=True) (needs internet), or download "
            f"{f.url} yourself and place it at {target} (it is verified by sha256)"
        )
    else:
        download_file([f.url, *f.mirrors], target, sha256=str(f.sha256), size=f.size)
    if f.extract:
        return extract_archive(target, base / (f.name + ".d"))
    return target


def _local_file(entry: DatasetEntry, f: FileEntry, base: Path, root_given: bool) -> Path:
    path = Path(str(f.local)).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        hint = "" if root_given else " (pass root=<your folder>)"
        raise DataFileNotFoundError(
            f"dataset {entry.name!r} is user-supplied: {f.name} expected at {path}{hint}. "
            f"{entry.description}"
        )
    if f.sha256 is not None:
        verify_file(path, sha256=f.sha256, size=f.size)
    return path


def build_graph(data: Any, recipe: Mapping[str, Any]) -> torch.Tensor:
    """``edge_index`` for ``data`` from a registry graph recipe (see ``registry.yaml``)."""
    builder = recipe.get("builder", "none")
    if builder == "none":
        return torch.zeros((2, 0), dtype=torch.long)
    pos = getattr(data, "pos", None)
    if pos is None:
        raise ShapeError(
            f"graph recipe {dict(recipe)} needs node coordinates but the data has no `pos`; "
            "give the reader coordinates or use graph={'builder': 'none'}"
        )
    groups = None
    if recipe.get("groups"):
        groups = getattr(data, str(recipe["groups"]), None)
        if groups is None:
            raise RegistryError(
                f"graph recipe groups={recipe['groups']!r} but the data has no such attribute"
            )
        groups = np.asarray(groups)
    metric = recipe.get("metric", "euclidean")
    if builder == "knn":
        return knn_graph(pos, int(recipe["k"]), groups=groups, metric=metric)
    if builder == "radius":
        return radius_graph(pos, float(recipe["r"]), groups=groups, metric=metric)
    if builder == "delaunay":
        return delaunay_graph(pos, groups=groups)
    raise RegistryError(f"unknown graph builder {builder!r}; use knn, radius, delaunay or none")


def _finalize(
    data: Any, entry: DatasetEntry, sha: str, recipe: Mapping[str, Any], what: str
) -> Any:
    from torch_geometric.data import Data

    if not isinstance(data, Data):
        raise RegistryError(
            f"dataset {entry.name!r}: reader {entry.reader} returned {type(data).__name__} for "
            f"{what}; it must return torch_geometric.data.Data"
        )
    x = getattr(data, "x", None)
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ShapeError(f"dataset {entry.name!r} ({what}): reader must set x [N, ...]")
    n = x.shape[0]
    if n == 0:
        raise EmptySelectionError(f"dataset {entry.name!r} ({what}) has no nodes")
    if x.is_floating_point() and x.dtype != torch.float32:
        data.x = x.float()
    pos = getattr(data, "pos", None)
    if pos is not None and (pos.dim() != 2 or pos.shape[0] != n or pos.shape[1] not in (2, 3)):
        raise ShapeError(
            f"dataset {entry.name!r} ({what}): pos must be [N, 2|3], got {tuple(pos.shape)}"
        )
    y = getattr(data, "y", None)
    if y is not None and (y.shape[0] != n or y.dtype != torch.long):
        raise ShapeError(f"dataset {entry.name!r} ({what}): y must be long [N]")
    if getattr(data, "edge_index", None) is None:
        data.edge_index = build_graph(data, recipe)
    ei = data.edge_index
    if ei.dim() != 2 or ei.shape[0] != 2 or ei.dtype != torch.long:
        raise ShapeError(f"dataset {entry.name!r} ({what}): edge_index must be long [2, E]")
    if ei.numel() and (ei.min() < 0 or ei.max() >= n):
        raise ShapeError(f"dataset {entry.name!r} ({what}): edge_index out of range for {n} nodes")
    data.dataset = entry.name
    data.sha256 = sha
    return data


def load(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    graph: Mapping[str, Any] | None = None,
):
    """Load a registered dataset as PyG data (no network unless ``download=True``).

    Args:
        name: a name from :func:`fimp_data.list_datasets`.
        root: folder holding the dataset's files. Downloaded datasets: default
            ``<cache>/<name>``, where ``<cache>`` is ``$FIMP_DATA_DIR`` or the per-user cache
            (:func:`fimp_data.cache_dir`). User-supplied datasets: the folder with your files
            (layout in the entry's description). Embedded datasets ignore it.
        download: fetch missing (or stale) files, verified by sha256 (and size when registered).
        graph: override the registry's graph recipe, e.g. ``{"builder": "knn", "k": 10}``.

    Every file is verified (embedded files too) before the reader runs; the graph is built from
    the recipe unless the reader set ``edge_index``.

    Returns:
        ``kind: node`` -> one ``torch_geometric.data.Data``; ``kind: graph`` -> ``list[Data]``, one
        per subject / sample. Each ``Data`` follows these conventions:

        - ``x``: raw features, float32 ``[N, F]``: expression per gene, BOLD per time point, or
          for images RGB in [0, 1] flattened channel-first with ``image_shape = (3, H, W)``;
          values as the source stores them (no normalisation). Dense, except where the file
          stores the matrix sparse (e.g. the Slide-seqV2 ``.h5ad``): then ``x`` is a coalesced
          ``torch.sparse_coo_tensor`` (``x.layout == torch.sparse_coo``, see
          :func:`fimp_data.read_h5ad`); ``x.to_dense()`` gives the dense tensor.
        - ``pos``: float32 ``[N, 2|3]`` (tissue / array coordinates, region centres, or
          (lat, lon) degrees for images).
        - ``y``: long ``[N]`` with ``label_names`` (list[str]); absent when unlabelled.
        - ``edge_index``: long ``[2, E]``, source = row 0, target = row 1, sorted by target, no
          self loops.
        - ``feature_names`` (list[str], length F; gene names for spatial data; may be absent for
          images and time series), ``node_ids`` (list[str], length N).
        - ``dataset`` = ``name``; ``sha256`` = the dataset checksum (registry file sha256 for
          one file, else sha256 of ``"<file>:<sha256>\\n"`` lines; user files are hashed).
        - graph-level items also carry ``group`` (subject / sample id).

    Raises:
        UnknownDatasetError: the name is not registered.
        DataFileNotFoundError: not downloaded, or a path is missing.
        DownloadError: a download failed.
        ChecksumError: a cached or embedded file differs from the registry (the cached file is
            left as it is).
        RegistryError: the registry entry is malformed; the readers' errors pass through.
    """
    entry = get_entry(name)
    recipe = dict(graph) if graph is not None else dict(entry.graph)
    paths = dataset_files(entry, root=root, download=download)
    sha = entry.sha256
    if sha is None:
        sha = dataset_checksum(
            [(f.name, f.sha256 or _hash_path(p)) for f, p in zip(entry.files, paths)]
        )
    reader = entry.resolve_reader()
    out = reader(*paths, **dict(entry.reader_args))
    if entry.kind == "node":
        if isinstance(out, list | tuple):
            if len(out) != 1:
                raise RegistryError(
                    f"dataset {name!r} is kind 'node' but its reader returned {len(out)} items; "
                    "set kind: graph"
                )
            out = out[0]
        return _finalize(out, entry, str(sha), recipe, "node-level")
    items = list(out) if isinstance(out, list | tuple) else [out]
    if not items:
        raise EmptySelectionError(f"dataset {name!r}: the reader returned no graphs")
    result = []
    for i, item in enumerate(items):
        item = _finalize(item, entry, str(sha), recipe, f"graph {i}")
        if getattr(item, "group", None) is None:
            item.group = str(i)
        result.append(item)
    return result
