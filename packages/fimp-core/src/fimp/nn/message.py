"""The message-creator protocol shared by FIMP-base and the foundation-model adapters.

`FIMPConv` computes, for every edge j -> i, a message H_ji = MSG(H_i, H_j) in R^{L_i x d}. A message
creator splits that work so that everything that depends on one node only is done once per node:

1. ``prepare(x, token_mask) -> (target_state, source_state)``: per-node work. Each state is a tuple
   of tensors whose first dimension is N (the node dimension). FIMP-base returns the per-node query
   projection as the target state and the per-node key/value projections as the source state; a
   two-stream foundation model returns the target tokens and the per-layer keys/values of the source
   stream.
2. ``edge_messages(target_state_e, source_state_e, query_mask, key_mask, *, return_attention=False)``:
   per-edge work on the gathered states (every tensor of ``target_state`` indexed by the edges'
   targets, every tensor of ``source_state`` by their sources, so each has first dimension E).
   Returns the messages ``[E, L_q, d]``, plus the attention ``[E, heads, L_q, L_k]`` (the last
   layer's for stacked creators) when ``return_attention=True``. Rows of a query token whose source
   has no valid token are zero; so are padded query rows.

3. Optional, ``grouped_context(target_state_t, source_state_g, query_mask, key_mask, block_live)``:
   the neighbour-grouped form (``FIMPConv(attention_path=...)``): states gathered per target [T, ...]
   and per neighbour slot [T, D * L, ...], returning each target's summed contexts [T, L_q, d]
   (for creators with ``linear_output``; see :meth:`fimp.nn.CrossAttention.grouped_context`).

``FIMPConv`` does the gathering, edge chunking (with recomputation in backward), aggregation and
combination; a creator never sees the graph.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

State = tuple[Tensor, ...]


class MessageCreator(nn.Module, ABC):
    """Base class of message creators (see the module docstring for the protocol).

    Attributes:
        dim: token width d (input and output).
        heads: number of attention heads in the returned attention weights.
    """

    dim: int
    heads: int

    @abstractmethod
    def prepare(self, x: Tensor, token_mask: Tensor) -> tuple[State, State]:
        """Per-node work. ``x``: [N, L, d]; ``token_mask``: bool [N, L] (True = real token)."""

    @abstractmethod
    def edge_messages(
        self,
        target_state: State,
        source_state: State,
        query_mask: Tensor,
        key_mask: Tensor,
        *,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Per-edge work on gathered states; returns [E, L_q, d] (and [E, heads, L_q, L_k])."""
