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

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch_geometric.utils import add_remaining_self_loops

from fimp_bench.errors import BenchConfigError
from fimp_bench.models.registry import ModelSpec, load_config

__all__ = ["FIMPBenchModel", "TokenMeanGNN", "specs"]


def _tokenizer(prep, dim: int, cfg: dict[str, Any]) -> tuple[nn.Module, int | None]:
    """The task's tokenizer (from its token kind) and the per-token reconstruction width.
    Gene tokens use ``cfg["value_encoding"]`` (the configs set ``linear``; absent =
    ``continuous``, scGPT's encoder)."""
    import fimp.tokenizers as tok

    kind = prep.token_info["kind"]
    if kind == "gene":
        enc = str(cfg.get("value_encoding", "continuous"))
        return tok.GeneTokenizer(list(prep.token_info["genes"]), dim, value_encoding=enc), 1
    if kind == "timeseries":
        patch = int(prep.token_info["patch_size"])
        return tok.TimeSeriesPatchTokenizer(dim, patch_size=patch, coord_dim=3), patch
    if kind == "image":
        c, h, w = prep.token_info["image_shape"]
        tokenizer = tok.ImagePatchTokenizer(
            img_size=(h, w),
            patch_size=int(prep.token_info["patch_size"]),
            in_chans=c,
            dim=dim,
            class_token=False,
        )
        return tokenizer, None
    raise ValueError(f"no FIMP tokenizer for token kind {kind!r}")


class _TokenInputs(nn.Module):
    """What a token model reads from a prepared graph: the raw features laid out for the task's
    tokenizer, plus its keyword inputs (gene names + mask, region xyz + patch mask)."""

    def _setup_tokens(self, prep) -> None:
        self.kind = prep.token_info["kind"]
        self.objective = prep.objective
        if self.kind == "gene":
            self.genes = list(prep.token_info["genes"])
        elif self.kind == "timeseries":
            self.patch = int(prep.token_info["patch_size"])
        elif self.kind == "image":
            self.image_shape = tuple(prep.token_info["image_shape"])

    def _token_args(self, data) -> tuple[torch.Tensor, dict[str, Any]]:
        x = data.x
        mask = getattr(data, "input_mask", None)
        if self.kind == "gene":
            return x, {"genes": self.genes, "mask": mask}
        if self.kind == "timeseries":
            pmask = None if mask is None else mask.view(x.size(0), -1, self.patch).any(dim=-1)
            return x, {"coords": data.pos, "mask": pmask}
        return x.view(x.size(0), *self.image_shape), {}


class FIMPBenchModel(_TokenInputs):
    """Adapts a :class:`fimp.models.FIMP` to the bench's ``forward(data) -> {"out", "embedding"}``.

    Config keys beyond the optimiser's: ``dim``, ``layers``, ``heads``, ``dropout``,
    ``attn_dropout``, ``self_loops``, ``block`` (``plain`` = the paper's ``W(H + M)``;
    ``prenorm`` = pre-norm residual blocks), ``ffn_ratio``, ``layer_scale``, ``qk_init``
    (``xavier`` / ``mimetic``), and the ablation
    switches ``messages`` (``graph``; ``self`` = every node attends only to its own tokens, no
    cross-node message) and ``pool_tokens`` (one mean-pooled token per node).
    """

    def __init__(self, prep, cfg: dict[str, Any], *, model_name: str = "fimp_base") -> None:
        super().__init__()
        import fimp

        dim = int(cfg["dim"])
        self._setup_tokens(prep)
        self.self_loops = bool(cfg.get("self_loops", False))
        self.messages = str(cfg.get("messages", "graph"))
        if self.messages not in ("graph", "self"):
            raise BenchConfigError(f"messages must be 'graph' or 'self', got {self.messages!r}")
        tokenizer, recon = _tokenizer(prep, dim, cfg)
        block = str(cfg.get("block", "plain"))
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
            block=block,
            ffn_ratio=float(cfg.get("ffn_ratio", 0.0)) if block == "prenorm" else 0.0,
            layer_scale=None if cfg.get("layer_scale") is None else float(cfg["layer_scale"]),
            pool_tokens=bool(cfg.get("pool_tokens", False)),
            qk_init=str(cfg.get("qk_init", "xavier")),
            self_attention=bool(cfg.get("self_attention", False)),
        )

    def forward(self, data) -> dict[str, torch.Tensor]:
        n = data.x.size(0)
        if self.messages == "self":
            ei = torch.arange(n, device=data.x.device).repeat(2, 1)
        elif self.self_loops:
            ei, _ = add_remaining_self_loops(data.edge_index, num_nodes=n)
        else:
            ei = data.edge_index
        x, kwargs = self._token_args(data)
        out = self.fimp(x, ei, **kwargs)
        if self.objective == "reconstruction":
            pred = out["recon"].reshape(n, -1)
        else:
            pred = out.get("logits")
        return {"out": pred, "embedding": out["node_embedding"]}


