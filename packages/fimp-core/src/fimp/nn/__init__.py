"""FIMP layers: the message-passing layer, its default message creator and the protocol."""

from fimp.nn.cross_attention import CrossAttention
from fimp.nn.fimp_conv import FIMPConv
from fimp.nn.message import MessageCreator

__all__ = ["CrossAttention", "FIMPConv", "MessageCreator"]
