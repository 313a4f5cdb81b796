"""fimp_bench: the FIMP benchmark."""

__version__ = "0.1.0"
