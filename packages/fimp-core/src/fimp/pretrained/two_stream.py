"""The two-stream foundation message creator: pretrained transformer blocks as FIMP's MSG.

Design (``design.md`` §1, "FIMP + foundation model"). For every edge j -> i:

- the **source stream** is the foundation model run normally on the source node's own tokens,
  once per node: ``S_j^(0) = H_j``, ``S_j^(l) = Block_l(S_j^(l-1))`` (self-attention). With
  ``source_stream="fixed"`` it stays ``S_j^(l) = H_j`` at every layer (decoder-style memory);
- the **target stream** runs per edge with every block's self-attention turned into
  cross-attention that uses the *same pretrained* W_Q on the target stream and W_K, W_V on the
  source stream of the same layer, keeping the block's norms, MLP, residuals and layer scale:
  ``Z^(0) = H_i``, ``Z^(l) = CrossBlock_l(Z^(l-1), S_j^(l-1))``;
- the message is ``H_ji = Z^(L)``, after the model's final norm when it has one (timm ViT's
  ``norm``), so that a self-loop reproduces the model's own final hidden states
  (``forward_features`` / ``last_hidden_state``).

Everything that depends on the source node alone (its stream and, per layer, its key/value heads
and any value-stream term) is computed once per node in :meth:`TwoStreamMessage.prepare`; the
per-edge work only gathers them, runs the target stream and never re-projects a source token.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fimp.errors import ConfigError, ShapeError
from fimp.nn.message import MessageCreator, State

SourceStream = Literal["self", "fixed"]
Freeze = Literal["all", "attention", "none"]

_ATTENTION_PARTS = ("q_proj", "k_proj", "v_proj", "out_proj", "q_norm", "k_norm", "context_norm")
_ATTENTION_PARTS += ("value_term",)


class PretrainedComponents(NamedTuple):
    """What every ``fimp.pretrained.load_*`` returns.

    Attributes:
        tokenizer: the model's own tokenizer (an nn.Module returning ``(tokens [N, L, d],
            token_mask [N, L])``), or None where the adapter supplies none.
        message: the message creator built from the pretrained blocks.
        config: a JSON-serialisable dict describing the architecture and the weights' source.
    """

    tokenizer: nn.Module | None
    message: MessageCreator
    config: dict[str, Any]


class FeedForward(nn.Module):
    """Token-wise MLP ``fc2(act(fc1(x)))`` of a transformer block.

    Args:
        fc1: ``nn.Linear(d, d_hidden)``.
        fc2: ``nn.Linear(d_hidden, d)``.
        activation: ``"gelu"`` (exact erf, BERT / ViT), ``"gelu_tanh"``, ``"relu"`` (scGPT) or any
            module.

    Shapes: ``[..., d] -> [..., d]``.
    """

    def __init__(
        self, fc1: nn.Linear, fc2: nn.Linear, *, activation: str | nn.Module = "gelu"
    ) -> None:
        super().__init__()
        if fc1.out_features != fc2.in_features:
            raise ShapeError(
                f"fc1 has {fc1.out_features} outputs but fc2 takes {fc2.in_features} inputs; "
                "pass the two linear layers of the same MLP"
            )
        self.fc1 = fc1
        self.fc2 = fc2
        if isinstance(activation, nn.Module):
            self.act = activation
        elif activation == "gelu":
            self.act = nn.GELU()
        elif activation == "gelu_tanh":
            self.act = nn.GELU(approximate="tanh")
        elif activation == "relu":
            self.act = nn.ReLU()
        else:
            raise ConfigError(
                f"activation must be 'gelu', 'gelu_tanh', 'relu' or an nn.Module, got {activation!r}"
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    """One pretrained transformer encoder block that can run as self- or cross-attention.

    Pre-LN (``norm_first=True``, ViT / DINOv2)::

        x = x + ls1(attn(norm1(x), norm1(s)))
        x = x + ls2(mlp(norm2(x)))

    Post-LN (``norm_first=False``, BERT / scGPT / legacy BrainLM)::

        x = norm1(x + ls1(attn(x, s)))
        x = norm2(x + ls2(mlp(x)))

    where ``attn(z, s)`` takes queries from ``z`` and keys/values from ``s`` (``s = x`` is the
    model's own self-attention). Per head: ``q = q_norm(q_proj(z))``, ``k = k_norm(k_proj(s))``,
    ``v = v_proj(s)``; ``context = softmax(q k^T * scale + mask) v (+ value_term(v))``; heads are
    merged (head-major), passed through ``context_norm`` and ``out_proj``.

    Args:
        dim: token width d.
        heads: number of attention heads; ``q_proj.out_features`` must divide by it.
        q_proj, k_proj, v_proj: ``nn.Linear(d, d_attn)`` (head-major output, ``d_h = d_attn/heads``).
        out_proj: ``nn.Linear(d_attn, d)``.
        norm1, norm2: the block's two norms (see the formulas above).
        mlp: any token-wise module ``[..., d] -> [..., d]`` (e.g. :class:`FeedForward`, timm ``Mlp``).
        norm_first: pre-LN (True) or post-LN (False).
        ls1, ls2: layer scale modules (timm ``LayerScale``) or None.
        q_norm, k_norm: per-head norms acting on the last dim ``d_h`` (timm ``qk_norm``) or None.
        context_norm: norm over the merged heads before ``out_proj`` (timm ``scale_norm``) or None.
        value_term: an extra value-stream term ``value_term(v [B,h,L,d_h], key_mask [B,L]) ->
            [B,h,L,d_h]`` added to the context at the same token positions (BrainLM's depthwise
            convolution). It is a pure source-stream term, computed once per source node.
        scale: attention logit scale; default ``d_h ** -0.5``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        q_proj: nn.Linear,
        k_proj: nn.Linear,
        v_proj: nn.Linear,
        out_proj: nn.Linear,
        norm1: nn.Module,
        norm2: nn.Module,
        mlp: nn.Module,
        norm_first: bool = True,
        ls1: nn.Module | None = None,
        ls2: nn.Module | None = None,
        q_norm: nn.Module | None = None,
        k_norm: nn.Module | None = None,
        context_norm: nn.Module | None = None,
        value_term: nn.Module | None = None,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        attn_dim = q_proj.out_features
        for name, lin in (("q_proj", q_proj), ("k_proj", k_proj), ("v_proj", v_proj)):
            if (
                not isinstance(lin, nn.Linear)
                or lin.in_features != dim
                or lin.out_features != attn_dim
            ):
                raise ShapeError(
                    f"{name} must be nn.Linear({dim}, {attn_dim}) like q_proj, got {lin!r}"
                )
        if not isinstance(out_proj, nn.Linear) or out_proj.in_features != attn_dim:
            raise ShapeError(f"out_proj must be nn.Linear({attn_dim}, {dim}), got {out_proj!r}")
        if out_proj.out_features != dim:
            raise ShapeError(f"out_proj must map back to dim={dim}, got {out_proj!r}")
        if heads < 1 or attn_dim % heads:
            raise ConfigError(f"heads={heads} must divide the attention width {attn_dim}")
        self.dim = dim
        self.heads = heads
        self.head_dim = attn_dim // heads
        self.norm_first = bool(norm_first)
        self.scale = float(scale) if scale is not None else self.head_dim**-0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = q_proj, k_proj, v_proj, out_proj
        self.norm1, self.norm2, self.mlp = norm1, norm2, mlp
        self.ls1, self.ls2 = ls1, ls2
        self.q_norm, self.k_norm, self.context_norm = q_norm, k_norm, context_norm
        self.value_term = value_term

    @classmethod
    def from_fused_qkv(cls, dim: int, heads: int, *, qkv: nn.Linear, **kwargs) -> TransformerBlock:
        """Build a block from a packed ``qkv`` projection (rows ``[q; k; v]``, each head-major).

        This is timm's ``attn.qkv``, scGPT's ``Wqkv`` and torch's ``in_proj_weight`` layout. The
        three parts are copied into separate ``nn.Linear`` modules; all other keyword arguments are
        those of the constructor.
        """
        if not isinstance(qkv, nn.Linear) or qkv.out_features % 3 or qkv.in_features != dim:
            raise ShapeError(f"qkv must be nn.Linear({dim}, 3 * d_attn), got {qkv!r}")
        attn_dim = qkv.out_features // 3
        parts = []
        for i in range(3):
            lin = nn.Linear(dim, attn_dim, bias=qkv.bias is not None)
            lin = lin.to(device=qkv.weight.device, dtype=qkv.weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(qkv.weight[i * attn_dim : (i + 1) * attn_dim])
                if qkv.bias is not None:
                    lin.bias.copy_(qkv.bias[i * attn_dim : (i + 1) * attn_dim])
            parts.append(lin)
        return cls(dim, heads, q_proj=parts[0], k_proj=parts[1], v_proj=parts[2], **kwargs)

    def _split(self, t: Tensor) -> Tensor:
        b, length, _ = t.shape
        return t.view(b, length, self.heads, self.head_dim).transpose(1, 2)

    def source_input(self, s: Tensor) -> Tensor:
        """What the key/value projections read: ``norm1(s)`` (pre-LN) or ``s`` (post-LN)."""
        return self.norm1(s) if self.norm_first else s

    def kv_from_input(
        self, h: Tensor, key_mask: Tensor, *, with_extra: bool = True
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Key/value heads ``[B, heads, L, d_h]`` (k after ``k_norm``) from :meth:`source_input`,
        and the value-stream term (None without ``value_term`` or with ``with_extra=False``)."""
        k = self._split(self.k_proj(h))
        v = self._split(self.v_proj(h))
        if self.k_norm is not None:
            k = self.k_norm(k)
        extra = self.value_term(v, key_mask) if with_extra and self.value_term is not None else None
        return k, v, extra

    def project_kv(self, s: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Source-stream side of the attention.

        Args:
            s: source stream ``[B, L, d]``.
            key_mask: bool ``[B, L]``, True = real token (passed to ``value_term``).

        Returns:
            ``(k, v, extra)``: key and value heads ``[B, heads, L, d_h]`` (k after ``k_norm``) and
            the value-stream term ``[B, heads, L, d_h]`` (None without ``value_term``).
        """
        return self.kv_from_input(self.source_input(s), key_mask)

    def attend(
        self,
        z: Tensor,
        k: Tensor,
        v: Tensor,
        extra: Tensor | None,
        key_mask: Tensor,
        *,
        return_attention: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Run the block on the query stream ``z [B, Lq, d]`` against precomputed keys/values.

        ``k``, ``v``: ``[B, heads, Lk, d_h]`` from :meth:`project_kv`; ``extra``: its value term
        (needs ``Lq == Lk``); ``key_mask``: bool ``[B, Lk]`` with at least one True per row (the
        caller handles sources without valid tokens). Returns the new stream ``[B, Lq, d]`` and,
        if asked, the attention probabilities ``[B, heads, Lq, Lk]``.
        """
        h = self.norm1(z) if self.norm_first else z
        q = self._split(self.q_proj(h))
        if self.q_norm is not None:
            q = self.q_norm(q)
        bias_mask = key_mask[:, None, None, :]
        att = None
        if return_attention:
            logits = torch.matmul(q, k.transpose(-2, -1)) * self.scale
            logits = logits.masked_fill(~bias_mask, float("-inf"))
            att = torch.softmax(logits, dim=-1)
            ctx = torch.matmul(att, v)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias_mask, scale=self.scale)
        if extra is not None:
            if extra.shape != ctx.shape:
                raise ShapeError(
                    f"the value term gives {tuple(extra.shape)} but the context is "
                    f"{tuple(ctx.shape)}; a value_term needs as many target as source tokens"
                )
            ctx = ctx + extra
        ctx = ctx.transpose(1, 2).reshape(z.shape[0], z.shape[1], self.heads * self.head_dim)
        if self.context_norm is not None:
            ctx = self.context_norm(ctx)
        out = self.out_proj(ctx)
        if self.ls1 is not None:
            out = self.ls1(out)
        if self.norm_first:
            z = z + out
            m = self.mlp(self.norm2(z))
            z = z + (self.ls2(m) if self.ls2 is not None else m)
        else:
            z = self.norm1(z + out)
            m = self.mlp(z)
            z = self.norm2(z + (self.ls2(m) if self.ls2 is not None else m))
        return z, att

    def forward(self, x: Tensor, token_mask: Tensor) -> Tensor:
        """Ordinary self-attention block: ``x [B, L, d]``, ``token_mask`` bool ``[B, L]``."""
        k, v, extra = self.project_kv(x, token_mask)
        return self.attend(x, k, v, extra, token_mask)[0]

    def extra_repr(self) -> str:
        kind = "pre-LN" if self.norm_first else "post-LN"
        return f"dim={self.dim}, heads={self.heads}, {kind}"


class TwoStreamMessage(MessageCreator):
    """Pretrained transformer blocks as a FIMP message creator (two streams, see module docs).

    Args:
        blocks: the model's encoder blocks in order, as :class:`TransformerBlock` (they are used
            as given, not copied). All must share ``dim`` and ``heads``.
        final_norm: the norm the model applies after its last block (timm ViT ``norm``, BrainLM
            ``vit.layernorm``), or None (BERT, scGPT). The message is taken after it.
        source_stream: ``"self"`` (source stream = the model run on the source's own tokens) or
            ``"fixed"`` (``S_j^(l) = H_j`` at every layer).
        freeze: ``"all"`` (no parameter trains), ``"attention"`` (q/k/v/out projections, q/k norms,
            context norm and value terms frozen; norms, MLP and layer scale train) or ``"none"``.
        attention_layer: which layer's attention :meth:`edge_messages` returns with
            ``return_attention=True`` (default the last, -1).
        source_cache: what :meth:`prepare` keeps per node and layer: ``"kv"`` (the source keys and
            values, so edges only gather them; 2 x L x d numbers per layer) or ``"stream"`` (the
            normed source stream, L x d per layer: half the memory, keys/values re-projected per
            edge). Both give the same messages.
        node_chunk_size: run :meth:`prepare` over at most this many nodes at a time (bounds the
            peak activation memory of the source stream when no gradient is recorded); None = all.

    Messages ``[E, L, d]``: ``Z^(L)`` of the target stream; rows of padded query tokens and all
    rows of an edge whose source has no valid token are exactly zero. Dropout is not applied
    inside the pretrained blocks (the model is used as in evaluation mode).
    """

    def __init__(
        self,
        blocks: Sequence[TransformerBlock],
        *,
        final_norm: nn.Module | None = None,
        source_stream: SourceStream = "self",
        freeze: Freeze = "all",
        attention_layer: int = -1,
        source_cache: Literal["kv", "stream"] = "kv",
        node_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        blocks = list(blocks)
        if not blocks:
            raise ConfigError("blocks is empty: pass at least one TransformerBlock")
        for i, blk in enumerate(blocks):
            if not isinstance(blk, TransformerBlock):
                raise ConfigError(
                    f"blocks[{i}] is a {type(blk).__name__}; wrap each pretrained block in "
                    "fimp.pretrained.two_stream.TransformerBlock"
                )
            if blk.dim != blocks[0].dim or blk.heads != blocks[0].heads:
                raise ConfigError(
                    f"blocks[{i}] has dim={blk.dim}, heads={blk.heads} but blocks[0] has "
                    f"dim={blocks[0].dim}, heads={blocks[0].heads}; all blocks must match"
                )
        if source_stream not in ("self", "fixed"):
            raise ConfigError(f"source_stream must be 'self' or 'fixed', got {source_stream!r}")
        if not -len(blocks) <= attention_layer < len(blocks):
            raise ConfigError(
                f"attention_layer={attention_layer} is out of range for {len(blocks)} blocks"
            )
        if source_cache not in ("kv", "stream"):
            raise ConfigError(f"source_cache must be 'kv' or 'stream', got {source_cache!r}")
        if node_chunk_size is not None and (
            not isinstance(node_chunk_size, int) or node_chunk_size < 1
        ):
            raise ConfigError(
                f"node_chunk_size must be a positive int or None, got {node_chunk_size!r}"
            )
        self.source_cache = source_cache
        self.node_chunk_size = node_chunk_size
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = final_norm
        self.dim = blocks[0].dim
        self.heads = blocks[0].heads
        self.source_stream = source_stream
        self.attention_layer = attention_layer % len(blocks)
        self._has_extra = [blk.value_term is not None for blk in blocks]
        self.freeze = "none"
        self.set_freeze(freeze)

    # ------------------------------------------------------------------ freezing
    def set_freeze(self, mode: Freeze) -> None:
        """Set ``requires_grad`` of every parameter for ``mode`` (see the class docs)."""
        if mode not in ("all", "attention", "none"):
            raise ConfigError(f"freeze must be 'all', 'attention' or 'none', got {mode!r}")
        for name, p in self.named_parameters():
            p.requires_grad_(not self._frozen_by(mode, name))
        self.freeze = mode

    @staticmethod
    def _frozen_by(mode: str, name: str) -> bool:
        if mode == "all":
            return True
        if mode == "none":
            return False
        parts = name.split(".")
        return parts[0] == "blocks" and len(parts) > 2 and parts[2] in _ATTENTION_PARTS

    def frozen_parameter_names(self) -> list[str]:
        """Names (``named_parameters``) of the parameters that do not train."""
        return [n for n, p in self.named_parameters() if not p.requires_grad]

    def trainable_parameter_names(self) -> list[str]:
        """Names (``named_parameters``) of the parameters that train."""
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """``{"trainable": ..., "frozen": ...}``: numbers of scalar parameters."""
        counts = {"trainable": 0, "frozen": 0}
        for p in self.parameters():
            counts["trainable" if p.requires_grad else "frozen"] += p.numel()
        return counts

    # ------------------------------------------------------------------ protocol
    def _check(self, x: Tensor, mask: Tensor) -> None:
        if x.dim() != 3 or x.size(-1) != self.dim:
            raise ShapeError(f"x must be [N, L, {self.dim}], got {tuple(x.shape)}")
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2]):
            raise ShapeError(
                f"token_mask must be bool [N, L] = {tuple(x.shape[:2])}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )

    @staticmethod
    def _safe(mask: Tensor) -> tuple[Tensor, Tensor]:
        has = mask.any(-1)
        return mask | ~has[:, None], has

    def prepare(self, x: Tensor, token_mask: Tensor) -> tuple[State, State]:
        """Per-node work.

        Args:
            x: ``[N, L, d]`` node tokens ``H``; token_mask: bool ``[N, L]``.

        Returns:
            ``target_state = (H,)`` and ``source_state`` = per layer ``(k_l, v_l[, extra_l])``
            (``source_cache="kv"``, each ``[N, heads, L, d_h]``) or ``(h_l[, extra_l])``
            (``"stream"``, ``h_l`` = the layer's key/value input ``[N, L, d]``), computed on the
            source stream ``S^(l-1)``.
        """
        self._check(x, token_mask)
        safe, _ = self._safe(token_mask)
        step = self.node_chunk_size or x.size(0)
        parts = [
            self._prepare_nodes(x[i : i + step], safe[i : i + step])
            for i in range(0, x.size(0), step)
        ]
        state = parts[0] if len(parts) == 1 else [torch.cat(ts) for ts in zip(*parts)]
        return (x,), tuple(state)

    def _prepare_nodes(self, x: Tensor, safe: Tensor) -> list[Tensor]:
        s = x
        state: list[Tensor] = []
        for blk in self.blocks:
            h = blk.source_input(s)
            k, v, extra = blk.kv_from_input(h, safe)
            state += [k, v] if self.source_cache == "kv" else [h]
            if extra is not None:
                state.append(extra)
            if self.source_stream == "self":
                s = blk.attend(s, k, v, extra, safe)[0]
        return state

    def _layer_states(
        self, source_state: State, key_mask: Tensor
    ) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        out, i = [], 0
        for blk, has_extra in zip(self.blocks, self._has_extra):
            if self.source_cache == "kv":
                k, v = source_state[i], source_state[i + 1]
                i += 2
            else:
                k, v, _ = blk.kv_from_input(source_state[i], key_mask, with_extra=False)
                i += 1
            extra = source_state[i] if has_extra else None
            i += int(has_extra)
            out.append((k, v, extra))
        if i != len(source_state):
            raise ShapeError(
                f"source_state has {len(source_state)} tensors, expected {i}: pass what prepare() "
                "returned"
            )
        return out

    def edge_messages(
        self,
        target_state: State,
        source_state: State,
        query_mask: Tensor,
        key_mask: Tensor,
        *,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Per-edge target stream on gathered states.

        Args:
            target_state: ``(H_i,)`` gathered by target, ``[E, Lq, d]``.
            source_state: the per-layer source keys/values gathered by source.
            query_mask: bool ``[E, Lq]``; key_mask: bool ``[E, Lk]``.
            return_attention: also return layer ``attention_layer``'s probabilities.

        Returns:
            messages ``[E, Lq, d]`` (and attention ``[E, heads, Lq, Lk]``, zero rows where the
            message is zero).
        """
        z = target_state[0]
        safe, has = self._safe(key_mask)
        att = None
        for i, (blk, (k, v, extra)) in enumerate(
            zip(self.blocks, self._layer_states(source_state, safe))
        ):
            want = return_attention and i == self.attention_layer
            z, a = blk.attend(z, k, v, extra, safe, return_attention=want)
            if want:
                att = a
        if self.final_norm is not None:
            z = self.final_norm(z)
        valid = query_mask & has[:, None]
        z = torch.where(valid[..., None], z, torch.zeros((), dtype=z.dtype, device=z.device))
        if not return_attention:
            return z
        att = torch.where(
            valid[:, None, :, None], att, torch.zeros((), dtype=att.dtype, device=att.device)
        )
        return z, att

    def encode(self, x: Tensor, token_mask: Tensor | None = None) -> Tensor:
        """The pretrained encoder run normally on each node's own tokens (no graph).

        ``x [N, L, d]`` -> final hidden states ``[N, L, d]`` (after ``final_norm``), padded rows
        zero. With a self-loop and ``source_stream="self"`` the message equals this.
        """
        if token_mask is None:
            token_mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        self._check(x, token_mask)
        safe, has = self._safe(token_mask)
        for blk in self.blocks:
            x = blk(x, safe)
        if self.final_norm is not None:
            x = self.final_norm(x)
        valid = token_mask & has[:, None]
        return torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))

    def bytes_per_edge(self, lq: int, lk: int, element_size: int) -> int:
        """Rough per-edge working memory (bytes) for FIMPConv's ``edge_chunk_size="auto"``."""
        hidden = 4 * self.dim
        gathered = (2 if self.source_cache == "kv" else 1) + int(any(self._has_extra))
        per_layer = gathered * lk * self.dim  # gathered source state
        per_layer += 8 * lq * self.dim + lq * hidden + self.heads * lq * lk
        if self.source_cache == "stream":
            per_layer += 2 * lk * self.dim  # keys/values re-projected per edge
        return 2 * element_size * len(self.blocks) * per_layer

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.dim}, heads={self.heads}, layers={len(self.blocks)}, "
            f"source_stream='{self.source_stream}', freeze='{self.freeze}')"
        )


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode, so adapters never share parameters with the model they read."""
    return copy.deepcopy(module).eval()
