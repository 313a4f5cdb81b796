"""scGPT (Cui et al. 2024, github.com/bowang-lab/scGPT) as a FIMP tokenizer + message creator.

Checkpoint directory (the layout of ``scGPT_human``, ``scGPT_CP``, ``scGPT_bc``, ...; read by
upstream ``scgpt.tasks.cell_emb.embed_data``):

- ``args.json``: the training argparse dump; ``embsize``, ``nheads``, ``d_hid``, ``nlayers``,
  ``dropout``, ``pad_token`` (``"<pad>"``), ``pad_value`` (-2), ``input_emb_style``
  (``"continuous"``) are used.
- ``vocab.json``: ``{token: index}`` with consecutive indices; ``"<pad>"``, ``"<cls>"``,
  ``"<eoc>"`` are appended in that order when missing (as upstream ``embed_data`` does).
- ``best_model.pt``: ``torch.save(model.state_dict())``, read with ``torch.load(weights_only=True)``.

State-dict keys (``scgpt.model.TransformerModel``): ``encoder.embedding.weight`` and
``encoder.enc_norm.*`` (gene embedding + LayerNorm), ``value_encoder.linear1/linear2/norm.*``
(``ContinuousValueEncoder``: clamp(max=512) -> Linear(1, d) -> ReLU -> Linear(d, d) -> LayerNorm),
``transformer_encoder.layers.{i}.*`` (post-LN blocks, ReLU MLP, exact softmax attention) whose
attention is stored in one of three layouts holding the same packed ``[q; k; v]`` rows:

- ``self_attn.in_proj_weight`` / ``in_proj_bias`` (PyTorch ``nn.TransformerEncoderLayer``),
- ``self_attn.Wqkv.weight`` / ``.bias`` (released checkpoints, flash-attn 1.x ``FlashMHA``),
- ``self_attn._impl.Wqkv.*`` / ``self_attn._impl.out_proj.*`` (upstream's current
  ``flash_attn_compat.FlashMHA`` wrapper).

The model input is ``enc_norm(embedding(gene)) + value_encoder(value)`` with no positional
encoding; a cell is ``<cls>`` (value ``pad_value``) followed by its non-zero genes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fimp.errors import CheckpointError, ConfigError, UnknownGeneError
from fimp.models import FIMP, register_model
from fimp.pretrained._files import read_torch_weights, sha256_of
from fimp.pretrained.two_stream import (
    FeedForward,
    PretrainedComponents,
    TransformerBlock,
    TwoStreamMessage,
)
from fimp.tokenizers.gene import GeneTokenizer

__all__ = [
    "ScGPTCheckpoint",
    "fimp_scgpt",
    "load_scgpt",
    "map_genes",
    "normalize_scgpt_keys",
    "read_scgpt",
    "scgpt_blocks",
    "scgpt_tokenizer",
]

SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")

_RENAMES = (
    (re.compile(r"self_attn\._impl\.Wqkv\."), "self_attn.in_proj_"),
    (re.compile(r"self_attn\.Wqkv\."), "self_attn.in_proj_"),
    (re.compile(r"self_attn\._impl\.out_proj\."), "self_attn.out_proj."),
)
_REQUIRED_ARGS = ("embsize", "nheads", "d_hid", "nlayers")


@dataclass(frozen=True)
class ScGPTCheckpoint:
    """A parsed scGPT model directory.

    Attributes:
        args: the ``args.json`` dict.
        vocab: token -> row of ``encoder.embedding.weight`` (specials appended as upstream does).
        state: the state dict with attention keys in the PyTorch layout
            (``self_attn.in_proj_weight``/``in_proj_bias``/``out_proj.*``), float32 tensors.
        layout: which attention key layout the file used: ``"pytorch"``, ``"flash"`` (``Wqkv``) or
            ``"flash_compat"`` (``_impl.Wqkv``).
    """

    args: dict[str, Any]
    vocab: dict[str, int]
    state: dict[str, Tensor] = field(repr=False)
    layout: str

    @property
    def dim(self) -> int:
        """Token width d (``embsize``)."""
        return int(self.args["embsize"])

    @property
    def heads(self) -> int:
        """Attention heads (``nheads``)."""
        return int(self.args["nheads"])

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks (``nlayers``)."""
        return int(self.args["nlayers"])

    @property
    def pad_token(self) -> str:
        return str(self.args.get("pad_token", "<pad>"))

    @property
    def pad_value(self) -> float:
        return float(self.args.get("pad_value", -2))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing; an scGPT model directory holds args.json, vocab.json and "
            "best_model.pt"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _read_vocab(path: Path) -> dict[str, int]:
    raw = _read_json(path)
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in raw.items()
    ):
        raise CheckpointError(f"{path} must be a JSON object {{token: index}}")
    indices = sorted(raw.values())
    if indices != list(range(len(indices))):
        raise CheckpointError(
            f"{path}: indices must be consecutive from 0 (scGPT's GeneVocab requires it)"
        )
    vocab = dict(sorted(raw.items(), key=lambda kv: kv[1]))
    for tok in SPECIAL_TOKENS:  # upstream embed_data appends the missing specials in this order
        if tok not in vocab:
            vocab[tok] = len(vocab)
    return vocab


