"""Readers for the formats people have: .h5ad, parcel x time series, NIfTI + atlas, image folders.

Each returns ``torch_geometric.data.Data`` (node-level) or ``list[Data]`` (one per subject) in the
conventions of :func:`fimp_data.load`. Heavy libraries (anndata, nibabel, Pillow) are imported
inside the reader that needs them.
"""

from .fmri import read_nifti, read_parcel_timeseries
from .h5ad import read_h5ad
from .images import read_image_folder

__all__ = ["read_h5ad", "read_image_folder", "read_nifti", "read_parcel_timeseries"]
