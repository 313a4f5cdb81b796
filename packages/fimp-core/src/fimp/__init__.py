"""FIMP: Foundation-Informed Message Passing."""

__version__ = "0.1.0"
