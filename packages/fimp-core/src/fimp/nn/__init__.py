"""FIMP layers."""

from fimp.nn.message import MessageCreator

__all__ = ["MessageCreator"]
