"""Attention read-out: which source tokens each target token attends to, per edge and by label.

For every edge j -> i a FIMP layer computes an attention matrix [L_i x L_j] per head: row t is
target token t of node i, column s is source token s of node j, and each row sums to 1 over the
source's real tokens (a padded target row, or a row whose source has no real token, is all zero).
:func:`attention_maps` runs a trained :class:`~fimp.models.FIMP` and returns these matrices for one
layer together with each token's label (a gene, a time patch, an image patch);
:func:`aggregate_by_label` averages them over chosen edges into a label x label matrix (gene x
gene, or group x group with a label -> group mapping); :func:`difference` compares two such
matrices (e.g. edges within a cell type against edges across types).

Example::

    maps = fimp.interpret.attention_maps(model, data, layer=-1)
    within = fimp.interpret.edges_between(data, data.y, 3, 3)
    m, rows, cols = fimp.interpret.aggregate_by_label(maps, edges=within)
    # m[a, b]: mean attention mass that a target token labelled rows[a] gives to source tokens
    # labelled cols[b], over the selected edges; every row sums to 1.

For large graphs compute the maps in chunks (:func:`iter_attention_maps`, ``edge_chunk_size``)
and pass the iterator to :func:`aggregate_by_label`: memory is bounded by one chunk.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from fimp.errors import ConfigError, FIMPError, GraphError, ShapeError
from fimp.models.fimp import FIMP
from fimp.nn._checks import check_edge_index, check_tokens

__all__ = [
    "AttentionMaps",
    "EmptySelectionError",
    "LabelMatrix",
    "NotAFIMPModelError",
    "UnmappedLabelError",
    "aggregate_by_label",
    "attention_maps",
    "difference",
    "edges_between",
    "edges_within",
    "iter_attention_maps",
    "token_labels",
]


class NotAFIMPModelError(FIMPError, TypeError):
    """The model passed to the attention read-out is not a :class:`fimp.models.FIMP`."""


class EmptySelectionError(FIMPError, ValueError):
    """The chosen edges contain no attention row to aggregate."""


class UnmappedLabelError(FIMPError, KeyError):
    """A token label has no group in the mapping passed as ``labels``."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass
class AttentionMaps:
    """Per-edge attention of one FIMP layer.

    Attributes:
        attention: float [E, heads, L, L] attention probabilities; ``attention[e, h, t, s]`` =
            how much target token t of ``edge_index[1, e]`` attends to source token s of
            ``edge_index[0, e]``. Rows sum to 1 over the source's real tokens; rows of padded
            target tokens and of edges whose source has no real token are 0.
        edge_index: long [2, E], the edges (source, target) of ``attention``, original node ids.
        edge_id: long [E], each edge's position in the ``edge_index`` given to
            :func:`attention_maps` (so selections by original edge position keep working after
            ``edge_mask`` or chunking).
        token_mask: bool [N, L], True = real token.
        token_labels: long [N, L], each token's label as an index into ``label_names``; -1 for
            padded tokens.
        label_names: the label of each code (gene names; ``"t0:20"`` time patches; ``"r0c1"``
            image patches; ``"cls"`` or the tokenizer's cls token; ``"token 3"`` otherwise).
        layer: index of the layer (0-based, after resolving negative indices).
        num_edges_total: E of the full ``edge_index`` given to :func:`attention_maps`.
    """

    attention: Tensor
    edge_index: Tensor
    edge_id: Tensor
    token_mask: Tensor
    token_labels: Tensor
    label_names: list[str]
    layer: int
    num_edges_total: int

    @property
    def heads(self) -> int:
        """Number of attention heads."""
        return int(self.attention.shape[1])

    @property
    def num_edges(self) -> int:
        """Number of edges held (rows of ``attention``)."""
        return int(self.attention.shape[0])


