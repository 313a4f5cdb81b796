"""Classic baselines built from ``torch_geometric.nn`` (not re-implemented).

Each reads one vector per node (``data.x`` ``[N, F]``, masked entries filled by the task's fill
strategy), produces an embedding ``[N, hidden]`` and a linear head ``[N, out_dim]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch_geometric.nn import MLP as PygMLP
from torch_geometric.nn import GINConv, GPSConv, TransformerConv
from torch_geometric.nn.models import GAT, GCN, GIN, GraphSAGE

from fimp_bench.models.registry import ModelSpec, load_config

__all__ = ["BaselineModel", "specs"]


class _GraphTransformer(nn.Module):
    """Input projection + ``layers`` x :class:`torch_geometric.nn.TransformerConv` (ReLU,
    dropout between)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList(
            TransformerConv(hidden, hidden // heads, heads=heads, dropout=dropout)
            for _ in range(layers)
        )
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch=None) -> torch.Tensor:
        h = self.inp(x)
        for i, conv in enumerate(self.convs):
            h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = nn.functional.dropout(h.relu(), p=self.dropout, training=self.training)
        return h


class _GPS(nn.Module):
    """Input projection + ``layers`` x :class:`torch_geometric.nn.GPSConv` (local GINConv +
    global multi-head attention over each graph, PyG defaults otherwise)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList(
            GPSConv(
                hidden,
                GINConv(
                    nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
                ),
                heads=heads,
                dropout=dropout,
            )
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch=None) -> torch.Tensor:
        h = self.inp(x)
        # In inference, nn.MultiheadAttention's C++ fast path sends GPSConv's key-padding mask
        # through aten::_masked_softmax: ~6x slower on the CPU than the regular path, which
        # computes the same function (3,288-node graph: 0.44 s vs 0.08 s). Use the regular path
        # here and restore the process-wide switch afterwards.
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            for conv in self.convs:
                h = conv(h, edge_index, batch)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
        return h


class _Majority(nn.Module):
    """No features: a constant embedding; trained, its head's bias learns the class prior
    (majority class) or the per-entry training mean."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch=None) -> torch.Tensor:
        return x.new_zeros(x.size(0), 1)


class BaselineModel(nn.Module):
    """A body (PyG model) + a linear head. ``forward(data) -> {"out", "embedding"}``."""

    def __init__(self, kind: str, in_dim: int, out_dim: int, cfg: dict[str, Any]) -> None:
        super().__init__()
        hidden, layers = int(cfg["hidden"]), int(cfg["layers"])
        dropout, heads = float(cfg.get("dropout", 0.0)), int(cfg.get("heads", 4))
        self.kind = kind
        self.uses_graph = kind not in ("mlp", "majority")
        if kind == "mlp":
            self.body = PygMLP(
                in_channels=in_dim,
                hidden_channels=hidden,
                out_channels=hidden,
                num_layers=layers,
                dropout=dropout,
                norm=None,
            )
        elif kind == "gcn":
            self.body = GCN(in_dim, hidden, layers, dropout=dropout)
        elif kind == "gat":
            self.body = GAT(in_dim, hidden, layers, dropout=dropout, heads=heads)
        elif kind == "graphsage":
            self.body = GraphSAGE(in_dim, hidden, layers, dropout=dropout)
        elif kind == "gin":
            self.body = GIN(in_dim, hidden, layers, dropout=dropout)
        elif kind == "graph-transformer":
            self.body = _GraphTransformer(in_dim, hidden, layers, heads, dropout)
        elif kind == "gps":
            self.body = _GPS(in_dim, hidden, layers, heads, dropout)
        elif kind == "majority":
            self.body = _Majority()
            hidden = 1
        else:
            raise ValueError(f"unknown baseline kind {kind!r}")
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, data) -> dict[str, torch.Tensor]:
        x = data.x
        if self.kind == "mlp":
            h = self.body(x)
        elif self.kind == "gps":
            h = self.body(x, data.edge_index, getattr(data, "batch", None))
        else:
            h = self.body(x, data.edge_index)
        return {"out": self.head(h), "embedding": h}


_SOURCES = {
    "mlp": "torch_geometric.nn.MLP",
    "gcn": "torch_geometric.nn.models.GCN (GCNConv)",
    "gat": "torch_geometric.nn.models.GAT (GATConv)",
    "graphsage": "torch_geometric.nn.models.GraphSAGE (SAGEConv)",
    "gin": "torch_geometric.nn.models.GIN (GINConv)",
    "graph-transformer": "torch_geometric.nn.TransformerConv",
    "gps": "torch_geometric.nn.GPSConv (GINConv local + multi-head attention)",
    "majority": "fimp_bench (constant embedding + learned bias)",
}


def _builder(kind: str):
    def build(prep, cfg: dict[str, Any]) -> nn.Module:
        return BaselineModel(kind, prep.in_dim, prep.out_dim, cfg)

    return build


def specs() -> list[ModelSpec]:
    """The built-in baseline specs, configs from ``fimp_bench/configs/<name>.yaml``."""
    out = []
    for kind, source in _SOURCES.items():
        cfg = load_config(kind)
        out.append(
            ModelSpec(
                name=kind,
                build=_builder(kind),
                defaults=cfg["defaults"],
                grid=tuple(cfg["grid"]),
                source=source,
                implementation="official" if kind == "majority" else "re-implementation",
                num_hops=(lambda c: 0)
                if kind in ("mlp", "majority")
                else (lambda c: int(c.get("layers", 2))),
                local=kind != "gps",
                description=cfg.get("description", ""),
            )
        )
    return out
