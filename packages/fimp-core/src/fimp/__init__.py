"""FIMP: Foundation-Informed Message Passing.

Nodes carry token sequences; messages are cross-node attention between them (``fimp.nn.FIMPConv``).
"""

from fimp import interpret as interpret
from fimp import nn, tokenizers
from fimp.models import FIMP, create_model, embed, list_models, register_model

__version__ = "0.1.0"

__all__ = ["FIMP", "create_model", "embed", "list_models", "nn", "register_model", "tokenizers"]
