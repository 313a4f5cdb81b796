"""DDP helpers: the same ``fimp-bench run`` under ``torchrun`` trains with
``torch.nn.parallel.DistributedDataParallel`` (gloo on CPU, nccl on GPU).

Graph-level tasks shard graphs with :class:`torch.utils.data.DistributedSampler`; node-level tasks
shard the training (seed) nodes: rank r takes every world-th seed of each global batch and trains on
the ``k+1``-hop subgraph around its seeds (``torch_geometric.utils.k_hop_subgraph``; the extra hop
keeps degree-normalised layers such as GCN exact at the boundary). Losses are sums over the local
seeds divided by the global count, so the averaged DDP gradient equals the 1-process gradient.
Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_from_env"]


@dataclass(frozen=True)
class DistContext:
    """Rank and world size of this process (``world == 1``: no DDP)."""

    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum of ``value`` over ranks (returned as a new tensor; identity when world == 1)."""
        if not self.enabled:
            return value
        out = value.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment (``WORLD_SIZE``, ``RANK``,
    ``MASTER_ADDR``...) with gloo on CPU or nccl on CUDA; a plain process gets world 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size())
