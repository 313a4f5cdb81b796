"""Typed errors raised by fimp_data. Every message names the problem and how to fix it."""

from __future__ import annotations


class FIMPDataError(Exception):
    """Base class of every error fimp_data raises on purpose."""


class RegistryError(FIMPDataError, ValueError):
    """The dataset registry (or a user registry file) is malformed."""


class UnknownDatasetError(FIMPDataError, KeyError):
    """No dataset of that name is registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DownloadError(FIMPDataError, OSError):
    """A download failed (HTTP error, timeout, connection refused, network disabled)."""


class ChecksumError(FIMPDataError, ValueError):
    """A file's sha256 or size differs from the registry (corrupt, truncated or tampered)."""


class ArchiveError(FIMPDataError, ValueError):
    """An archive member would escape the target folder (absolute path, '..', link) or is unsafe."""


class DataFileNotFoundError(FIMPDataError, FileNotFoundError):
    """A path that a reader or load() needs does not exist."""


class MissingKeyError(FIMPDataError, KeyError):
    """A key or column is missing from a file; the message lists those that exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NonFiniteError(FIMPDataError, ValueError):
    """Expression values, signals or coordinates hold NaN or inf."""


class DuplicateIdError(FIMPDataError, ValueError):
    """Cell / region / image ids are not unique."""


class EmptySelectionError(FIMPDataError, ValueError):
    """A selection (of cells, genes, regions, files, split part) is empty."""


class ShapeError(FIMPDataError, ValueError):
    """An array has the wrong rank or size."""


class GraphBuildError(FIMPDataError, ValueError):
    """Graph-builder arguments are invalid (k < 1, r <= 0, unknown metric, bad groups)."""


class SplitError(FIMPDataError, ValueError):
    """Split arguments are invalid, or a saved split does not match the dataset."""


class CorruptFileError(FIMPDataError, ValueError):
    """A data file exists but cannot be parsed: empty, truncated, a directory, or another format.
    The message names the file, what looks wrong and the fix."""
