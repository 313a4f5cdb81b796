"""Multi-head cross-attention between two token sequences (the FIMP-base message creator)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fimp.errors import ConfigError, ShapeError
from fimp.nn._checks import check_dtype, check_finite, check_token_mask
from fimp.nn.message import MessageCreator, State


def _rows_with_keys(query_mask: Tensor, key_mask: Tensor) -> Tensor:
    """[B, Lq] bool: query rows that are real and whose source has at least one real token."""
    return query_mask & key_mask.any(dim=-1, keepdim=True)


#: accepted ``qk_init`` values of :class:`CrossAttention`
QK_INITS = ("xavier", "mimetic")


class CrossAttention(MessageCreator):
    r"""Multi-head cross-attention: queries from one token sequence, keys/values from another.

    .. math::
        Q = X_q W_Q,\quad K = X_{kv} W_K,\quad V = X_{kv} W_V \quad (\text{per head, } d_h = d / h)

        \mathrm{out} = \mathrm{concat}_h\,\mathrm{softmax}\!\left(Q_h K_h^\top / \sqrt{d_h}
        + \mathrm{mask}\right) V_h\; W_O

    The attention matrix is [L_q x L_k]: row = query token, column = key token, rows sum to 1 over
    the real key tokens. Padded keys are masked out. A query row whose key sequence has no real token,
    and every padded query row, gets a zero output (not the bias of ``out_proj``, not NaN).

    As a :class:`~fimp.nn.MessageCreator` (FIMP-base) it projects every node once in
    :meth:`prepare` and attends per edge in :meth:`edge_messages`.

    Args:
        dim: token width d.
        heads: number of heads h; ``dim`` must be divisible by ``heads``.
        bias: whether the four projections carry a bias.
        dropout: dropout on the attention probabilities (training only).
        qk_init: ``"xavier"`` (default): the four projections Xavier-uniform, independent;
            ``"mimetic"``: ``k_proj`` starts as a copy of ``q_proj`` (weights and bias), so at
            initialisation :math:`W_Q^\top W_K` is positive semi-definite per head and a query
            token scores highest the key tokens most similar to it (the same gene / time patch /
            image position in the neighbour); after that the two train independently. Mimetic
            initialisation (Trockman & Kolter, 2023) shortens the loss plateau attention layers
            start on when trained from scratch on small data.

    ``forward`` refuses NaN/inf inputs (:class:`~fimp.errors.NonFiniteError`) and inputs whose
    dtype differs from the weights' outside autocast (:class:`~fimp.errors.ShapeError`), on the
    fused and the ``return_attention`` path alike.

    Shapes:
        - query: [B, L_q, d], key_value: [B, L_k, d]
        - query_mask: [B, L_q] bool, key_mask: [B, L_k] bool (True = real token), optional
        - output: [B, L_q, d]; attention (``return_attention=True``): [B, h, L_q, L_k]
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        qk_init: str = "xavier",
    ) -> None:
        super().__init__()
        if dim <= 0 or heads <= 0:
            raise ConfigError(f"dim and heads must be positive, got dim={dim}, heads={heads}")
        if dim % heads != 0:
            raise ConfigError(
                f"dim={dim} is not divisible by heads={heads}; choose heads among "
                f"{[h for h in range(1, min(dim, 16) + 1) if dim % h == 0]}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if qk_init not in QK_INITS:
            raise ConfigError(f"qk_init must be one of {QK_INITS}, got {qk_init!r}")
        self.qk_init = qk_init
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases of ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``;
        then ``k_proj`` copied from ``q_proj`` where ``qk_init="mimetic"`` (the same random draws
        either way, so the other parameters of a seeded model do not change with ``qk_init``)."""
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        self.apply_qk_init()

    @torch.no_grad()
    def apply_qk_init(self) -> None:
        """Apply ``qk_init`` to the current weights (``"mimetic"``: ``k_proj`` := ``q_proj``);
        draws no random numbers."""
        if self.qk_init == "mimetic":
            self.k_proj.weight.copy_(self.q_proj.weight)
            if self.k_proj.bias is not None:
                self.k_proj.bias.copy_(self.q_proj.bias)

    def _split(self, t: Tensor) -> Tensor:
        """[B, L, d] -> [B, L, h, d_h] (a view; attention takes it transposed to [B, h, L, d_h]).

        Keeping the token axis second makes per-edge gathers contiguous without a transpose copy,
        and SDPA's CPU kernel writes its output as [B, L, h, d_h], so merging heads is free too.
        """
        b, length, _ = t.shape
        return t.view(b, length, self.heads, self.head_dim)

    # -- MessageCreator protocol ------------------------------------------------------------------
    def prepare(self, x: Tensor, token_mask: Tensor) -> tuple[State, State]:
        """Project every node once: target state (Q,), source state (K, V), each [N, L, h, d_h]."""
        return (self._split(self.q_proj(x)),), (
            self._split(self.k_proj(x)),
            self._split(self.v_proj(x)),
        )

    # The message is out_proj(context): FIMPConv may sum contexts over edges first (mean/sum).
    linear_output = True

    def edge_messages(
        self,
        target_state: State,
        source_state: State,
        query_mask: Tensor,
        key_mask: Tensor,
        *,
        return_attention: bool = False,
        apply_output: bool = True,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Per-edge attention; ``apply_output=False`` returns the context before ``out_proj``."""
        (q,) = target_state
        k, v = source_state
        return self._attend(q, k, v, query_mask, key_mask, return_attention, apply_output)

    def grouped_context(
        self,
        target_state: State,
        source_state: State,
        query_mask: Tensor,
        key_mask: Tensor,
        block_live: Tensor,
    ) -> Tensor:
        r"""Neighbour-grouped attention: the sum over each target's neighbours of the per-edge
        contexts (before ``out_proj``), computed as one [L, D*L] product per target.

        For target t with neighbour blocks j = 1..D (padded to the largest in-degree D):
        :math:`\sum_j \mathrm{softmax}_j(Q_t K_j^\top / \sqrt{d_h}) V_j`, the softmax taken over
        each block's own keys; the sum over j is the single product :math:`[P_1 \dots P_D]
        [V_1; \dots; V_D]`, so Q_t is read once instead of once per edge and no per-edge output
        is written or reduced. Equal to the segment sum of ``edge_messages(...,
        apply_output=False)`` over the same edges.

        Args:
            target_state: ``(Q,)`` of the targets, [T, L_q, h, d_h].
            source_state: ``(K, V)`` of the neighbour slots, [T, D * L_k, h, d_h] (slot-major).
            query_mask: [T, L_q] bool; key_mask: [T, D, L_k] bool (True = real token).
            block_live: [T, D] bool: the slot holds an edge whose source has a real token.

        Returns:
            [T, L_q, d]; padded query rows and targets without a live block are zero.
        """
        (q,) = target_state
        k, v = source_state
        t, lq = q.shape[:2]
        d_blocks, lk = key_mask.shape[1:]
        scores = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) / math.sqrt(self.head_dim)
        scores = scores.view(t, self.heads, lq, d_blocks, lk)
        if not bool(key_mask.all()):
            # a block without a real key attends to its padding; block_live zeroes it below
            safe = key_mask | ~key_mask.any(dim=-1, keepdim=True)
            scores = scores.masked_fill(~safe[:, None, None], float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        if not bool(block_live.all()):
            attn = attn * block_live[:, None, None, :, None].to(attn.dtype)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, p=self.dropout)
        ctx = torch.matmul(attn.view(t, self.heads, lq, d_blocks * lk), v.transpose(1, 2))
        out = ctx.transpose(1, 2).reshape(t, lq, self.dim)
        if not bool(query_mask.all()):
            out = out * query_mask.unsqueeze(-1).to(out.dtype)
        return out

    def output(self, context: Tensor, row_weight: Tensor) -> Tensor:
        """``out_proj`` of a sum of contexts: ``context`` [N, L, d] = sum_j w_j c_j over edges, and
        ``row_weight`` [N, L] = sum_j w_j over the edges whose row is live; the bias is scaled by it."""
        out = nn.functional.linear(context, self.out_proj.weight)
        if self.out_proj.bias is not None:
            out = out + row_weight.unsqueeze(-1).to(out.dtype) * self.out_proj.bias
        return out

    # -- plain module use -----------------------------------------------------------------------
    def forward(
        self,
        query: Tensor,
        key_value: Tensor,
        *,
        query_mask: Tensor | None = None,
        key_mask: Tensor | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Queries attend to keys/values: ``query`` [B, Lq, d], ``key_value`` [B, Lk, d] -> [B, Lq, d].

        ``query_mask`` [B, Lq] and ``key_mask`` [B, Lk] are bool, True = real token; a query row
        with no real key gets a zero output. ``return_attention=True`` also returns the attention
        [B, heads, Lq, Lk] (rows sum to 1 over the real keys).
        """
        for name, t in (("query", query), ("key_value", key_value)):
            if not isinstance(t, Tensor) or t.dim() != 3 or t.size(-1) != self.dim:
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ShapeError(f"{name} must have shape [B, L, {self.dim}], got {shape}")
            if not t.is_floating_point():
                raise ShapeError(f"{name} must be a floating tensor, got {t.dtype}; call .float()")
            check_dtype(t, self, name=name)
            check_finite(t, name)
        if query.size(0) != key_value.size(0):
            raise ShapeError(
                f"query and key_value must have the same batch size, got {query.size(0)} and "
                f"{key_value.size(0)}"
            )
        b, lq, lk = query.size(0), query.size(1), key_value.size(1)
        query_mask = check_token_mask(query_mask, b, lq, name="query_mask")
        key_mask = check_token_mask(key_mask, b, lk, name="key_mask")
        if query_mask is None:
            query_mask = torch.ones(b, lq, dtype=torch.bool, device=query.device)
        if key_mask is None:
            key_mask = torch.ones(b, lk, dtype=torch.bool, device=query.device)
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key_value))
        v = self._split(self.v_proj(key_value))
        return self._attend(q, k, v, query_mask, key_mask, return_attention, True)

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        query_mask: Tensor,
        key_mask: Tensor,
        return_attention: bool,
        apply_output: bool,
    ) -> Tensor | tuple[Tensor, Tensor]:
        b, lq = q.shape[:2]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, h, L, d_h] views
        padded_keys = not bool(key_mask.all())
        padded_queries = not bool(query_mask.all())
        # A source with no real token would give an all-masked softmax row (NaN in some backends):
        # attend to its padding instead and zero those rows below.
        no_keys = ~key_mask.any(dim=-1, keepdim=True)
        safe_keys = key_mask | no_keys
        p = self.dropout if self.training else 0.0
        if return_attention:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~safe_keys[:, None, None, :], float("-inf"))
            attn = torch.softmax(scores, dim=-1)
            rows = _rows_with_keys(query_mask, key_mask)
            attn = attn * rows[:, None, :, None].to(attn.dtype)
            attn_used = F.dropout(attn, p=p, training=self.training) if p > 0 else attn
            ctx = torch.matmul(attn_used, v)
        else:
            mask = safe_keys[:, None, None, :] if padded_keys else None
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = ctx.transpose(1, 2).reshape(b, lq, self.dim)
        if apply_output:
            out = self.out_proj(out)
        if padded_keys or padded_queries:
            out = out * _rows_with_keys(query_mask, key_mask).unsqueeze(-1).to(out.dtype)
        return (out, attn) if return_attention else out

    def __repr__(self) -> str:
        extra = f", qk_init={self.qk_init!r}" if self.qk_init != "xavier" else ""
        return (
            f"{type(self).__name__}({self.dim}, heads={self.heads}, dropout={self.dropout}{extra})"
        )
