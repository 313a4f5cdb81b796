"""A timm-style model registry: ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from fimp.errors import ConfigError

F = TypeVar("F", bound=Callable[..., nn.Module])

_MODEL_FNS: dict[str, Callable[..., nn.Module]] = {}
# modules whose import registers more models (the pretrained adapters); imported on first lookup
_PLUGIN_MODULES = ("fimp.pretrained",)
_plugins_loaded = False


def register_model(fn: F) -> F:
    """Register a model builder under its function name (decorator), e.g. ``fimp_base``.

    The builder takes keyword arguments only and returns an ``nn.Module``. Registering a name twice
    raises :class:`~fimp.errors.ConfigError` unless it is the same function (re-import).
    """
    name = fn.__name__
    old = _MODEL_FNS.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
        raise ConfigError(
            f"a model named {name!r} is already registered by {old.__module__}; pick another name"
        )
    _MODEL_FNS[name] = fn
    return fn


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for mod in _PLUGIN_MODULES:
        importlib.import_module(mod)


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally filtered by a shell pattern (``fimp_*``)."""
    _load_plugins()
    names = sorted(_MODEL_FNS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name, passing ``kwargs`` to its builder.

    Raises:
        ConfigError: unknown name (the message lists the registered names and close matches).
    """
    _load_plugins()
    if name not in _MODEL_FNS:
        close = difflib.get_close_matches(name, list(_MODEL_FNS), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ConfigError(
            f"unknown model {name!r}.{hint} Registered models: {sorted(_MODEL_FNS)} "
            "(register your own with @fimp.register_model)"
        )
    return _MODEL_FNS[name](**kwargs)
