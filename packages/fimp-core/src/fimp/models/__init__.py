"""FIMP models and the timm-style model registry."""

from fimp.models.fimp import FIMP, build_tokenizer, embed, fimp_base, masked_mean
from fimp.models.registry import create_model, list_models, register_model

__all__ = [
    "FIMP",
    "build_tokenizer",
    "create_model",
    "embed",
    "fimp_base",
    "list_models",
    "masked_mean",
    "register_model",
]
