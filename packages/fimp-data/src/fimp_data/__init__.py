"""fimp_data: datasets, downloads, readers, graph builders and splits for FIMP."""

__version__ = "0.1.0"