def normalize_scgpt_keys(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Rename any of scGPT's three attention key layouts to the PyTorch one.

    Returns ``(state, layout)`` with layout ``"pytorch"``, ``"flash"`` or ``"flash_compat"``.
    Upstream ``scgpt.utils.load_pretrained`` applies the same renames.
    """
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
        keys = list(state)
    if any("fast_transformer_encoder" in k for k in keys):
        raise CheckpointError(
            "this scGPT checkpoint uses the linear-attention backend "
            "(fast_transformer_backend='linear'); only exact-attention checkpoints (PyTorch or "
            "flash-attn layouts) are supported"
        )
    if any("self_attn._impl." in k for k in keys):
        layout = "flash_compat"
    elif any("self_attn.Wqkv." in k for k in keys):
        layout = "flash"
    else:
        layout = "pytorch"
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        for pattern, repl in _RENAMES:
            k = pattern.sub(repl, k)
        out[k] = v
    return out, layout


def read_scgpt(path: str | os.PathLike[str]) -> ScGPTCheckpoint:
    """Read an scGPT model directory (``args.json``, ``vocab.json``, ``best_model.pt``).

    The weights are read with ``torch.load(..., weights_only=True)`` (no arbitrary unpickling).

    Raises:
        CheckpointError: a file is missing or malformed, a required tensor is absent, or tensor
            shapes disagree with ``args.json`` / ``vocab.json``.
        ConfigError: the checkpoint uses a variant this loader does not implement
            (``input_emb_style`` other than ``"continuous"``, ``pre_norm``, ...).
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"scGPT model directory {root} does not exist")
    args = _read_json(root / "args.json")
    if not isinstance(args, dict):
        raise CheckpointError(f"{root / 'args.json'} must be a JSON object")
    missing = [k for k in _REQUIRED_ARGS if k not in args]
    if missing:
        raise CheckpointError(f"{root / 'args.json'} lacks {missing}")
    style = args.get("input_emb_style", "continuous")
    if style != "continuous":
        raise ConfigError(
            f"input_emb_style={style!r}: only scGPT's 'continuous' value encoder (used by every "
            "released checkpoint) is supported"
        )
    if args.get("pre_norm", False):
        raise ConfigError("pre_norm=True scGPT checkpoints are not supported (none is released)")
    vocab = _read_vocab(root / "vocab.json")
    weights = root / "best_model.pt"
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing")
    raw = read_torch_weights(weights)
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{weights} must hold a state dict (mapping name -> tensor)")
    state, layout = normalize_scgpt_keys(raw)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    ckpt = ScGPTCheckpoint(args=args, vocab=vocab, state=state, layout=layout)
    _check_shapes(ckpt, weights)
    return ckpt


