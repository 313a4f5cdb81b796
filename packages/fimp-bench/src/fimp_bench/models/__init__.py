"""Benchmark models: PyG baselines, FIMP models and entry-point plugins (one registry)."""

from fimp_bench.models.registry import (
    ENTRY_POINT_GROUP,
    ModelSpec,
    get_model,
    list_models,
    load_config,
    register_model,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelSpec",
    "get_model",
    "list_models",
    "load_config",
    "register_model",
]
