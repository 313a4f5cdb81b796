"""fimp_data: datasets, verified downloads, readers, graph builders and splits for FIMP.

``import fimp_data`` stays light: anndata, nibabel, Pillow and matplotlib are imported only inside
the reader that needs them.
"""

from . import errors
from .datasets import build_graph, load
from .download import download_file, extract_archive, sha256_file
from .graphs import delaunay_graph, knn_graph, radius_graph
from .readers import read_h5ad, read_image_folder, read_nifti, read_parcel_timeseries
from .registry import cache_dir, get_entry, list_datasets, register_local
from .splits import Split, group_split, load_split, random_split, spatial_block_split

__version__ = "0.1.0"

__all__ = [
    "Split",
    "build_graph",
    "cache_dir",
    "delaunay_graph",
    "download_file",
    "errors",
    "extract_archive",
    "get_entry",
    "group_split",
    "knn_graph",
    "list_datasets",
    "load",
    "load_split",
    "radius_graph",
    "random_split",
    "read_h5ad",
    "read_image_folder",
    "read_nifti",
    "read_parcel_timeseries",
    "register_local",
    "sha256_file",
    "spatial_block_split",
]