def _check_shapes(ckpt: ScGPTCheckpoint, where: Path) -> None:
    d, hid = ckpt.dim, int(ckpt.args["d_hid"])
    if d % ckpt.heads:
        raise CheckpointError(f"embsize {d} is not divisible by nheads {ckpt.heads}")
    expected: dict[str, tuple[int, ...]] = {
        "encoder.embedding.weight": (len(ckpt.vocab), d),
        "encoder.enc_norm.weight": (d,),
        "encoder.enc_norm.bias": (d,),
        "value_encoder.linear1.weight": (d, 1),
        "value_encoder.linear1.bias": (d,),
        "value_encoder.linear2.weight": (d, d),
        "value_encoder.linear2.bias": (d,),
        "value_encoder.norm.weight": (d,),
        "value_encoder.norm.bias": (d,),
    }
    for i in range(ckpt.num_layers):
        p = f"transformer_encoder.layers.{i}."
        expected.update(
            {
                p + "self_attn.in_proj_weight": (3 * d, d),
                p + "self_attn.in_proj_bias": (3 * d,),
                p + "self_attn.out_proj.weight": (d, d),
                p + "self_attn.out_proj.bias": (d,),
                p + "linear1.weight": (hid, d),
                p + "linear1.bias": (hid,),
                p + "linear2.weight": (d, hid),
                p + "linear2.bias": (d,),
                p + "norm1.weight": (d,),
                p + "norm1.bias": (d,),
                p + "norm2.weight": (d,),
                p + "norm2.bias": (d,),
            }
        )
    absent = [k for k in expected if k not in ckpt.state]
    if absent:
        raise CheckpointError(
            f"{where} lacks {len(absent)} scGPT tensors, e.g. {absent[:5]} (layout "
            f"{ckpt.layout!r}; is this an scGPT TransformerModel state dict with "
            f"nlayers={ckpt.num_layers}?)"
        )
    for k, shape in expected.items():
        got = tuple(ckpt.state[k].shape)
        if got != shape:
            hint = " (vocab.json and the embedding disagree)" if k.startswith("encoder.emb") else ""
            raise CheckpointError(f"{where}: {k} has shape {got}, expected {shape}{hint}")
    extra = f"transformer_encoder.layers.{ckpt.num_layers}.norm1.weight"
    if extra in ckpt.state:
        raise CheckpointError(f"{where} has more blocks than nlayers={ckpt.num_layers}")


def map_genes(
    genes: Sequence[str],
    vocab: Mapping[str, int],
    *,
    missing: Literal["error", "drop"] = "error",
    vocab_name: str = "the vocabulary",
) -> tuple[Tensor, list[int]]:
    """Map gene symbols to vocabulary ids.

    Args:
        genes: gene symbols, length G (e.g. ``adata.var_names``).
        vocab: token -> id.
        missing: ``"error"`` raises :class:`~fimp.errors.UnknownGeneError` listing every gene that
            is not in ``vocab``; ``"drop"`` leaves them out (upstream ``embed_data`` drops them).
        vocab_name: how to name the vocabulary in the error message.

    Returns:
        ``(ids [G'] long, kept)`` where ``kept`` are the positions in ``genes`` that were mapped
        (all of them unless ``missing="drop"``).
    """
    if missing not in ("error", "drop"):
        raise ConfigError(f"missing must be 'error' or 'drop', got {missing!r}")
    kept = [i for i, g in enumerate(genes) if g in vocab]
    if len(kept) != len(genes) and missing == "error":
        unknown = [g for g in genes if g not in vocab]
        shown = ", ".join(repr(g) for g in unknown[:20])
        more = f", ... (+{len(unknown) - 20} more)" if len(unknown) > 20 else ""
        raise UnknownGeneError(
            f"{len(unknown)} of {len(genes)} genes are not in {vocab_name} ({len(vocab)} tokens): "
            f"{shown}{more}. Rename them to the vocabulary's symbols, or pass missing='drop' to "
            "leave them out."
        )
    if not kept:
        raise UnknownGeneError(f"none of the {len(genes)} genes is in {vocab_name}")
    ids = torch.tensor([vocab[genes[i]] for i in kept], dtype=torch.long)
    return ids, kept


def _linear(state: Mapping[str, Tensor], prefix: str) -> nn.Linear:
    w = state[prefix + ".weight"]
    b = state.get(prefix + ".bias")
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    return lin


def _layer_norm(state: Mapping[str, Tensor], prefix: str, eps: float) -> nn.LayerNorm:
    w = state[prefix + ".weight"]
    ln = nn.LayerNorm(w.shape[0], eps=eps)
    with torch.no_grad():
        ln.weight.copy_(w)
        ln.bias.copy_(state[prefix + ".bias"])
    return ln