class TokenMeanGNN(_TokenInputs):
    """Ablation: a PyG baseline fed the masked mean of the learned tokens (the same tokenizer as
    FIMP, width ``dim``, trained end to end) instead of the raw feature vector."""

    def __init__(self, prep, cfg: dict[str, Any], *, kind: str) -> None:
        super().__init__()
        from fimp_bench.models.baselines import BaselineModel

        self._setup_tokens(prep)
        self.tokenizer, _ = _tokenizer(prep, int(cfg["dim"]), cfg)
        self.gnn = BaselineModel(kind, int(cfg["dim"]), prep.out_dim, cfg)

    def forward(self, data) -> dict[str, torch.Tensor]:
        from fimp.models import masked_mean

        x, kwargs = self._token_args(data)
        tokens, mask = self.tokenizer(x, **kwargs)[:2]
        inputs = SimpleNamespace(
            x=masked_mean(tokens, mask),
            edge_index=data.edge_index,
            batch=getattr(data, "batch", None),
        )
        return self.gnn(inputs)


def _build(prep, cfg: dict[str, Any]) -> nn.Module:
    return FIMPBenchModel(prep, cfg)


def _token_mean_builder(kind: str):
    def build(prep, cfg: dict[str, Any]) -> nn.Module:
        return TokenMeanGNN(prep, cfg, kind=kind)

    return build


#: FIMP-base and its ablations: (registry name, config name, description)
_FIMP_VARIANTS = (
    "fimp-base",
    "fimp-base-plain",
    "fimp-base-nomsg",
    "fimp-base-pooled",
    "fimp-base-mimetic",
)
#: PyG baselines that also get a token-mean variant (``<kind>-tokenmean``)
TOKEN_MEAN_KINDS = ("gcn", "graphsage", "graph-transformer")


def specs() -> list[ModelSpec]:
    """FIMP-base, its ablations and the token-mean GNNs (configs in ``fimp_bench/configs``)."""
    out = []
    for name in _FIMP_VARIANTS:
        cfg = load_config(name)
        out.append(
            ModelSpec(
                name=name,
                build=_build,
                defaults=cfg["defaults"],
                grid=tuple(cfg["grid"]),
                source='fimp.create_model("fimp_base") (fimp-core)',
                implementation="re-implementation",
                num_hops=lambda c: 0 if c.get("messages") == "self" else int(c.get("layers", 2)),
                description=cfg.get("description", ""),
            )
        )
    for kind in TOKEN_MEAN_KINDS:
        name = f"{kind}-tokenmean"
        cfg = load_config(name)
        out.append(
            ModelSpec(
                name=name,
                build=_token_mean_builder(kind),
                defaults=cfg["defaults"],
                grid=tuple(cfg["grid"]),
                source="fimp.tokenizers + torch_geometric.nn (" + kind + ")",
                implementation="re-implementation",
                num_hops=lambda c: int(c.get("layers", 2)),
                description=cfg.get("description", ""),
            )
        )
    return out