@dataclass
class LabelMatrix:
    """A label x label attention matrix (see :func:`aggregate_by_label`).

    Unpacks as ``matrix, row_labels, col_labels``.

    Attributes:
        matrix: float64 [R, C]; rows = target-token labels, columns = source-token labels.
        row_labels: R labels of the target tokens.
        col_labels: C labels of the source tokens.
        row_weight: float64 [R], how many (edge, target token) attention rows were averaged into
            each row (``None`` for a :func:`difference`).
        num_edges: number of edges that contributed.
        reduce: ``"mean"`` (rows sum to 1), ``"sum"`` (total attention mass) or ``"difference"``.
    """

    matrix: Tensor
    row_labels: list[str]
    col_labels: list[str]
    row_weight: Tensor | None
    num_edges: int
    reduce: str

    def __iter__(self) -> Iterator[Any]:
        return iter((self.matrix, self.row_labels, self.col_labels))


def _check_model(model: nn.Module) -> FIMP:
    if not isinstance(model, FIMP):
        inner = getattr(model, "fimp", None)
        hint = (
            f" (it wraps one: pass its .fimp attribute, a {type(inner).__name__})"
            if isinstance(inner, FIMP)
            else ""
        )
        raise NotAFIMPModelError(
            f"attention maps need a fimp.models.FIMP (tokenizer + FIMPConv layers), got "
            f"{type(model).__name__}{hint}"
        )
    return model


def _resolve_layer(model: FIMP, layer: int) -> int:
    n = len(model.convs)
    if not isinstance(layer, int) or not -n <= layer < n:
        raise ConfigError(
            f"layer must be an int in [{-n}, {n}) for a {n}-layer model, got {layer!r}"
        )
    return layer % n


def _edge_ids(edge_mask: Tensor | Sequence[int] | None, num_edges: int, device) -> Tensor:
    """Selected edge positions (sorted, long [E']) from a bool [E] mask or an index list."""
    if edge_mask is None:
        return torch.arange(num_edges, device=device)
    sel = torch.as_tensor(edge_mask, device=device)
    if sel.dtype == torch.bool:
        if tuple(sel.shape) != (num_edges,):
            raise ShapeError(
                f"a bool edge_mask must have shape [E] = [{num_edges}] (one entry per edge of "
                f"edge_index), got {tuple(sel.shape)}"
            )
        return sel.nonzero().flatten()
    if sel.dtype.is_floating_point or sel.dim() != 1:
        raise ShapeError(
            f"edge_mask must be bool [E] or a 1-D integer index of edges, got {sel.dtype} "
            f"{tuple(sel.shape)}"
        )
    sel = sel.long()
    if sel.numel() and (int(sel.min()) < 0 or int(sel.max()) >= num_edges):
        raise GraphError(
            f"edge_mask indexes edges outside [0, {num_edges}): min {int(sel.min())}, max "
            f"{int(sel.max())}; pass positions into edge_index"
        )
    return torch.unique(sel)