def scgpt_blocks(ckpt: ScGPTCheckpoint) -> list[TransformerBlock]:
    """scGPT's transformer blocks as :class:`~fimp.pretrained.two_stream.TransformerBlock`.

    Each block is post-LN (``x = norm1(x + attn(x)); x = norm2(x + linear2(relu(linear1(x))))``,
    LayerNorm eps 1e-5) with exact softmax attention; the packed ``in_proj``/``Wqkv`` rows
    ``[q; k; v]`` are split into the query projection (target stream in cross mode) and the
    key/value projections (source stream).
    """
    blocks = []
    for i in range(ckpt.num_layers):
        p = f"transformer_encoder.layers.{i}."
        qkv = nn.Linear(ckpt.dim, 3 * ckpt.dim)
        with torch.no_grad():
            qkv.weight.copy_(ckpt.state[p + "self_attn.in_proj_weight"])
            qkv.bias.copy_(ckpt.state[p + "self_attn.in_proj_bias"])
        blocks.append(
            TransformerBlock.from_fused_qkv(
                ckpt.dim,
                ckpt.heads,
                qkv=qkv,
                out_proj=_linear(ckpt.state, p + "self_attn.out_proj"),
                norm1=_layer_norm(ckpt.state, p + "norm1", 1e-5),
                norm2=_layer_norm(ckpt.state, p + "norm2", 1e-5),
                mlp=FeedForward(
                    _linear(ckpt.state, p + "linear1"),
                    _linear(ckpt.state, p + "linear2"),
                    activation="relu",
                ),
                norm_first=False,
            )
        )
    return blocks


def scgpt_tokenizer(
    ckpt: ScGPTCheckpoint,
    *,
    missing: Literal["error", "drop"] = "error",
    selection: Literal["top_k", "sample", "panel"] = "top_k",
    k: int | None = None,
    value_encoding: str | None = None,
    dropout: float = 0.0,
) -> GeneTokenizer:
    """scGPT's own tokenizer as a :class:`~fimp.tokenizers.GeneTokenizer` holding its weights.

    ``gene_embedding`` = ``encoder.embedding``, ``gene_norm`` = ``encoder.enc_norm`` (LayerNorm
    1e-5), ``value_encoder`` = ``value_encoder`` (``ContinuousValueEncoder``); ``<cls>`` is token 0
    with value ``pad_value``; no position encoding. ``value_encoding`` defaults from ``args.json``:
    ``input_style="binned"`` (all released checkpoints) gives ``"binned_continuous"`` (scGPT's
    per-cell 51-level quantile bins fed to the continuous encoder), otherwise ``"continuous"``.
    The mask embedding (value term of entries hidden for reconstruction) is set to
    ``value_encoder(mask_value)`` (``mask_value`` -1 upstream), the input scGPT saw for masked
    values in pre-training. ``selection="top_k"`` with ``k = max_seq_len - 1`` (default 1199)
    keeps every non-zero gene of a cell in column order: exactly upstream's ``embed_data`` tokens
    for cells with at most ``k`` expressed genes (upstream subsamples longer cells at random;
    ``top_k`` keeps the ``k`` highest). Every node has ``1 + min(k, mapped genes)`` token slots
    (padding masked), and attention cost grows with its square: choose ``k`` near the number of
    genes a cell expresses.
    """
    if value_encoding is None:
        value_encoding = (
            "binned_continuous"
            if ckpt.args.get("input_style", "binned") == "binned"
            else "continuous"
        )
    if selection != "panel" and k is None:
        k = int(ckpt.args.get("max_seq_len", 1200)) - 1
    tokens = list(ckpt.vocab)  # ordered by index
    tok = GeneTokenizer(
        tokens,
        ckpt.dim,
        value_encoding=value_encoding,
        n_bins=int(ckpt.args.get("n_bins", 51)),
        selection=selection,
        k=k,
        unknown=missing,
        padding_idx=ckpt.vocab[ckpt.pad_token],
        norm_gene_embedding=True,
        dropout=dropout,
        max_value=512.0,
        cls_token="<cls>",
        cls_value=ckpt.pad_value,
    )
    s = ckpt.state
    with torch.no_grad():
        tok.gene_embedding.weight.copy_(s["encoder.embedding.weight"])
        tok.gene_norm.weight.copy_(s["encoder.enc_norm.weight"])
        tok.gene_norm.bias.copy_(s["encoder.enc_norm.bias"])
        for name in ("linear1", "linear2", "norm"):
            sub = getattr(tok.value_encoder, name)
            sub.weight.copy_(s[f"value_encoder.{name}.weight"])
            sub.bias.copy_(s[f"value_encoder.{name}.bias"])
        # a masked entry looks like upstream's masked input: value_encoder(mask_value)
        mask_value = torch.tensor([float(ckpt.args.get("mask_value", -1))])
        tok.mask_embedding.copy_(tok.value_encoder.eval()(mask_value)[0])
    tok.value_encoder.train()
    return tok


