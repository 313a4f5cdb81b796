"""fimp_data: datasets, verified downloads, readers, graph builders and splits for FIMP.

``import fimp_data`` stays light: anndata, nibabel, Pillow and matplotlib are imported only inside
the reader that needs them.
"""

from . import errors
from .graphs import delaunay_graph, knn_graph, radius_graph
from .registry import cache_dir, list_datasets, register_local

__version__ = "0.1.0"

__all__ = [
    "cache_dir",
    "delaunay_graph",
    "errors",
    "knn_graph",
    "list_datasets",
    "radius_graph",
    "register_local",
]
