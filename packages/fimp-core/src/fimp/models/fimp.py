"""The FIMP model: tokenizer -> stacked FIMPConv layers -> node / token read-outs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from fimp.errors import ConfigError, ShapeError
from fimp.models.registry import register_model
from fimp.nn import CrossAttention, FIMPConv, MessageCreator
from fimp.nn._checks import check_dtype, check_tokens

# tokenizer keyword -> Data attribute holding it, where the names differ
_DATA_ALIASES = {"genes": "feature_names", "coords": "pos"}
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


def masked_mean(tokens: Tensor, token_mask: Tensor) -> Tensor:
    """Mean over the real tokens: tokens [N, L, d], token_mask [N, L] -> [N, d] (0 if none)."""
    w = token_mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * w).sum(1) / w.sum(1).clamp(min=1.0)


_BLOCKS = ("plain", "prenorm")


class FIMP(nn.Module):
    r"""A FIMP network: node features -> token sequences -> ``num_layers`` FIMPConv -> read-outs.

    Two layer forms (``block``):

    - ``"plain"`` (default; the paper's form): :math:`H \leftarrow W(H + M(H))`, then between two
      layers LayerNorm over d, activation, dropout. No residual around the layer, no feed-forward
      block, post-norm.
    - ``"prenorm"`` (a standard pre-norm transformer block per layer, the message replacing
      self-attention): :math:`H \leftarrow H + \gamma_m \odot \mathrm{drop}(W M(\mathrm{LN}(H)))`,
      then, when ``ffn_ratio > 0``,
      :math:`H \leftarrow H + \gamma_f \odot \mathrm{drop}(\mathrm{FFN}(\mathrm{LN}(H)))` with
      :math:`\mathrm{FFN} = \mathrm{Linear}(d, rd) \to \mathrm{act} \to \mathrm{Linear}(rd, d)`
      applied per token, and a final LayerNorm before the read-outs. Each layer's FIMPConv runs
      with ``combine=None, project=True`` (it returns :math:`W M`; the residual adds :math:`H`).
      :math:`\gamma` are learnable per-channel scales (LayerScale) initialised to
      ``layer_scale`` (``None`` = no scale, i.e. fixed 1). With ``self_attention=True`` each
      layer first lets a node's tokens attend to its own tokens in a separate branch,
      :math:`H \leftarrow H + \gamma_s \odot \mathrm{drop}(\mathrm{SelfAttn}(\mathrm{LN}(H)))`
      (a :class:`~fimp.nn.CrossAttention` with query = key = the node's tokens), before the
      cross-node message: the node's own tokens keep a weight of their own instead of being one
      of ``deg + 1`` terms of the mean over in-edges (a self-loop edge), as GraphSAGE's and
      TransformerConv's root weights keep the node's own features apart from its neighbours'.

    ``pool_tokens=True`` is an ablation: the tokens of a node are replaced by their masked mean,
    one token per node, before the first layer (cross-attention then sees a single key per
    neighbour). The per-token decoder then reads that final node token plus each position's
    input token (so it knows which gene / patch it predicts).

    Read-outs:

    - node classification: the masked mean of the final tokens (``node_embedding`` [N, d]) -> an MLP
      head (``Linear(d, d)``, activation, dropout, ``Linear(d, num_classes)``) -> ``logits`` [N, C];
    - masked reconstruction: a per-token linear decoder ``Linear(d, recon_out)`` -> ``recon``
      [N, L, recon_out] (a gene's value: ``recon_out=1``; a 20-sample time patch: 20; a 16x16x3
      image patch: 768).

    Args:
        tokenizer: a module mapping raw node features to ``(tokens [N, L, d], token_mask [N, L])``
            (see :mod:`fimp.tokenizers`), or ``None`` when the inputs already are tokens.
        dim: token width d.
        num_layers: number of FIMPConv layers.
        heads: heads of each layer's default cross-attention.
        message: ``None`` (FIMP-base cross-attention in each layer), or a callable
            ``layer_index -> MessageCreator`` (e.g. a foundation model's blocks).
        aggr, edge_chunk_size: passed to every :class:`~fimp.nn.FIMPConv`.
        dropout: dropout between layers and in the head.
        attn_dropout: dropout on the attention probabilities of the default cross-attention
            (``None`` = ``dropout``). On the CPU any value > 0 makes scaled-dot-product attention
            fall back to its unfused math path, which materialises ``[E, heads, L, L]`` and a
            dropout mask per layer: 2-3x slower training than ``attn_dropout=0.0``.
        activation: ``"gelu"`` | ``"relu"`` | ``"silu"``.
        num_classes: size of the classification head (``None`` = no head).
        recon_out: output width of the per-token decoder (``None`` = no decoder).
        block: ``"plain"`` or ``"prenorm"`` (see above).
        ffn_ratio: hidden width of the per-token feed-forward block as a multiple of ``dim``
            (``"prenorm"`` only; 0 = no feed-forward block).
        qk_init: initialisation of the default cross-attention's query/key projections
            (:class:`~fimp.nn.CrossAttention`): ``"xavier"`` (default, independent) or
            ``"mimetic"`` (``k_proj`` starts as a copy of ``q_proj``: each query token first
            attends to the neighbour's most similar tokens). Ignored with ``message=``, whose
            creators bring their own (possibly pretrained) weights.
        layer_scale: initial value of the learnable per-channel scales on the message and
            feed-forward branches (``"prenorm"`` only; ``None`` = none).
        pool_tokens: ablation: one mean-pooled token per node (see above).
        self_attention: ``"prenorm"`` only: a within-node self-attention branch before each
            layer's cross-node message (see above); its attention uses ``heads``,
            ``attn_dropout`` and ``qk_init`` like the default message creator.

    ``forward(x, edge_index, *, token_mask=None, **tokenizer_kwargs)`` also accepts a PyG ``Data``
    as ``x``; then ``edge_index`` defaults to ``data.edge_index`` and every tokenizer keyword found on
    the Data (``genes`` is read from ``data.feature_names``) is passed on. It returns a dict with
    ``tokens`` [N, L, d], ``token_mask`` [N, L], ``node_embedding`` [N, d] and, when configured,
    ``logits`` [N, C] and ``recon`` [N, L, recon_out]; a tokenizer's extra outputs (e.g. the column
    index of each gene token) are returned under ``token_index``.
    """

    def __init__(
        self,
        tokenizer: nn.Module | None,
        *,
        dim: int,
        num_layers: int = 2,
        heads: int = 4,
        message: Callable[[int], MessageCreator] | None = None,
        aggr: str = "mean",
        edge_chunk_size: int | str | None = None,
        dropout: float = 0.0,
        attn_dropout: float | None = None,
        activation: str = "gelu",
        num_classes: int | None = None,
        recon_out: int | None = None,
        block: str = "plain",
        ffn_ratio: float = 0.0,
        layer_scale: float | None = None,
        pool_tokens: bool = False,
        qk_init: str = "xavier",
        self_attention: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"num_layers must be >= 1, got {num_layers}")
        if block not in _BLOCKS:
            raise ConfigError(f"block must be one of {_BLOCKS}, got {block!r}")
        if not ffn_ratio >= 0:
            raise ConfigError(f"ffn_ratio must be >= 0, got {ffn_ratio}")
        if block == "plain" and (ffn_ratio or layer_scale is not None):
            raise ConfigError(
                "ffn_ratio and layer_scale belong to block='prenorm'; the plain block has neither"
            )
        if self_attention and block != "prenorm":
            raise ConfigError("self_attention belongs to block='prenorm'; the plain block has none")
        if activation not in _ACTIVATIONS:
            raise ConfigError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.tokenizer = tokenizer
        self.dim = dim
        self.block = block
        self.ffn_ratio = float(ffn_ratio)
        self.layer_scale = layer_scale
        self.pool_tokens = bool(pool_tokens)
        self._external_message = message is not None
        prenorm = block == "prenorm"
        self.convs = nn.ModuleList(
            FIMPConv(
                dim,
                heads,
                message=message(i) if message is not None else None,
                aggr=aggr,  # type: ignore[arg-type]
                combine=None if prenorm else "add",
                dropout=dropout if attn_dropout is None else attn_dropout,
                edge_chunk_size=edge_chunk_size,  # type: ignore[arg-type]
            )
            for i in range(num_layers)
        )
        self.qk_init = qk_init
        from fimp.nn.cross_attention import QK_INITS

        if qk_init not in QK_INITS:
            raise ConfigError(f"qk_init must be one of {QK_INITS}, got {qk_init!r}")
        if not self._external_message:
            for conv in self.convs:
                conv.message.qk_init = qk_init
                conv.message.apply_qk_init()
        self.self_attention = bool(self_attention)
        n_self = num_layers if self.self_attention else 0
        self.self_attns = nn.ModuleList(
            CrossAttention(
                dim,
                heads,
                dropout=dropout if attn_dropout is None else attn_dropout,
                qk_init=qk_init,
            )
            for _ in range(n_self)
        )
        self.self_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_self))
        # plain: a norm between two layers; prenorm: a norm before each layer's message
        self.norms = nn.ModuleList(
            nn.LayerNorm(dim) for _ in range(num_layers if prenorm else num_layers - 1)
        )
        hidden = round(self.ffn_ratio * dim)
        self.ffns = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(dim),
                nn.Linear(dim, hidden),
                _ACTIVATIONS[activation](),
                nn.Dropout(dropout),
                nn.Linear(hidden, dim),
            )
            for _ in range(num_layers if prenorm and hidden > 0 else 0)
        )
        n_branches = num_layers + len(self.ffns) + n_self
        n_scales = n_branches if prenorm and layer_scale is not None else 0
        self.scales = nn.ParameterList(
            nn.Parameter(torch.full((dim,), float(layer_scale or 0.0))) for _ in range(n_scales)
        )
        self.final_norm = nn.LayerNorm(dim) if prenorm else None
        self.act = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.head = (
            nn.Sequential(
                nn.Linear(dim, dim),
                _ACTIVATIONS[activation](),
                nn.Dropout(dropout),
                nn.Linear(dim, num_classes),
            )
            if num_classes
            else None
        )
        self.decoder = nn.Linear(dim, recon_out) if recon_out else None
        self.num_classes = num_classes
        self.recon_out = recon_out

    def reset_parameters(self) -> None:
        """Re-initialise what this model created itself: the default (FIMP-base) cross-attention,
        each layer's projection W, the norms and the heads. The tokenizer and message creators that
        were passed in (possibly pretrained) are left untouched: reset them yourself if wanted."""
        for conv in self.convs:
            if not self._external_message:
                conv.message.reset_parameters()
            if conv.lin is not None:
                conv.lin.reset_parameters()
        for attn in self.self_attns:
            attn.reset_parameters()
        for module in (
            *self.norms,
            *self.self_norms,
            *self.ffns,
            self.final_norm,
            self.head,
            self.decoder,
        ):
            for m in module.modules() if module is not None else ():
                if isinstance(m, (nn.Linear, nn.LayerNorm)):
                    m.reset_parameters()
        for p in self.scales:
            nn.init.constant_(p, float(self.layer_scale or 0.0))

    def _scaled(self, i: int, branch: Tensor) -> Tensor:
        return branch * self.scales[i] if len(self.scales) else branch

    def _layers(
        self, h: Tensor, edge_index: Tensor, mask: Tensor, *, stop: int | None = None
    ) -> Tensor:
        """The ``num_layers`` layers on tokens ``h`` [N, L, d] (see the class docstring); with
        ``stop=k``, the tokens that layer k's FIMPConv reads (its input, after the pre-norm)."""
        if self.block == "plain":
            for i, conv in enumerate(self.convs):
                if i == stop:
                    return h
                h = conv(h, edge_index, token_mask=mask)
                if i < len(self.convs) - 1:
                    h = self.dropout(self.act(self.norms[i](h)))
            return h
        k = 0
        for i, conv in enumerate(self.convs):
            if self.self_attention:
                z = self.self_norms[i](h)
                own = self.self_attns[i](z, z, query_mask=mask, key_mask=mask)
                h = h + self._scaled(k, self.dropout(own))
                k += 1
            z = self.norms[i](h)
            if i == stop:
                return z
            h = h + self._scaled(k, self.dropout(conv(z, edge_index, token_mask=mask)))
            k += 1
            if self.ffns:
                h = h + self._scaled(k, self.dropout(self.ffns[i](h)))
                k += 1
        return self.final_norm(h)

    def conv_inputs(
        self, tokens: Tensor, edge_index: Tensor, token_mask: Tensor, layer: int
    ) -> tuple[Tensor, Tensor]:
        """``(h [N, L', d], mask [N, L'])``: exactly what ``convs[layer]`` reads in
        :meth:`forward` for these tokenizer outputs (``L' = 1`` with ``pool_tokens``). Used by
        :func:`fimp.interpret.attention_maps`."""
        if not 0 <= layer < len(self.convs):
            raise ConfigError(f"layer must be in [0, {len(self.convs)}), got {layer}")
        if self.pool_tokens:
            node_mask = token_mask.any(dim=1, keepdim=True)
            pooled = masked_mean(tokens, token_mask).unsqueeze(1)
            return self._layers(pooled, edge_index, node_mask, stop=layer), node_mask
        return self._layers(tokens, edge_index, token_mask, stop=layer), token_mask

    def _tokenizer_kwargs(self, data: Data, given: dict[str, Any]) -> dict[str, Any]:
        if self.tokenizer is None:
            return given
        params = inspect.signature(self.tokenizer.forward).parameters
        kwargs = dict(given)
        for name in list(params)[1:]:
            if name in kwargs:
                continue
            attr = name if name in data else _DATA_ALIASES.get(name)
            if attr is not None and attr in data:
                kwargs[name] = data[attr]
        return kwargs

    def tokenize(self, x: Any, **tokenizer_kwargs) -> tuple[Tensor, Tensor, Tensor | None]:
        """Raw features -> (tokens [N, L, d], token_mask [N, L], token_index or None)."""
        if self.tokenizer is None:
            if not isinstance(x, Tensor) or x.dim() != 3:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ShapeError(
                    f"without a tokenizer the model takes tokens [N, L, {self.dim}], got {shape}; "
                    "pass a tokenizer from fimp.tokenizers"
                )
            check_tokens(x, self.dim, name="tokens")
            check_dtype(x, self, name="tokens")
            mask = tokenizer_kwargs.get("token_mask")
            if mask is None:
                mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
            return x, mask, None
        out = self.tokenizer(x, **tokenizer_kwargs)
        if not isinstance(out, tuple) or len(out) < 2:
            raise ShapeError(
                f"{type(self.tokenizer).__name__} must return (tokens, token_mask[, index]), got "
                f"{type(out).__name__}"
            )
        return out[0], out[1], out[2] if len(out) > 2 else None

    def forward(
        self,
        x: Tensor | Data,
        edge_index: Tensor | None = None,
        *,
        token_mask: Tensor | None = None,
        **tokenizer_kwargs,
    ) -> dict[str, Tensor]:
        """Tokenize, run the layers, read out: a dict of ``tokens``, ``token_mask``,
        ``node_embedding`` and, when configured, ``logits`` and ``recon`` (see the class docstring).

        ``x`` is the tokenizer's input (or tokens [N, L, d] without a tokenizer) or a PyG ``Data``;
        ``tokenizer_kwargs`` go to the tokenizer (e.g. ``genes``, ``coords``, ``mask``).
        """
        if isinstance(x, Data):
            data = x
            edge_index = data.edge_index if edge_index is None else edge_index
            tokenizer_kwargs = self._tokenizer_kwargs(data, tokenizer_kwargs)
            x = data.x
        if edge_index is None:
            raise ShapeError(
                "edge_index is required: pass it, or pass a torch_geometric Data with edge_index"
            )
        if self.tokenizer is None and token_mask is not None:
            tokenizer_kwargs["token_mask"] = token_mask
        tokens, mask, index = self.tokenize(x, **tokenizer_kwargs)
        if token_mask is not None and self.tokenizer is not None:
            mask = mask & token_mask
        if self.pool_tokens:
            node_mask = mask.any(dim=1, keepdim=True)
            h = self._layers(masked_mean(tokens, mask).unsqueeze(1), edge_index, node_mask)
            emb = h[:, 0] * node_mask.to(h.dtype)
            h = h * node_mask.unsqueeze(-1).to(h.dtype) + tokens  # [N, L, d] for the decoder
        else:
            h = self._layers(tokens, edge_index, mask)
            emb = masked_mean(h, mask)
        out: dict[str, Tensor] = {"tokens": h, "token_mask": mask, "node_embedding": emb}
        if index is not None:
            out["token_index"] = index
        if self.head is not None:
            out["logits"] = self.head(out["node_embedding"])
        if self.decoder is not None:
            out["recon"] = self.decoder(h)
        return out

    def __repr__(self) -> str:
        tok = type(self.tokenizer).__name__ if self.tokenizer is not None else None
        extra = ""
        if self.block != "plain":
            extra += f", block={self.block!r}, ffn_ratio={self.ffn_ratio:g}"
            extra += f", layer_scale={self.layer_scale}"
        if self.pool_tokens:
            extra += ", pool_tokens=True"
        if self.qk_init != "xavier" and not self._external_message:
            extra += f", qk_init={self.qk_init!r}"
        if self.self_attention:
            extra += ", self_attention=True"
        return (
            f"{type(self).__name__}(tokenizer={tok}, dim={self.dim}, num_layers={len(self.convs)}, "
            f"num_classes={self.num_classes}, recon_out={self.recon_out}{extra})"
        )


@torch.no_grad()
def embed(
    model: nn.Module, data: Data | Tensor, edge_index: Tensor | None = None, **kwargs
) -> Tensor:
    """Node embeddings [N, d] of a (typically frozen / zero-shot) model, in eval mode, without grad.

    ``model`` is a :class:`FIMP` (or any module returning a dict with ``node_embedding``). The model's
    training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        out = model(data, edge_index, **kwargs)
    finally:
        model.train(was_training)
    if not isinstance(out, dict) or "node_embedding" not in out:
        raise ConfigError(f"{type(model).__name__} does not return a dict with 'node_embedding'")
    return out["node_embedding"]


_TOKENIZERS = {
    "gene": "GeneTokenizer",
    "timeseries": "TimeSeriesPatchTokenizer",
    "image": "ImagePatchTokenizer",
}


def build_tokenizer(kind: str, dim: int, **kwargs) -> nn.Module:
    """A tokenizer of :mod:`fimp.tokenizers` by short name (``gene``, ``timeseries``, ``image``)."""
    import fimp.tokenizers as tokenizers

    if kind not in _TOKENIZERS:
        raise ConfigError(
            f"unknown tokenizer {kind!r}; choose one of {sorted(_TOKENIZERS)} or pass a module"
        )
    return getattr(tokenizers, _TOKENIZERS[kind])(dim=dim, **kwargs)


@register_model
def fimp_base(
    *,
    tokenizer: nn.Module | str | None = None,
    tokenizer_kwargs: dict[str, Any] | None = None,
    dim: int = 64,
    num_layers: int = 2,
    heads: int = 4,
    **kwargs: Any,
) -> FIMP:
    """FIMP-base: cross-attention message creators learned from scratch.

    ``tokenizer`` is a tokenizer module, a short name (``"gene"``, ``"timeseries"``, ``"image"``,
    built with ``dim`` and ``tokenizer_kwargs``) or ``None`` (inputs are tokens). Other keyword
    arguments go to :class:`FIMP` (``num_classes``, ``recon_out``, ``aggr``, ``dropout``, ...).
    """
    if isinstance(tokenizer, str):
        tokenizer = build_tokenizer(tokenizer, dim, **(tokenizer_kwargs or {}))
    elif tokenizer_kwargs:
        raise ConfigError("tokenizer_kwargs only applies when tokenizer is given by name")
    return FIMP(tokenizer, dim=dim, num_layers=num_layers, heads=heads, **kwargs)
