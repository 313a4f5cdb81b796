"""The FIMP message-passing layer: cross-node attention between token sequences."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from fimp.errors import ConfigError
from fimp.nn._checks import check_dtype, check_edge_index, check_token_mask, check_tokens
from fimp.nn.cross_attention import CrossAttention
from fimp.nn.message import MessageCreator, State

_AGGRS = ("mean", "sum", "max")
_PATHS = ("auto", "per-edge", "grouped")
#: ``attention_path="auto"`` takes the grouped path up to this many tokens per node (CPU)
GROUPED_MAX_TOKENS = 16
#: ... and when padding every neighbourhood to the largest in-degree adds at most this share
GROUPED_MAX_PADDING = 0.25
_SEGMENT_REDUCE = {"mean": "sum", "sum": "sum", "max": "max"}


def _scatter_sum_rows(grad: Tensor, index: Tensor, num_rows: int, index_sorted: bool) -> Tensor:
    """out[r] = sum of grad[e] over e with index[e] == r, in increasing e (deterministic).

    A CSR [num_rows, E] one-hot matrix times grad [E, F]: one pass over grad, no copy of it. On the
    CPU this was ~10x faster than index_add_ (serial row scatter) or sort + copy + segment_reduce for
    [E, heads, L, d_h] gradients, and exact.
    """
    num_edges = index.numel()
    flat = grad.reshape(num_edges, -1)
    order = (
        torch.arange(num_edges, device=index.device)
        if index_sorted
        else torch.sort(index, stable=True).indices
    )
    if flat.dtype in (torch.float32, torch.float64):
        out = _csr(index, order, num_rows, flat) @ flat
    else:  # low precision: sparse kernels are not available for every dtype
        uniq, counts = torch.unique_consecutive(index[order], return_counts=True)
        red = torch.segment_reduce(flat.index_select(0, order), "sum", lengths=counts, axis=0)
        out = flat.new_zeros(num_rows, flat.size(1)).index_copy_(0, uniq, red)
    return out.view(num_rows, *grad.shape[1:])


class _Gather(torch.autograd.Function):
    """``src.index_select(0, index)`` with a fast, deterministic backward (see _scatter_sum_rows)."""

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, index_sorted: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(index)
        ctx.num_rows = src.size(0)
        ctx.index_sorted = index_sorted
        return src.index_select(0, index)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (index,) = ctx.saved_tensors
        return _scatter_sum_rows(grad, index, ctx.num_rows, ctx.index_sorted), None, None


def gather_rows(src: Tensor, index: Tensor, *, index_sorted: bool = False) -> Tensor:
    """Rows of ``src`` [N, ...] at ``index`` [E] -> [E, ...], with a fast deterministic backward.

    ``index_sorted=True`` promises that ``index`` is non-decreasing (skips a sort in backward).
    """
    if src.requires_grad and torch.is_grad_enabled():
        return _Gather.apply(src, index, index_sorted)
    return src.index_select(0, index)


def _csr(index: Tensor, order: Tensor, num_rows: int, like: Tensor) -> Tensor:
    """The one-hot CSR matrix [num_rows, E] with a 1 at (index[e], e), rows listing edges ``order``."""
    crow = index.new_zeros(num_rows + 1)
    crow[1:] = torch.bincount(index, minlength=num_rows).cumsum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            crow, order, like.new_ones(index.numel()), size=(num_rows, index.numel())
        )


class _SegmentSum(torch.autograd.Function):
    """Sum of consecutive row segments (lengths ``counts``): a CSR matmul forward, a gather backward.

    torch.segment_reduce's sum backward zero-fills and loops; repeating each segment's gradient
    with one index_select is a single pass (measured ~2x faster for [E, L, d] messages).
    """

    @staticmethod
    def forward(ctx, src: Tensor, counts: Tensor) -> Tensor:  # type: ignore[override]
        segment = torch.repeat_interleave(torch.arange(counts.numel(), device=src.device), counts)
        ctx.save_for_backward(segment)
        flat = src.reshape(src.size(0), -1)
        if flat.dtype in (torch.float32, torch.float64):
            order = torch.arange(src.size(0), device=src.device)
            out = _csr(segment, order, counts.numel(), flat) @ flat
        else:
            out = torch.segment_reduce(flat, "sum", lengths=counts, axis=0)
        return out.view(counts.numel(), *src.shape[1:])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (segment,) = ctx.saved_tensors
        return grad.index_select(0, segment), None


def _segment_reduce(src: Tensor, reduce: str, counts: Tensor) -> Tensor:
    """Reduce consecutive row segments of ``src`` [S, ...] with lengths ``counts`` (all >= 1).

    Sum uses ``torch.segment_reduce`` (ordered, deterministic). Max uses ``scatter_reduce("amax")``
    because segment_reduce's max backward does not split the gradient between tied maxima (duplicate
    edges give exactly tied messages); amax splits it evenly, like ``torch.amax``.
    """
    if reduce == "sum":
        return _SegmentSum.apply(src, counts)
    index = torch.repeat_interleave(torch.arange(counts.numel(), device=src.device), counts)
    index = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    # -inf start values never tie with finite messages, so no gradient share goes to them
    out = src.new_full((counts.numel(), *src.shape[1:]), float("-inf"))
    return out.scatter_reduce(0, index, src, "amax")


class FIMPConv(nn.Module):
    r"""Foundation-Informed Message Passing layer (Rizvi et al., arXiv:2210.09475).

    Every node i carries a token sequence :math:`H_i \in \mathbb{R}^{L \times d}`. For every edge
    :math:`j \to i` (``edge_index[0]`` = source j, ``edge_index[1]`` = target i):

    .. math::
        H_{ji} = \mathrm{MSG}(H_i, H_j) \in \mathbb{R}^{L \times d}, \qquad
        M_i = \mathrm{AGGREGATE}_{j \in \mathcal{N}(i)} H_{ji}, \qquad
        H_i' = W (H_i + M_i)

    MSG is, by default (FIMP-base), multi-head cross-attention with queries from the target's tokens
    and keys/values from the source's tokens (:class:`~fimp.nn.CrossAttention`); any
    :class:`~fimp.nn.MessageCreator` (e.g. a pretrained foundation model's blocks) can be passed as
    ``message``. AGGREGATE is element-wise over the L x d matrices (mean, sum or max); nodes without
    in-edges get :math:`M_i = 0`. Row t of :math:`H_{ji}` is target token t contextualised by the
    neighbour's tokens, so every token position keeps its identity.

    Args:
        dim: token width d.
        heads: attention heads of the default cross-attention (ignored when ``message`` is given).
        message: the message creator; ``None`` = FIMP-base ``CrossAttention(dim, heads)``.
        aggr: ``"mean"`` (default), ``"sum"`` or ``"max"``.
        combine: ``"add"`` (:math:`H_i + M_i`) or ``None`` (:math:`M_i` alone).
        project: apply the learned projection W (``nn.Linear(dim, dim)``) after combining.
            ``combine=None, project=False`` returns the aggregated messages M.
        dropout: attention dropout of the default cross-attention.
        edge_chunk_size: process edges in chunks of at most this many edges, recomputing each chunk
            in backward, so that peak memory does not grow with E. ``None`` = one chunk (fastest);
            ``"auto"`` = chunks sized to ``chunk_memory_mb`` of per-edge working memory.
        chunk_memory_mb: memory budget per chunk for ``edge_chunk_size="auto"``, in MiB.
        attention_path: ``"per-edge"``: one SDPA call on [E, heads, L, L] over the gathered per-edge
            Q/K/V; ``"grouped"``: neighbour-grouped attention (design §6), one [L, D*L] product
            per target against all its neighbours' keys (D = the largest in-degree; smaller
            neighbourhoods are padded), softmax per neighbour block, mean/sum folded into P.V,
            needs ``aggr`` mean or sum, one edge chunk, and a message creator with
            ``grouped_context`` (FIMP-base's :class:`~fimp.nn.CrossAttention`); ``"auto"``
            (default): grouped where it was measured faster, on the CPU for L <= 16 tokens and
            at most 25% padded neighbour slots (1.2x at L = 9-10 and 78k / 33k edges, forward +
            backward; 0.75x at L = 32, equal at L = 64: benchmarks/bench_fimp_conv.py), per-edge
            otherwise. Both paths give the same values and gradients (up to float rounding).

    Shapes:
        - x: [N, L, d] node token sequences
        - edge_index: [2, E] (int64)
        - token_mask: [N, L] bool, True = real token (optional; padded tokens get zero output)
        - output: [N, L, d], or with ``return_attention_weights=True``
          ``(out, (edge_index, attention [E, heads, L, L]))``, attention rows ordered like the
          input edges (row = target token, column = source token).

    Aggregation is deterministic: edges are sorted by target (stable) and reduced per segment.
    """

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        *,
        message: MessageCreator | None = None,
        aggr: Literal["mean", "sum", "max"] = "mean",
        combine: Literal["add"] | None = "add",
        project: bool = True,
        dropout: float = 0.0,
        edge_chunk_size: int | Literal["auto"] | None = None,
        chunk_memory_mb: float = 256.0,
        attention_path: Literal["auto", "per-edge", "grouped"] = "auto",
    ) -> None:
        super().__init__()
        if attention_path not in _PATHS:
            raise ConfigError(f"attention_path must be one of {_PATHS}, got {attention_path!r}")
        if aggr not in _AGGRS:
            raise ConfigError(f"aggr must be one of {_AGGRS}, got {aggr!r}")
        if combine not in ("add", None):
            raise ConfigError(f"combine must be 'add' or None, got {combine!r}")
        if edge_chunk_size is not None and edge_chunk_size != "auto":
            if not isinstance(edge_chunk_size, int) or edge_chunk_size < 1:
                raise ConfigError(
                    f"edge_chunk_size must be a positive int, 'auto' or None, got {edge_chunk_size!r}"
                )
        if chunk_memory_mb <= 0:
            raise ConfigError(f"chunk_memory_mb must be positive, got {chunk_memory_mb}")
        if message is None:
            message = CrossAttention(dim, heads, dropout=dropout)
        elif not isinstance(message, MessageCreator):
            raise ConfigError(
                f"message must be a fimp.nn.MessageCreator (prepare + edge_messages), got "
                f"{type(message).__name__}"
            )
        elif message.dim != dim:
            raise ConfigError(f"message creator has dim={message.dim} but the layer has dim={dim}")
        if attention_path == "grouped":
            if aggr == "max":
                raise ConfigError(
                    "attention_path='grouped' folds mean/sum aggregation into P.V; aggr='max' "
                    "needs attention_path='per-edge' (or 'auto')"
                )
            if edge_chunk_size is not None:
                raise ConfigError(
                    "attention_path='grouped' attends to all edges at once; use "
                    "edge_chunk_size=None, or attention_path='auto' to chunk per edge"
                )
            if not callable(getattr(message, "grouped_context", None)):
                raise ConfigError(
                    f"attention_path='grouped' needs a message creator with grouped_context; "
                    f"{type(message).__name__} has none (use 'per-edge' or 'auto')"
                )
        self.dim = dim
        self.heads = message.heads
        self.attention_path = attention_path
        self.message = message
        self.aggr = aggr
        self.combine = combine
        self.edge_chunk_size = edge_chunk_size
        self.chunk_memory_mb = chunk_memory_mb
        self.lin = nn.Linear(dim, dim) if project else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise the message creator (if it has ``reset_parameters``) and the projection W."""
        reset = getattr(self.message, "reset_parameters", None)
        if callable(reset):
            reset()
        if self.lin is not None:
            self.lin.reset_parameters()

    def _chunk_size(self, num_edges: int, lq: int, lk: int, element_size: int) -> int:
        if self.edge_chunk_size is None:
            return max(num_edges, 1)
        if self.edge_chunk_size != "auto":
            return self.edge_chunk_size
        estimate = getattr(self.message, "bytes_per_edge", None)
        if callable(estimate):
            per_edge = int(estimate(lq, lk, element_size))
        else:  # gathered q, k, v, context, output + one [heads, Lq, Lk] score matrix, x2 for autograd
            per_edge = 2 * element_size * (5 * lq * self.dim + self.heads * lq * lk)
        return max(1, int(self.chunk_memory_mb * 2**20) // max(per_edge, 1))

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        *,
        token_mask: Tensor | None = None,
        return_attention_weights: bool = False,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        """One round of message passing: ``x`` [N, L, d], ``edge_index`` [2, E] -> [N, L, d].

        ``token_mask`` [N, L] bool (True = real token). With ``return_attention_weights=True``
        returns ``(out, (edge_index, attention [E, heads, L, L]))`` (the explicit path; see the
        class docstring for the shapes).
        """
        check_tokens(x, self.dim)
        check_dtype(x, self)
        n, length, _ = x.shape
        check_edge_index(edge_index, n)
        token_mask = check_token_mask(token_mask, n, length)
        mask = token_mask if token_mask is not None else x.new_ones(n, length, dtype=torch.bool)
        edge_index = edge_index.long()
        src, dst = edge_index[0], edge_index[1]
        order = torch.sort(dst, stable=True).indices
        src_s, dst_s = src[order], dst[order]

        target_state, source_state = self.message.prepare(x, mask)
        chunk = self._chunk_size(src_s.numel(), length, length, x.element_size())
        recompute = (
            self.edge_chunk_size is not None
            and torch.is_grad_enabled()
            and not return_attention_weights
            and src_s.numel() > chunk
        )

        # out = W_O(context) commutes with sum/mean: reduce contexts, project once per node
        defer = (
            self.aggr != "max"
            and not return_attention_weights
            and getattr(self.message, "linear_output", False)
        )
        fn = _ChunkFn(
            self.message,
            _SEGMENT_REDUCE[self.aggr],
            return_attention_weights,
            len(target_state),
            defer,
        )
        targets: list[Tensor] = []
        parts: list[Tensor] = []
        attentions: list[Tensor] = []
        bounds = [
            (start, min(start + chunk, src_s.numel())) for start in range(0, src_s.numel(), chunk)
        ]
        groups = None
        if defer and len(bounds) == 1 and self.aggr != "max":
            groups = self._neighbour_groups(x, src_s, dst_s)
        if groups is not None:
            uniq, slots, valid, width = groups
            targets.append(uniq)
            parts.append(self._grouped(target_state, source_state, mask, uniq, slots, valid, width))
        elif recompute:  # one autograd node for all chunks, each recomputed in backward
            params = [p for p in self.message.parameters() if p.requires_grad]
            states = (*target_state, *source_state)
            parts.append(
                _ChunkedMessages.apply(
                    fn, bounds, src_s, dst_s, mask, len(params), *params, *states
                )
            )
            targets = [torch.unique_consecutive(dst_s[a:b]) for a, b in bounds]
        else:
            for start, stop in bounds:
                s_c, d_c = src_s[start:stop], dst_s[start:stop]
                uniq, counts = torch.unique_consecutive(d_c, return_counts=True)
                out = fn(s_c, d_c, counts, mask, *target_state, *source_state)
                if return_attention_weights:
                    out, att = out
                    attentions.append(att)
                targets.append(uniq)
                parts.append(out)

        agg = x.new_zeros(n, length, self.dim)
        if parts:
            uniq_all = torch.cat(targets)
            red = torch.cat(parts)
            if len(targets) > 1:  # a target's edges may straddle chunk boundaries: reduce again
                uniq_all, counts = torch.unique_consecutive(uniq_all, return_counts=True)
                red = _segment_reduce(red, _SEGMENT_REDUCE[self.aggr], counts)
            agg = agg.index_copy(0, uniq_all, red)
            if self.aggr == "mean":
                deg = torch.bincount(dst, minlength=n).clamp_(min=1).to(x.dtype)
                agg = agg / deg.view(n, 1, 1)
            if defer:
                # live rows: real target token and a source with at least one real token
                live = torch.bincount(dst, weights=mask.any(-1)[src].to(x.dtype), minlength=n)
                if self.aggr == "mean":
                    live = live / deg
                agg = self.message.output(agg, live.view(n, 1) * mask.to(x.dtype))

        out = x + agg if self.combine == "add" else agg
        if self.lin is not None:
            out = self.lin(out)
        if token_mask is not None:
            out = out * token_mask.unsqueeze(-1).to(out.dtype)
        if not return_attention_weights:
            return out
        heads = self.heads
        if attentions:
            att_sorted = torch.cat(attentions)
            attention = torch.empty_like(att_sorted).index_copy_(0, order, att_sorted)
        else:
            attention = x.new_zeros(0, heads, length, length)
        return out, (edge_index, attention)

    def _neighbour_groups(
        self, x: Tensor, src_s: Tensor, dst_s: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None, int] | None:
        """The grouped path's layout, or ``None`` where the per-edge path runs: the targets
        [T] (sorted), the source of each of their D neighbour slots [T * D], which slots hold
        an edge ([T * D] bool, ``None`` when every target has exactly D in-edges) and D."""
        path = self.attention_path
        if path == "per-edge" or src_s.numel() == 0:
            return None
        if not callable(getattr(self.message, "grouped_context", None)):
            return None
        length = x.size(1)
        if path == "auto" and (x.device.type != "cpu" or length > GROUPED_MAX_TOKENS):
            return None
        uniq, counts = torch.unique_consecutive(dst_s, return_counts=True)
        width = int(counts.max())
        if path == "auto" and uniq.numel() * width > (1 + GROUPED_MAX_PADDING) * src_s.numel():
            return None
        if bool((counts == width).all()):
            return uniq, src_s, None, width
        start = torch.cumsum(counts, 0) - counts
        group = torch.repeat_interleave(torch.arange(uniq.numel(), device=x.device), counts)
        slot = torch.arange(src_s.numel(), device=x.device) - start[group]
        flat = group * width + slot
        slots = src_s.new_zeros(uniq.numel() * width).index_copy_(0, flat, src_s)
        valid = torch.zeros(uniq.numel() * width, dtype=torch.bool, device=x.device)
        valid[flat] = True
        return uniq, slots, valid, width

    def _grouped(
        self,
        target_state: State,
        source_state: State,
        mask: Tensor,
        uniq: Tensor,
        slots: Tensor,
        valid: Tensor | None,
        width: int,
    ) -> Tensor:
        """Sum of the contexts over each target's in-edges [T, L, d] (grouped path)."""
        t, length = uniq.numel(), mask.size(1)
        q = tuple(gather_rows(s, uniq, index_sorted=True) for s in target_state)
        kv = tuple(
            gather_rows(s, slots).view(t, width * s.size(1), *s.shape[2:]) for s in source_state
        )
        key_mask = mask.index_select(0, slots)
        if valid is not None:
            key_mask = key_mask & valid[:, None]
        key_mask = key_mask.view(t, width, length)
        live = key_mask.any(dim=-1)
        return self.message.grouped_context(q, kv, mask.index_select(0, uniq), key_mask, live)

    def __repr__(self) -> str:
        msg = (
            ""
            if isinstance(self.message, CrossAttention)
            else f", message={type(self.message).__name__}"
        )
        return f"{type(self).__name__}({self.dim}, heads={self.heads}, aggr='{self.aggr}'{msg})"


class _ChunkFn:
    """Gather states for a chunk of target-sorted edges, create messages, reduce per target."""

    def __init__(
        self,
        message: MessageCreator,
        reduce: str,
        return_attention: bool,
        n_target: int,
        defer_output: bool,
    ) -> None:
        self.message = message
        self.reduce = reduce
        self.return_attention = return_attention
        self.n_target = n_target
        self.kwargs = {"apply_output": False} if defer_output else {}

    def __call__(
        self, src: Tensor, dst: Tensor, counts: Tensor, mask: Tensor, *states: Tensor
    ) -> Tensor | tuple[Tensor, Tensor]:
        target_state: State = tuple(
            gather_rows(s, dst, index_sorted=True) for s in states[: self.n_target]
        )
        source_state: State = tuple(gather_rows(s, src) for s in states[self.n_target :])
        return self.messages(target_state, source_state, mask[dst], mask[src], counts)

    def messages(
        self,
        target_state: State,
        source_state: State,
        query_mask: Tensor,
        key_mask: Tensor,
        counts: Tensor,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Messages of already gathered per-edge states, reduced per target segment."""
        out = self.message.edge_messages(
            target_state,
            source_state,
            query_mask,
            key_mask,
            return_attention=self.return_attention,
            **self.kwargs,
        )
        att = None
        if self.return_attention:
            out, att = out
        red = _segment_reduce(out, self.reduce, counts)
        return (red, att) if att is not None else red


class _ChunkedMessages(torch.autograd.Function):
    """Every chunk of target-sorted edges in one autograd node, recomputed chunk by chunk in backward.

    Forward keeps only the reduced messages [sum of a chunk's distinct targets, L, d]. Backward
    re-gathers one chunk's rows, recomputes its messages with autograd on those rows only, and adds
    the row gradients into one buffer per state (rows are distinct within a chunk, so the adds are
    deterministic on every device). A per-chunk ``torch.utils.checkpoint`` of the gather instead
    materialises a dense [N, ...] gradient per state and chunk: O(N * E / chunk) work (a 100k-edge
    epoch with N = 10k nodes took 2.4x as long, benchmarks/bench_scale.py).
    """

    @staticmethod
    def forward(ctx, fn, bounds, src_s, dst_s, mask, n_params, *tensors):  # type: ignore[override]
        states = tensors[n_params:]
        ctx.fn, ctx.bounds, ctx.n_params = fn, bounds, n_params
        ctx.save_for_backward(src_s, dst_s, mask, *tensors)
        # replayed in backward: the same dropout draws (chunks run in the same order) and autocast
        device = src_s.device
        ctx.device_type = device.type
        ctx.autocast = torch.is_autocast_enabled(device.type)
        ctx.autocast_dtype = torch.get_autocast_dtype(device.type)
        ctx.rng = torch.get_rng_state()
        ctx.device_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        parts = []
        for start, stop in bounds:
            s_c, d_c = src_s[start:stop], dst_s[start:stop]
            counts = torch.unique_consecutive(d_c, return_counts=True)[1]
            parts.append(fn(s_c, d_c, counts, mask, *states))
        return torch.cat(parts)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        src_s, dst_s, mask, *tensors = ctx.saved_tensors
        n_params = ctx.n_params
        params, states = tensors[:n_params], tensors[n_params:]
        needs = ctx.needs_input_grad[6:]
        grad_params = [torch.zeros_like(p) if n else None for p, n in zip(params, needs)]
        grad_states = [torch.zeros_like(s) if n else None for s, n in zip(states, needs[n_params:])]
        devices = [src_s.device] if ctx.device_rng is not None else []
        with torch.random.fork_rng(devices=devices, device_type=ctx.device_type):
            torch.set_rng_state(ctx.rng)
            if ctx.device_rng is not None:
                torch.cuda.set_rng_state(ctx.device_rng, src_s.device)
            _ChunkedMessages._replay(
                ctx, grad, src_s, dst_s, mask, params, states, grad_params, grad_states
            )
        return (None, None, None, None, None, None, *grad_params, *grad_states)

    @staticmethod
    def _replay(ctx, grad, src_s, dst_s, mask, params, states, grad_params, grad_states) -> None:
        fn = ctx.fn
        offset = 0
        for start, stop in ctx.bounds:
            s_c, d_c = src_s[start:stop], dst_s[start:stop]
            uniq_t, counts = torch.unique_consecutive(d_c, return_counts=True)
            uniq_s, inverse = torch.unique(s_c, sorted=True, return_inverse=True)
            g_c = grad[offset : offset + uniq_t.numel()]
            offset += uniq_t.numel()
            segment = torch.repeat_interleave(
                torch.arange(uniq_t.numel(), device=grad.device), counts
            )
            rows, index = [], []
            for i, s in enumerate(states):
                own = uniq_t if i < fn.n_target else uniq_s
                r = s.detach().index_select(0, own)
                rows.append(r.requires_grad_(grad_states[i] is not None))
                index.append(own)
            with (
                torch.enable_grad(),
                torch.autocast(ctx.device_type, dtype=ctx.autocast_dtype, enabled=ctx.autocast),
            ):
                target_state = tuple(
                    gather_rows(r, segment, index_sorted=True) for r in rows[: fn.n_target]
                )
                source_state = tuple(gather_rows(r, inverse) for r in rows[fn.n_target :])
                out = fn.messages(target_state, source_state, mask[d_c], mask[s_c], counts)
                wanted = [r for r in rows if r.requires_grad]
                wanted += [p for p, g in zip(params, grad_params) if g is not None]
                got = torch.autograd.grad(out, wanted, g_c, allow_unused=True) if wanted else ()
            it = iter(got)
            for i, r in enumerate(rows):
                if r.requires_grad:
                    g = next(it)
                    if g is not None:  # distinct rows: a read-add-write, no racing adds
                        acc = grad_states[i]
                        acc.index_copy_(
                            0, index[i], acc.index_select(0, index[i]) + g.to(acc.dtype)
                        )
            for gp in grad_params:
                if gp is not None:
                    g = next(it)
                    if g is not None:
                        gp += g.to(gp.dtype)
