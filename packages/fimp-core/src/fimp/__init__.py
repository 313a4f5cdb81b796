"""FIMP: Foundation-Informed Message Passing.

Nodes carry token sequences; messages are cross-node attention between them (``fimp.nn.FIMPConv``).
"""

from fimp import interpret, nn, pretrained, tokenizers
from fimp.models import FIMP, create_model, embed, list_models, register_model

__version__ = "0.1.0"

__all__ = [
    "FIMP",
    "create_model",
    "embed",
    "interpret",
    "list_models",
    "nn",
    "pretrained",
    "register_model",
    "tokenizers",
]