def token_labels(
    tokenizer: nn.Module | None,
    x: Any,
    token_mask: Tensor,
    token_index: Tensor | None = None,
    *,
    genes: Sequence[str] | None = None,
) -> tuple[Tensor, list[str]]:
    """Each token's label: ``(codes long [N, L] (-1 = padded), label_names)``.

    - :class:`~fimp.tokenizers.GeneTokenizer`: the gene of each token, from ``token_index`` (the
      tokenizer's ``return_index=True`` output: column of ``x``) and the column names ``genes``
      (the vocabulary when None); the cls token (if any) is labelled with its vocabulary name.
    - :class:`~fimp.tokenizers.TimeSeriesPatchTokenizer`: patch j covers samples
      ``[jP, (j+1)P)`` and is labelled ``"t{jP}:{(j+1)P}"``; a class token is ``"cls"``.
    - :class:`~fimp.tokenizers.ImagePatchTokenizer`: patch (row r, column c) of the grid is
      ``"r{r}c{c}"``; the class token is ``"cls"``.
    - anything else: ``token_index`` columns as ``"col {c}"`` if given, else positions
      ``"token {t}"``.
    """
    from fimp.tokenizers import GeneTokenizer, ImagePatchTokenizer, TimeSeriesPatchTokenizer

    n, length = token_mask.shape
    device = token_mask.device
    positions = torch.arange(length, device=device).expand(n, length)
    if isinstance(tokenizer, GeneTokenizer):
        if token_index is None:
            raise ConfigError("GeneTokenizer labels need its token index (return_index=True)")
        names = [str(g) for g in (tokenizer.genes if genes is None else genes)]
        codes = token_index.to(device).long()
        if tokenizer.cls_token is not None:
            cls = positions < tokenizer.num_prefix_tokens
            codes = torch.where(cls, len(names), codes)
            names = [*names, tokenizer.cls_token]
    elif isinstance(tokenizer, (TimeSeriesPatchTokenizer, ImagePatchTokenizer)):
        prefix = int(tokenizer.num_prefix_tokens)
        if isinstance(tokenizer, TimeSeriesPatchTokenizer):
            p = tokenizer.patch_size
            names = [f"t{j * p}:{(j + 1) * p}" for j in range(length - prefix)]
        else:
            width = int(x.shape[-1]) // tokenizer.patch_size
            names = [f"r{j // width}c{j % width}" for j in range(length - prefix)]
        names = ["cls"] * prefix + names
        codes = positions.clone()
    elif token_index is not None:
        codes = token_index.to(device).long()
        width = int(codes.max()) + 1 if codes.numel() else 0
        names = [f"col {c}" for c in range(width)]
    else:
        names = [f"token {t}" for t in range(length)]
        codes = positions.clone()
    codes = torch.where(token_mask & (codes >= 0), codes, -1)
    return codes, names


def _inputs(model: FIMP, data: Any, forward_kwargs: dict[str, Any]):
    kwargs = dict(forward_kwargs)
    edge_index = kwargs.pop("edge_index", None)
    token_mask = kwargs.pop("token_mask", None)
    if isinstance(data, Data):
        edge_index = data.edge_index if edge_index is None else edge_index
        kwargs = model._tokenizer_kwargs(data, kwargs)
        x = data.x
    else:
        x = data
    if edge_index is None:
        raise GraphError(
            "edge_index is required: pass a torch_geometric Data, or edge_index=... with raw "
            "features"
        )
    if model.tokenizer is None and token_mask is not None:
        kwargs["token_mask"] = token_mask
    if model.tokenizer is not None:
        params = inspect.signature(model.tokenizer.forward).parameters
        if "return_index" in params:
            kwargs["return_index"] = True
    return x, edge_index, token_mask, kwargs


