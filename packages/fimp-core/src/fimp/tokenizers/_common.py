"""Input checks shared by the tokenizers. Every failure raises a typed error from `fimp.errors`."""

from __future__ import annotations

import torch
from torch import Tensor

from fimp.errors import ConfigError, NonFiniteError, ShapeError


def check_float(t: object, name: str, rank: int, hint: str) -> Tensor:
    """Return ``t`` if it is a floating-point tensor of rank ``rank``; raise otherwise.

    ``hint`` describes the expected layout (e.g. ``"[N, G] (cells x genes)"``) for the message.
    """
    if not isinstance(t, Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor of shape {hint}, got {type(t).__name__}.")
    if t.dim() != rank:
        raise ShapeError(
            f"{name} must have rank {rank}, shape {hint}; got shape {tuple(t.shape)}."
            + (" Add a batch dimension with .unsqueeze(0)." if t.dim() == rank - 1 else "")
        )
    if not t.is_floating_point():
        raise ShapeError(
            f"{name} must be a floating-point tensor, got dtype {t.dtype}; convert it with .float()."
        )
    return t


def check_finite(t: Tensor, name: str) -> None:
    """Raise `NonFiniteError` if ``t`` holds NaN or +-inf, naming how many entries are bad."""
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteError(
            f"{name} holds {bad} NaN/inf value(s) out of {t.numel()}; impute or drop them before "
            "tokenizing (e.g. torch.nan_to_num)."
        )


def check_bool_mask(mask: object, shape: tuple[int, ...], name: str, meaning: str) -> Tensor:
    """Return ``mask`` if it is a bool tensor of exactly ``shape``; raise `ShapeError` otherwise."""
    if not isinstance(mask, Tensor):
        raise ShapeError(f"{name} must be a bool tensor of shape {shape} ({meaning}).")
    if mask.dtype != torch.bool:
        raise ShapeError(
            f"{name} must have dtype torch.bool ({meaning}, True = masked), got {mask.dtype}; "
            "convert it with .bool()."
        )
    if tuple(mask.shape) != tuple(shape):
        raise ShapeError(
            f"{name} must have shape {tuple(shape)} ({meaning}), got {tuple(mask.shape)}."
        )
    return mask


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``; raise `ConfigError` otherwise."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}.")
    return value  # type: ignore[return-value]


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (bools rejected); raise `ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value