def load_scgpt(
    path: str | os.PathLike[str],
    *,
    genes: Sequence[str] | None = None,
    missing: Literal["error", "drop"] = "error",
    selection: Literal["top_k", "sample", "panel"] = "top_k",
    k: int | None = None,
    value_encoding: str | None = None,
    source_stream: Literal["self", "fixed"] = "self",
    freeze: Literal["all", "attention", "none"] = "all",
    dropout: float = 0.0,
) -> PretrainedComponents:
    """Load an scGPT model directory as FIMP's tokenizer + two-stream message creator.

    Args:
        path: the model directory (``args.json``, ``vocab.json``, ``best_model.pt``), any of
            scGPT's three attention key layouts (see the module docs).
        genes: optional gene names of the data (e.g. ``adata.var_names``): checked against the
            vocabulary now, so a missing gene fails at load time rather than at the first batch.
        missing: ``"error"`` raises :class:`~fimp.errors.UnknownGeneError` listing the genes that
            are not in ``vocab.json``; ``"drop"`` leaves those columns out (as upstream does).
        selection, k, value_encoding, dropout: see :func:`scgpt_tokenizer`.
        source_stream: ``"self"`` or ``"fixed"`` (:class:`~fimp.pretrained.two_stream.TwoStreamMessage`).
        freeze: ``"all"`` freezes the message creator and the tokenizer (zero-shot); ``"attention"``
            freezes the attention projections; ``"none"`` trains everything.

    Returns:
        ``PretrainedComponents(tokenizer, message, config)``: a :class:`~fimp.tokenizers.GeneTokenizer` (tokens
        ``[N, 1 + L, d]``, ``<cls>`` first), a :class:`TwoStreamMessage` over scGPT's post-LN
        blocks (no final norm; with a self-loop its message equals scGPT's ``_encode`` output), and
        a JSON-serialisable config naming the weights (file, sha256, layout) and what is frozen.
    """
    ckpt = read_scgpt(path)
    if genes is not None:
        map_genes(list(genes), ckpt.vocab, missing=missing, vocab_name="scGPT's vocab.json")
    tok = scgpt_tokenizer(
        ckpt,
        missing=missing,
        selection=selection,
        k=k,
        value_encoding=value_encoding,
        dropout=dropout,
    )
    message = TwoStreamMessage(
        scgpt_blocks(ckpt), final_norm=None, source_stream=source_stream, freeze=freeze
    )
    if freeze == "all":
        tok.requires_grad_(False)
    weights = Path(path) / "best_model.pt"
    config = {
        "family": "scgpt",
        "weights": {"file": str(weights), "sha256": sha256_of(weights), "layout": ckpt.layout},
        "dim": ckpt.dim,
        "heads": ckpt.heads,
        "num_layers": ckpt.num_layers,
        "d_hid": int(ckpt.args["d_hid"]),
        "vocab_size": len(ckpt.vocab),
        "pad_value": ckpt.pad_value,
        "value_encoding": tok.value_encoding,
        "selection": tok.selection,
        "k": tok.k,
        "source_stream": source_stream,
        "freeze": freeze,
        "frozen_parameters": message.frozen_parameter_names(),
        "tokenizer_frozen": freeze == "all",
    }
    return PretrainedComponents(tok, message, config)


@register_model
def fimp_scgpt(
    *,
    checkpoint: str | os.PathLike[str],
    genes: Sequence[str] | None = None,
    missing: Literal["error", "drop"] = "error",
    selection: Literal["top_k", "sample", "panel"] = "top_k",
    k: int | None = None,
    source_stream: Literal["self", "fixed"] = "self",
    freeze: Literal["all", "attention", "none"] = "all",
    num_layers: int = 1,
    **kwargs: Any,
) -> FIMP:
    """FIMP-scGPT: scGPT's tokenizer and blocks as the message creator of every FIMP layer.

    ``checkpoint`` is an scGPT model directory (see :func:`load_scgpt`, which receives ``genes``,
    ``missing``, ``selection``, ``k``, ``source_stream``, ``freeze``). All ``num_layers`` FIMP
    layers share the one pretrained message creator (its parameters are not copied). Other keyword
    arguments go to :class:`fimp.models.FIMP` (``num_classes``, ``recon_out``, ``aggr``,
    ``edge_chunk_size``, ...). The loader's config is kept as ``model.pretrained_config``.
    """
    tok, message, config = load_scgpt(
        checkpoint,
        genes=genes,
        missing=missing,
        selection=selection,
        k=k,
        source_stream=source_stream,
        freeze=freeze,
    )
    model = FIMP(
        tok,
        dim=message.dim,
        heads=message.heads,
        num_layers=num_layers,
        message=lambda _i: message,
        **kwargs,
    )
    model.pretrained_config = config
    return model
