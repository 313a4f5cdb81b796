"""Input checks shared by fimp layers. Each raises a typed error that names the fix."""

from __future__ import annotations

import torch
from torch import Tensor

from fimp.errors import GraphError, NonFiniteError, ShapeError


def check_finite(x: Tensor, name: str) -> None:
    """``x`` must hold no NaN/inf (:class:`NonFiniteError` naming the first bad rows)."""
    # one cheap reduction first; the element-wise check only runs when the sum is not finite
    # (NaN/inf propagate into the sum; an overflowing sum of finite values is re-checked exactly)
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten()
        raise NonFiniteError(
            f"{name} contains NaN or inf in {bad.numel()} row(s) (first: {bad[:5].tolist()}); "
            "fix the input features or the tokenizer (e.g. impute or drop those nodes)"
        )


def check_dtype(x: Tensor, module: torch.nn.Module, *, name: str = "x") -> None:
    """``x`` must have the floating dtype of ``module``'s parameters (outside autocast, where
    torch itself casts): :class:`ShapeError` naming both dtypes and the fix otherwise."""
    param = next(module.parameters(), None)
    if param is None or x.dtype == param.dtype or torch.is_autocast_enabled(x.device.type):
        return
    raise ShapeError(
        f"{name} is {x.dtype} but {type(module).__name__}'s weights are {param.dtype}; cast the "
        f"input (x.to({param.dtype})) or the module (module.to({x.dtype}))"
    )


def check_tokens(x: Tensor, dim: int, *, name: str = "x") -> None:
    """``x`` must be a finite floating tensor [N, L, dim] with N >= 1 and L >= 1."""
    if not isinstance(x, Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor [N, L, {dim}], got {type(x).__name__}")
    if x.dim() != 3:
        raise ShapeError(
            f"{name} must have shape [N, L, d] (nodes, tokens per node, token width), got "
            f"{tuple(x.shape)}; tokenize the node features first (see fimp.tokenizers)"
        )
    if not x.is_floating_point():
        raise ShapeError(f"{name} must be a floating tensor, got {x.dtype}; call .float() first")
    if x.size(-1) != dim:
        raise ShapeError(
            f"{name} has token width {x.size(-1)} but the layer was built for dim={dim}"
        )
    if x.size(0) == 0:
        raise GraphError(f"{name} has no nodes (empty graph): pass a graph with at least one node")
    if x.size(1) == 0:
        raise ShapeError(
            f"{name} has zero tokens per node: every node needs at least one token slot"
        )
    check_finite(x, name)


def check_token_mask(
    mask: Tensor | None, n: int, length: int, *, name: str = "token_mask"
) -> Tensor | None:
    """``mask`` must be None or a bool tensor [n, length] (True = real token)."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise ShapeError(f"{name} must be a bool tensor (True = real token), got {got}")
    if tuple(mask.shape) != (n, length):
        raise ShapeError(
            f"{name} must have shape [N, L] = {(n, length)} to match the tokens, got {tuple(mask.shape)}"
        )
    return mask


def check_edge_index(edge_index: Tensor, num_nodes: int) -> None:
    """``edge_index`` must be an integer tensor [2, E] with entries in [0, num_nodes)."""
    if not isinstance(edge_index, Tensor):
        raise GraphError(
            f"edge_index must be a torch.Tensor [2, E], got {type(edge_index).__name__}"
        )
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise GraphError(
            f"edge_index must have shape [2, E] (row 0 = source, row 1 = target), got "
            f"{tuple(edge_index.shape)}; transpose an [E, 2] edge list with .t()"
        )
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise GraphError(
            f"edge_index must be int64 (or int32), got {edge_index.dtype}; use .long()"
        )
    if edge_index.numel() > 0:
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0 or hi >= num_nodes:
            raise GraphError(
                f"edge_index holds node indices in [{lo}, {hi}] but there are only {num_nodes} nodes "
                f"(valid: 0..{num_nodes - 1}); re-index the edges after subsetting the nodes "
                "(torch_geometric.utils.subgraph(..., relabel_nodes=True))"
            )
