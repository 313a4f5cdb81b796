"""FIMP models for the bench: ``fimp-base`` = ``fimp.create_model("fimp_base", ...)``.

Tokens come from the task's token kind (fimp.tokenizers): genes -> ``GeneTokenizer`` (one token
per panel gene: gene id + value; masked entries get the learned mask embedding instead of their
filled value), time series -> ``TimeSeriesPatchTokenizer`` (20-sample patches + region xyz + time
encoding; masked patches get the learned mask token), images -> ``ImagePatchTokenizer``
(``patch_size`` x ``patch_size`` pixel patches). Read-outs: the masked mean of the final tokens
-> MLP head (classification), a per-token linear decoder (reconstruction). With
``self_loops: true`` (the default config) every node also attends to its own tokens (edge i -> i),
as GCN's self-loops do; without it a node's tokens see only its neighbours' tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch_geometric.utils import add_remaining_self_loops

from fimp_bench.models.registry import ModelSpec, load_config

__all__ = ["FIMPBenchModel", "specs"]


class FIMPBenchModel(nn.Module):
    """Adapts a :class:`fimp.models.FIMP` to the bench's ``forward(data) -> {"out", "embedding"}``."""

    def __init__(self, prep, cfg: dict[str, Any], *, model_name: str = "fimp_base") -> None:
        super().__init__()
        import fimp
        import fimp.tokenizers as tok

        dim = int(cfg["dim"])
        self.self_loops = bool(cfg.get("self_loops", False))
        kind = prep.token_info["kind"]
        self.kind = kind
        self.objective = prep.objective
        if kind == "gene":
            self.genes = list(prep.token_info["genes"])
            tokenizer = tok.GeneTokenizer(self.genes, dim)
            recon = 1
        elif kind == "timeseries":
            self.patch = int(prep.token_info["patch_size"])
            tokenizer = tok.TimeSeriesPatchTokenizer(dim, patch_size=self.patch, coord_dim=3)
            recon = self.patch
        elif kind == "image":
            c, h, w = prep.token_info["image_shape"]
            self.image_shape = (c, h, w)
            tokenizer = tok.ImagePatchTokenizer(
                img_size=(h, w),
                patch_size=int(prep.token_info["patch_size"]),
                in_chans=c,
                dim=dim,
                class_token=False,
            )
            recon = None
        else:
            raise ValueError(f"no FIMP tokenizer for token kind {kind!r}")
        self.fimp = fimp.create_model(
            model_name,
            tokenizer=tokenizer,
            dim=dim,
            num_layers=int(cfg["layers"]),
            heads=int(cfg["heads"]),
            dropout=float(cfg.get("dropout", 0.0)),
            attn_dropout=None if cfg.get("attn_dropout") is None else float(cfg["attn_dropout"]),
            num_classes=prep.num_classes if prep.objective == "classification" else None,
            recon_out=recon if prep.objective == "reconstruction" else None,
        )

    def forward(self, data) -> dict[str, torch.Tensor]:
        x, ei = data.x, data.edge_index
        if self.self_loops:
            ei, _ = add_remaining_self_loops(ei, num_nodes=x.size(0))
        mask = getattr(data, "input_mask", None)
        if self.kind == "gene":
            out = self.fimp(x, ei, genes=self.genes, mask=mask)
        elif self.kind == "timeseries":
            n = x.size(0)
            pmask = None if mask is None else mask.view(n, -1, self.patch).any(dim=-1)
            out = self.fimp(x, ei, coords=data.pos, mask=pmask)
        else:
            out = self.fimp(x.view(x.size(0), *self.image_shape), ei)
        if self.objective == "reconstruction":
            pred = out["recon"].reshape(x.size(0), -1)
        else:
            pred = out.get("logits")
        return {"out": pred, "embedding": out["node_embedding"]}


def _build(prep, cfg: dict[str, Any]) -> nn.Module:
    return FIMPBenchModel(prep, cfg)


def specs() -> list[ModelSpec]:
    """The built-in FIMP specs (``fimp-base``)."""
    cfg = load_config("fimp-base")
    return [
        ModelSpec(
            name="fimp-base",
            build=_build,
            defaults=cfg["defaults"],
            grid=tuple(cfg["grid"]),
            source='fimp.create_model("fimp_base") (fimp-core)',
            implementation="re-implementation",
            num_hops=lambda c: int(c.get("layers", 2)),
            description=cfg.get("description", ""),
        )
    ]
