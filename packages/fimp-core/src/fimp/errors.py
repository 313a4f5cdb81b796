"""Typed errors raised by fimp. Every message names the problem and how to fix it."""

from __future__ import annotations


class FIMPError(Exception):
    """Base class of every error fimp raises on purpose."""


class ShapeError(FIMPError, ValueError):
    """A tensor has the wrong rank, size or dtype."""


class NonFiniteError(FIMPError, ValueError):
    """A tensor holds NaN or inf where finite values are required."""


class GraphError(FIMPError, ValueError):
    """The graph is malformed: empty, or edge indices out of range."""


class UnknownGeneError(FIMPError, KeyError):
    """Genes are missing from a vocabulary."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(FIMPError, ValueError):
    """A checkpoint is missing, malformed or in an unexpected layout."""


class ConfigError(FIMPError, ValueError):
    """An option or combination of options is invalid."""
