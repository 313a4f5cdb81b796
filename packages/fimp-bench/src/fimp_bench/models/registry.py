"""One model registry for the bench: built-in baselines, FIMP models and entry-point plugins.

A third-party package registers models through the entry-point group ``fimp_bench.models``; the
entry point must resolve to a :class:`ModelSpec`, a list of them, or a zero-argument callable
returning either::

    [project.entry-points."fimp_bench.models"]
    my-gnn = "my_package.bench:SPEC"
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import Any

import torch
import yaml

from fimp_bench.errors import BenchConfigError, UnknownNameError

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelSpec",
    "get_model",
    "list_models",
    "load_config",
    "register_model",
    "registry",
]

ENTRY_POINT_GROUP = "fimp_bench.models"


@dataclass(frozen=True)
class ModelSpec:
    """A registered benchmark model.

    Attributes:
        name: registry key (``gcn``, ``fimp-base``, ...).
        build: ``build(prepared_task, config) -> nn.Module``; the module's ``forward(data)``
            returns ``{"out": [N, out_dim] (None for embedding-only models), "embedding": [N, h]}``
            where ``data`` carries ``x [N, F]``, ``edge_index`` and (graph batches) ``batch``.
        defaults: default hyper-parameters (``lr``, ``weight_decay``, ``hidden``, ...).
        grid: tuning grid, a list of overrides of ``defaults``; every model gets the same
            number of trials (the preset's ``tuning_budget``), so ``grid`` needs at least that many.
        source: where the implementation comes from (e.g. ``torch_geometric.nn.GCNConv``).
        implementation: ``official`` (the authors' own code) or ``re-implementation``.
        external_weights: pretrained weights / external data used: dicts with ``name``, ``sha256``.
        num_hops: message-passing depth for a config (k of the k-hop batches under DDP).
        local: True when node outputs depend only on the ``num_hops`` neighbourhood (False for
            global attention, e.g. GPS): then DDP k-hop batches are an approximation.
    """

    name: str
    build: Callable[..., torch.nn.Module]
    defaults: dict[str, Any]
    grid: tuple[dict[str, Any], ...] = ({},)
    source: str = ""
    implementation: str = "re-implementation"
    external_weights: tuple[dict[str, str], ...] = ()
    num_hops: Callable[[dict[str, Any]], int] = field(default=lambda cfg: int(cfg.get("layers", 2)))
    local: bool = True
    description: str = ""

    def trials(self, budget: int) -> list[dict[str, Any]]:
        """The first ``budget`` configurations of the grid, each merged into ``defaults``."""
        if len(self.grid) < budget:
            raise BenchConfigError(
                f"model {self.name!r} declares {len(self.grid)} grid points but the preset's tuning "
                f"budget is {budget}; add grid points to its config so every model gets the same "
                "budget"
            )
        return [{**copy.deepcopy(self.defaults), **g} for g in self.grid[:budget]]


def load_config(name: str) -> dict[str, Any]:
    """The packaged YAML config ``configs/<name>.yaml`` (``defaults`` and ``grid``).

    An ablation's config may instead name ``base: <other config>`` and ``overrides: {...}``: it
    then has the base's grid (the same search space and budget) and the base's defaults with the
    overrides applied on top of every grid point."""
    path = resources.files("fimp_bench") / "configs" / f"{name}.yaml"
    if not path.is_file():
        raise BenchConfigError(f"no packaged config {name}.yaml in fimp_bench/configs")
    cfg = yaml.safe_load(path.read_text())
    if isinstance(cfg, dict) and "base" in cfg:
        base = load_config(str(cfg["base"]))
        over = dict(cfg.get("overrides") or {})
        return {
            "description": cfg.get("description", base.get("description", "")),
            "defaults": {**base["defaults"], **over},
            "grid": [{**g, **over} for g in base["grid"]],
            "base": str(cfg["base"]),
            "overrides": over,
        }
    if not isinstance(cfg, dict) or "defaults" not in cfg or "grid" not in cfg:
        raise BenchConfigError(f"config {name}.yaml must be a mapping with 'defaults' and 'grid'")
    return cfg


def _check_spec_name(spec: ModelSpec) -> None:
    """A model name becomes a folder of the records: it must be a safe path component."""
    from fimp_bench.errors import RecordError
    from fimp_bench.records import check_name

    try:
        check_name(spec.name, "model name")
    except RecordError as e:
        raise BenchConfigError(str(e)) from None


class _Registry:
    def __init__(self) -> None:
        self._builtin: dict[str, ModelSpec] = {}
        self._plugins: dict[str, ModelSpec] | None = None
        self._plugin_errors: dict[str, str] = {}

    def add(self, spec: ModelSpec) -> ModelSpec:
        _check_spec_name(spec)
        if spec.name in self._builtin:
            raise BenchConfigError(f"model {spec.name!r} is registered twice")
        self._builtin[spec.name] = spec
        return spec

    def _load_plugins(self) -> dict[str, ModelSpec]:
        if self._plugins is None:
            self._plugins = {}
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                try:
                    obj = ep.load()
                    if callable(obj) and not isinstance(obj, ModelSpec):
                        obj = obj()
                    specs = [obj] if isinstance(obj, ModelSpec) else list(obj)
                    for s in specs:
                        if not isinstance(s, ModelSpec):
                            raise TypeError(f"entry point gave {type(s).__name__}, not ModelSpec")
                        _check_spec_name(s)
                        if s.name in self._builtin:
                            raise BenchConfigError(f"plugin model {s.name!r} shadows a built-in")
                        self._plugins[s.name] = s
                except Exception as e:  # a broken plugin must not break the bench
                    self._plugin_errors[ep.name] = f"{type(e).__name__}: {e}"
        return self._plugins

    def all(self) -> dict[str, ModelSpec]:
        _ensure_builtins()
        return {**self._builtin, **self._load_plugins()}

    def reload_plugins(self) -> None:
        self._plugins = None
        self._plugin_errors = {}

    @property
    def plugin_errors(self) -> dict[str, str]:
        self._load_plugins()
        return dict(self._plugin_errors)


registry = _Registry()


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the built-in registry (plugins use the entry-point group instead)."""
    return registry.add(spec)


def list_models() -> list[str]:
    """Every registered model name: built-ins first, then entry-point plugins."""
    return list(registry.all())


def get_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``; :class:`UnknownNameError` lists valid names."""
    models = registry.all()
    if name not in models:
        raise UnknownNameError(f"unknown model {name!r}; valid models: {', '.join(models)}")
    return models[name]


def _ensure_builtins() -> None:
    """Register the built-in specs on first use: PyG baselines, fimp-base, foundation models."""
    if not registry._builtin:
        from fimp_bench.models import baselines, fimp_models, foundation

        for spec in (*baselines.specs(), *fimp_models.specs(), *foundation.specs()):
            registry.add(spec)


def names(specs: Iterable[ModelSpec]) -> list[str]:
    return [s.name for s in specs]
