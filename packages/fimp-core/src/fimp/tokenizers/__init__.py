"""Tokenizers: turn a node's raw features into a token sequence ``(tokens [N, L, d], token_mask [N, L])``.

Each is aligned with a foundation model's own tokenizer so pretrained weights load by name:
`GeneTokenizer` (scGPT / GenePT), `TimeSeriesPatchTokenizer` (BrainLM), `ImagePatchTokenizer` (ViT).
"""

from fimp.tokenizers.gene import GeneTokenizer
from fimp.tokenizers.image import ImagePatchTokenizer
from fimp.tokenizers.timeseries import TimeSeriesPatchTokenizer

__all__ = ["GeneTokenizer", "ImagePatchTokenizer", "TimeSeriesPatchTokenizer"]