def iter_attention_maps(
    model: nn.Module,
    data: Data | Tensor,
    *,
    layer: int = -1,
    edge_mask: Tensor | Sequence[int] | None = None,
    edge_chunk_size: int | Literal["auto"] | None = None,
    chunk_memory_mb: float = 64.0,
    **forward_kwargs: Any,
) -> Iterator[AttentionMaps]:
    """Like :func:`attention_maps`, but yields the maps of at most ``edge_chunk_size`` edges at a
    time (in edge order), so memory is bounded by one chunk ([chunk, heads, L, L]).

    The hidden states up to ``layer`` are computed once (on the full graph); each chunk only runs
    the chosen layer's message creator on its edges. ``edge_chunk_size="auto"`` sizes chunks so
    that one chunk's attention tensor takes about ``chunk_memory_mb`` MiB. Pass the iterator to
    :func:`aggregate_by_label` to aggregate without holding all maps. The model stays in eval
    mode until the iterator is exhausted or closed.
    """
    model = _check_model(model)
    layer = _resolve_layer(model, layer)
    if edge_chunk_size not in (None, "auto") and (
        isinstance(edge_chunk_size, bool)
        or not isinstance(edge_chunk_size, int)
        or edge_chunk_size < 1
    ):
        raise ConfigError(
            f"edge_chunk_size must be a positive int, 'auto' or None, got {edge_chunk_size!r}"
        )
    x, edge_index, token_mask, kwargs = _inputs(model, data, forward_kwargs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tokens, mask, index = model.tokenize(x, **kwargs)
            if token_mask is not None and model.tokenizer is not None:
                mask = mask & token_mask
            n, length = mask.shape
            check_edge_index(edge_index, n)
            edge_index = edge_index.long().to(tokens.device)
            num_edges = edge_index.size(1)
            ids = _edge_ids(edge_mask, num_edges, edge_index.device)
            codes, names = token_labels(model.tokenizer, x, mask, index, genes=kwargs.get("genes"))
            h, mask = model.conv_inputs(tokens, edge_index, mask, layer)
            if model.pool_tokens:
                raise ConfigError(
                    "attention maps of a pool_tokens model have one token per node: there are "
                    "no token-level maps to read out"
                )
            check_tokens(h, model.convs[layer].dim, name="tokens")
            creator = model.convs[layer].message
            target_state, source_state = creator.prepare(h, mask)
        if edge_chunk_size is None:
            chunk = max(ids.numel(), 1)
        elif edge_chunk_size == "auto":
            per_edge = creator.heads * length * length * h.element_size()
            chunk = max(1, int(chunk_memory_mb * 2**20) // per_edge)
        else:
            chunk = edge_chunk_size
        for start in range(0, max(ids.numel(), 1), chunk):
            part = ids[start : start + chunk]
            src, dst = edge_index[0, part], edge_index[1, part]
            with torch.no_grad():  # not held across the yield: the caller's grad mode is kept
                if part.numel():
                    _, att = creator.edge_messages(
                        tuple(s.index_select(0, dst) for s in target_state),
                        tuple(s.index_select(0, src) for s in source_state),
                        mask[dst],
                        mask[src],
                        return_attention=True,
                    )
                else:
                    att = h.new_zeros(0, creator.heads, length, length)
            yield AttentionMaps(
                attention=att,
                edge_index=edge_index[:, part],
                edge_id=part,
                token_mask=mask,
                token_labels=codes,
                label_names=names,
                layer=layer,
                num_edges_total=num_edges,
            )
    finally:
        model.train(was_training)


def attention_maps(
    model: nn.Module,
    data: Data | Tensor,
    *,
    layer: int = -1,
    edge_mask: Tensor | Sequence[int] | None = None,
    edge_chunk_size: int | Literal["auto"] | None = None,
    **forward_kwargs: Any,
) -> AttentionMaps:
    """Per-edge attention [E, heads, L, L] of one layer of a trained FIMP, with token labels.

    The model runs in eval mode without gradients (its training mode is restored). Tokens and
    hidden states are computed exactly as :meth:`FIMP.forward` does (tokenizer, then layers
    ``0 .. layer-1`` with norm / activation / dropout between them, on the full graph); then the
    chosen layer's message creator gives the attention of the selected edges, the same values as
    ``FIMPConv(..., return_attention_weights=True)``. For a foundation-model message creator with
    several blocks this is the attention of its ``attention_layer`` block (the last by default).

    Args:
        model: a :class:`~fimp.models.FIMP` (FIMP-base or a foundation-model variant).
        data: a PyG ``Data`` (``x``, ``edge_index`` and the tokenizer's extra inputs, e.g.
            ``feature_names`` / ``pos``), or raw features (then pass ``edge_index=``).
        layer: which FIMPConv layer (0-based; negative counts from the end).
        edge_mask: which edges to compute: bool [E] or integer positions into ``edge_index``
            (None = all). Hidden states always use the full graph.
        edge_chunk_size: compute edges in chunks of this many, or ``"auto"`` (about 64 MiB of
            attention per chunk); bounds the working memory of the message creator. The result
            still holds all selected edges -- use
            :func:`iter_attention_maps` to stream them).
        **forward_kwargs: as for :meth:`FIMP.forward` (``edge_index``, ``token_mask``, tokenizer
            keywords such as ``genes=``, ``mask=``, ``coords=``).

    Returns:
        :class:`AttentionMaps`.
    """
    parts = list(
        iter_attention_maps(
            model,
            data,
            layer=layer,
            edge_mask=edge_mask,
            edge_chunk_size=edge_chunk_size,
            **forward_kwargs,
        )
    )
    first = parts[0]
    if len(parts) == 1:
        return first
    return AttentionMaps(
        attention=torch.cat([p.attention for p in parts]),
        edge_index=torch.cat([p.edge_index for p in parts], dim=1),
        edge_id=torch.cat([p.edge_id for p in parts]),
        token_mask=first.token_mask,
        token_labels=first.token_labels,
        label_names=first.label_names,
        layer=first.layer,
        num_edges_total=first.num_edges_total,
    )


def _group_codes(
    names: list[str], labels: Mapping[str, str] | Callable[[str], str] | Sequence[str] | None
) -> tuple[Tensor, list[str]]:
    """label code -> group code ([len(names)] long) and the group names (first-seen order)."""
    if labels is None:
        groups = list(names)
    elif isinstance(labels, Mapping):
        missing = [n for n in names if n not in labels]
        if missing:
            raise UnmappedLabelError(
                f"{len(missing)} token label(s) have no group in labels, e.g. {missing[:10]}; "
                "map every label (use e.g. 'other' for the rest)"
            )
        groups = [labels[n] for n in names]
    elif callable(labels):
        groups = [labels(n) for n in names]
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        if len(labels) != len(names):
            raise ShapeError(
                f"a sequence of groups must give one group per label ({len(names)} labels), got "
                f"{len(labels)}"
            )
        groups = list(labels)
    else:
        raise ConfigError(
            "labels must be None, a mapping label -> group, a callable or a sequence of groups, "
            f"got {type(labels).__name__}"
        )
    order: dict[str, int] = {}
    codes = [order.setdefault(str(g), len(order)) for g in groups]
    return torch.tensor(codes, dtype=torch.long), list(order)


def _edge_selection(edges: Tensor | Sequence[int] | None, total: int) -> Tensor | None:
    if edges is None:
        return None
    sel = torch.as_tensor(edges)
    if sel.dtype == torch.bool:
        if tuple(sel.shape) != (total,):
            raise ShapeError(
                f"a bool edges mask must have shape [E] = [{total}] (one entry per edge of the "
                f"edge_index given to attention_maps), got {tuple(sel.shape)}"
            )
        return sel.cpu()
    if sel.dtype.is_floating_point or sel.dim() != 1:
        raise ShapeError(f"edges must be bool [E] or a 1-D integer index, got {sel.dtype}")
    sel = sel.long().cpu()
    if sel.numel() and (int(sel.min()) < 0 or int(sel.max()) >= total):
        raise GraphError(f"edges index positions outside [0, {total}) of edge_index")
    out = torch.zeros(total, dtype=torch.bool)
    out[sel] = True
    return out


_AGG_ELEMENTS = 2**22  # attention entries aggregated at a time (bounds the temporary index tensors)


def _accumulate(
    att: Tensor, ei: Tensor, g: Tensor, k: int, mass: Tensor, rows: Tensor, cols: Tensor
) -> int:
    """Add one slice of edges: att float64 [E, L, L], ei [2, E], g [N, L] group codes (-1 pad).

    Returns the number of edges with at least one counted row.
    """
    tg, sg = g[ei[1]], g[ei[0]]  # [E, L]
    real_t, real_s = tg >= 0, sg >= 0
    live = real_t & real_s.any(dim=1, keepdim=True)
    pair = tg.unsqueeze(2) * k + sg.unsqueeze(1)
    ok = live.unsqueeze(2) & real_s.unsqueeze(1)
    mass += torch.bincount(pair[ok], weights=att[ok], minlength=k * k)
    rows += torch.bincount(tg[live], minlength=k).to(torch.float64)
    edge_live = live.any(dim=1)
    cols += torch.bincount(sg[edge_live][real_s[edge_live]], minlength=k).to(torch.float64)
    return int(edge_live.sum())


def aggregate_by_label(
    maps: AttentionMaps | Iterable[AttentionMaps],
    *,
    edges: Tensor | Sequence[int] | None = None,
    labels: Mapping[str, str] | Callable[[str], str] | Sequence[str] | None = None,
    reduce: Literal["mean", "sum"] = "mean",
    head: Literal["mean"] | int = "mean",
) -> LabelMatrix:
    r"""Aggregate per-edge attention into a (target label) x (source label) matrix.

    Let :math:`A_e` be edge e's attention (one head, or the mean over heads) with rows = target
    tokens t of node i and columns = source tokens s of node j, and :math:`\ell(\cdot)` the label
    (or the group of the label, with ``labels``) of a token. Over the selected edges E':

    .. math::
        S[a, b] = \sum_{e \in E'} \sum_{t: \ell(t) = a} \sum_{s: \ell(s) = b} A_e[t, s], \qquad
        n[a] = \#\{(e, t): e \in E',\ \ell(t) = a,\ t \text{ real},\ j \text{ has a real token}\}

    ``reduce="mean"`` returns :math:`S[a, b] / n[a]`: the mean attention row of target tokens
    labelled a, with source tokens pooled (summed) by label. Every row sums to 1, also when labels
    differ between nodes (genes selected per cell): a source label absent from an edge's source
    contributes 0 for that edge, so entry (a, b) is the *expected* attention mass on label b,
    not the mass conditional on b being present. ``reduce="sum"`` returns :math:`S` (rows sum to
    ``row_weight``). Padded tokens never count (neither as rows nor as columns); rows of a
    target whose source has no real token are left out.

    Rows are the target labels with :math:`n[a] > 0`, columns the labels of real source tokens
    on edges with at least one counted row, both in the order of ``maps.label_names`` (first
    occurrence of each group with ``labels``).

    Args:
        maps: an :class:`AttentionMaps` or an iterable of them (chunks of the same forward pass,
            e.g. :func:`iter_attention_maps`).
        edges: which edges to aggregate: bool [E] or integer positions, both in terms of the
            ``edge_index`` given to :func:`attention_maps` (``maps.edge_id``); None = every edge
            held. Every selected edge must have been computed.
        labels: None (token labels), a mapping label -> group, a callable label -> group or a
            sequence of groups aligned with ``label_names`` (e.g. genes -> pathways, brain
            regions -> networks). Every label needs a group.
        reduce: ``"mean"`` or ``"sum"`` (above).
        head: ``"mean"`` (average of the heads; still rows summing to 1) or a head index.

    Returns:
        :class:`LabelMatrix` (unpacks as ``matrix [R, C], row_labels, col_labels``).
    """
    if reduce not in ("mean", "sum"):
        raise ConfigError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if head != "mean" and (isinstance(head, bool) or not isinstance(head, int)):
        raise ConfigError(f"head must be 'mean' or a head index (int), got {head!r}")
    chunks = [maps] if isinstance(maps, AttentionMaps) else maps
    names: list[str] | None = None
    group_of: Tensor | None = None
    groups: list[str] = []
    selection: Tensor | None = None
    mass = rows = cols = None
    found = 0
    used_edges = 0
    for m in chunks:
        if not isinstance(m, AttentionMaps):
            raise ConfigError(f"maps must hold AttentionMaps, got {type(m).__name__}")
        if names is None:
            names = m.label_names
            group_of, groups = _group_codes(names, labels)
            k = len(groups)
            mass = torch.zeros(k * k, dtype=torch.float64)
            rows = torch.zeros(k, dtype=torch.float64)
            cols = torch.zeros(k, dtype=torch.float64)
            selection = _edge_selection(edges, m.num_edges_total)
        elif m.label_names != names:
            raise ConfigError(
                "all AttentionMaps chunks must come from one forward pass (labels differ)"
            )
        if isinstance(head, int) and not -m.heads <= head < m.heads:
            raise ConfigError(f"head must be in [{-m.heads}, {m.heads}), got {head}")
        assert group_of is not None and mass is not None and rows is not None and cols is not None
        edge_rows = torch.arange(m.num_edges)
        if selection is not None:
            keep = selection[m.edge_id.cpu()]
            found += int(keep.sum())
            edge_rows = edge_rows[keep]
        codes = m.token_labels.cpu()
        g = torch.where(codes >= 0, group_of[codes.clamp(min=0)], -1)
        length = max(int(codes.shape[1]), 1)
        step = max(1, _AGG_ELEMENTS // (length * length))
        for start in range(0, edge_rows.numel(), step):
            part = edge_rows[start : start + step]
            att = m.attention[part.to(m.attention.device)].detach()
            att = att[:, head] if isinstance(head, int) else att.mean(dim=1)
            used_edges += _accumulate(
                att.to(device="cpu", dtype=torch.float64),
                m.edge_index[:, part.to(m.edge_index.device)].cpu(),
                g,
                len(groups),
                mass,
                rows,
                cols,
            )
    if names is None:
        raise EmptySelectionError("maps is empty: pass the output of attention_maps")
    if selection is not None and found < int(selection.sum()):
        raise EmptySelectionError(
            f"{int(selection.sum()) - found} selected edge(s) were not computed; include them in "
            "attention_maps(edge_mask=...)"
        )
    assert mass is not None and rows is not None and cols is not None
    r_idx = (rows > 0).nonzero().flatten()
    c_idx = (cols > 0).nonzero().flatten()
    if r_idx.numel() == 0:
        raise EmptySelectionError(
            "no attention row to aggregate: the selected edges are empty or their sources have no "
            "real token; select other edges"
        )
    k = len(groups)
    s = mass.view(k, k)[r_idx][:, c_idx]
    weight = rows[r_idx]
    matrix = s / weight[:, None] if reduce == "mean" else s
    return LabelMatrix(
        matrix=matrix,
        row_labels=[groups[i] for i in r_idx.tolist()],
        col_labels=[groups[i] for i in c_idx.tolist()],
        row_weight=weight,
        num_edges=used_edges,
        reduce=reduce,
    )


def _expand(m: LabelMatrix, rows: list[str], cols: list[str]) -> Tensor:
    out = torch.zeros(len(rows), len(cols), dtype=torch.float64)
    r_pos = {lab: i for i, lab in enumerate(m.row_labels)}
    c_pos = {lab: i for i, lab in enumerate(m.col_labels)}
    for i, lab in enumerate(rows):
        if lab not in r_pos:
            out[i] = float("nan")
            continue
        src = m.matrix[r_pos[lab]]
        for j, c in enumerate(cols):
            if c in c_pos:
                out[i, j] = src[c_pos[c]]
    return out


def difference(a: LabelMatrix, b: LabelMatrix) -> LabelMatrix:
    """``a - b`` on aligned labels (e.g. within-type edges minus across-type edges).

    Rows are ``a``'s row labels followed by ``b``'s that ``a`` lacks; columns likewise. A column
    label missing from one side means no attention mass went to it there (0); a row label missing
    from one side has no attention rows there, so its entries are NaN. Both matrices must use the
    same ``reduce``. Rows of a difference of two ``"mean"`` matrices sum to 0.
    """
    if not isinstance(a, LabelMatrix) or not isinstance(b, LabelMatrix):
        raise ConfigError("difference takes two LabelMatrix results of aggregate_by_label")
    if a.reduce != b.reduce:
        raise ConfigError(
            f"cannot subtract a {b.reduce!r} matrix from a {a.reduce!r} one; aggregate both with "
            "the same reduce"
        )
    rows = a.row_labels + [r for r in b.row_labels if r not in set(a.row_labels)]
    cols = a.col_labels + [c for c in b.col_labels if c not in set(a.col_labels)]
    return LabelMatrix(
        matrix=_expand(a, rows, cols) - _expand(b, rows, cols),
        row_labels=rows,
        col_labels=cols,
        row_weight=None,
        num_edges=a.num_edges + b.num_edges,
        reduce="difference",
    )


def _node_groups(data: Data | Tensor, group_of_node: Any) -> tuple[Tensor, Tensor]:
    edge_index = data.edge_index if isinstance(data, Data) else data
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise GraphError("edges_between needs a Data with edge_index or an edge_index [2, E]")
    if isinstance(group_of_node, str):
        if not isinstance(data, Data) or group_of_node not in data:
            raise ConfigError(f"the Data has no attribute {group_of_node!r} to group nodes by")
        group_of_node = data[group_of_node]
    groups = group_of_node
    if not isinstance(groups, Tensor):
        groups = list(groups)
    n = len(groups)
    if edge_index.numel() and int(edge_index.max()) >= n:
        raise ShapeError(
            f"group_of_node has {n} entries but edge_index refers to node {int(edge_index.max())}; "
            "give one group per node"
        )
    return edge_index.long().cpu(), groups


def _member(groups: Any, nodes: Tensor, which: Any) -> Tensor:
    if which is None:
        return torch.ones(nodes.numel(), dtype=torch.bool)
    wanted = (
        set(which)
        if isinstance(which, Collection) and not isinstance(which, (str, bytes))
        else {which}
    )
    if isinstance(groups, Tensor):
        g = groups.detach().cpu()
        vals = torch.tensor(sorted(wanted), dtype=g.dtype)
        return torch.isin(g[nodes], vals)
    return torch.tensor([groups[i] in wanted for i in nodes.tolist()], dtype=torch.bool)


def edges_between(
    data: Data | Tensor,
    group_of_node: Tensor | Sequence[Any] | str,
    a: Any = None,
    b: Any = None,
) -> Tensor:
    """Edges j -> i whose target i is in group ``a`` and whose source j is in group ``b``.

    Args:
        data: a PyG ``Data`` (its ``edge_index``) or an ``edge_index`` [2, E].
        group_of_node: [N] group of every node (tensor or sequence, e.g. cell types), or the
            name of a ``Data`` attribute holding it (e.g. ``"y"``).
        a, b: one group, a collection of groups, or None (any group). Rows of the attention are
            target tokens, so ``a`` selects the attending cells and ``b`` the attended ones.

    Returns:
        bool [E], for ``aggregate_by_label(edges=...)`` or ``attention_maps(edge_mask=...)``.
    """
    edge_index, groups = _node_groups(data, group_of_node)
    return _member(groups, edge_index[1], a) & _member(groups, edge_index[0], b)


def edges_within(data: Data | Tensor, group_of_node: Tensor | Sequence[Any] | str) -> Tensor:
    """bool [E]: edges whose source and target are in the same group (``~`` gives the edges
    across groups). Arguments as for :func:`edges_between`."""
    edge_index, groups = _node_groups(data, group_of_node)
    if isinstance(groups, Tensor):
        g = groups.detach().cpu()
        return g[edge_index[0]] == g[edge_index[1]]
    src, dst = edge_index[0].tolist(), edge_index[1].tolist()
    return torch.tensor([groups[s] == groups[d] for s, d in zip(src, dst)], dtype=torch.bool)
