"""File helpers shared by the checkpoint readers."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["read_onnx", "read_safetensors", "read_torch_weights", "sha256_of"]


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (recorded with the weights a model used)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _what_is_wrong(path: Path) -> str:
    """A short diagnosis of an unreadable weights file (empty, a directory, its size)."""
    if path.is_dir():
        return "it is a directory, not a file"
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes): an interrupted download or copy?"
    return f"{size:,} bytes, truncated or not in this format (re-download or re-convert it)"


def read_safetensors(path: str | Path) -> dict:
    """``safetensors.torch.load_file`` with a :class:`~fimp.errors.CheckpointError` naming the
    file and what is wrong (missing package, missing/empty/truncated/foreign file)."""
    from fimp.errors import CheckpointError, ConfigError

    path = Path(path)
    try:
        from safetensors.torch import load_file
    except ImportError as err:  # pragma: no cover - optional dependency
        raise ConfigError(
            f"reading {path} needs safetensors: pip install 'fimp-core[safetensors]'"
        ) from err
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError, OSError, ... from a corrupt file
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({_what_is_wrong(path)}): "
            f"{type(err).__name__}: {err}"
        ) from err


def read_torch_weights(path: str | Path):
    """``torch.load(path, map_location="cpu", weights_only=True)`` (never a full unpickle), with a
    :class:`~fimp.errors.CheckpointError` naming the file and what is wrong."""
    import torch

    from fimp.errors import CheckpointError

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # foreign pickles are refused by weights_only; truncated zips fail
        raise CheckpointError(
            f"{path} could not be read with torch.load(weights_only=True) "
            f"({_what_is_wrong(path)}): {type(err).__name__}: {err}"
        ) from err


def read_onnx(path: str | Path):
    """``onnx.load(path)`` with a :class:`~fimp.errors.CheckpointError` naming the file."""
    import onnx

    from fimp.errors import CheckpointError

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    try:
        return onnx.load(str(path))
    except Exception as err:  # DecodeError from a truncated/foreign protobuf
        raise CheckpointError(
            f"{path} is not a readable ONNX model ({_what_is_wrong(path)}): "
            f"{type(err).__name__}: {err}"
        ) from err
