"""BrainLM (Caro et al. 2024, github.com/vandijklab/BrainLM) as a FIMP tokenizer + message creator.

Reads the legacy ``BrainLMForPretraining`` checkpoint (``brainlm_mae/modeling_brainlm.py``; e.g. the
repo's ``pretrained_models/2023-06-06-22_15_00-checkpoint-1400/`` and HF ``vandijklab/brainlm``
``old_13M``): a Hugging Face directory with ``config.json`` (``model_type "brainlm_mae"``) and
``pytorch_model.bin`` (read with ``torch.load(weights_only=True)``) or ``model.safetensors``.

Embedding keys (``vit.embeddings.``): ``signal_embedding_projection`` (Linear(P -> d), P =
``timepoint_patching_size``), ``xyz_embedding_projection`` (Linear(3 -> d) of the region's raw A424
X, Y, Z in mm), ``pos_embedding.pe`` ([5000, d] sinusoid added per time patch), ``cls_token``.
Encoder layer ``i`` (``vit.encoder.layer.{i}.``) is Hugging Face's ``NystromformerLayer``:
``attention.self.{query,key,value}``, ``attention.self.conv.weight`` [H, 1, K, 1],
``attention.output.dense`` / ``LayerNorm``, ``intermediate.dense``, ``output.dense`` /
``LayerNorm``; post-LN with exact-erf GELU; a final ``vit.layernorm`` follows the last layer.
Because ``num_landmarks == segment_means_seq_len`` (both 64 in every released config) the layer
runs its *exact* branch, ``softmax((q / d_h^¼)(k / d_h^¼)ᵀ) v``, and then adds a depthwise
convolution over the token axis of the value heads,
``Conv2d(H, H, (K, 1), padding=(K // 2, 0), groups=H, bias=False)(v)``.

Change of context (state it when reporting results). Upstream runs *all* regions' patches as one
sequence (region-major, ``<cls>`` first), so its attention and its convolution (±K//2 tokens in
flattened order) mix regions. In FIMP a node is one region: its tokens are that region's time
patches (signal projection + xyz projection + time encoding, as upstream), and

- the source stream is BrainLM run on that region's own patch sequence (the convolution then sees
  only the region's own patches, zero-padded at both ends), and
- in cross mode target patch t attends to the source region's patches with the pretrained W_Q /
  W_K / W_V and receives the convolution of the *source* value stream at patch t (the conv is a
  value-stream term; every region has the same number of patches, so positions align).

The self-loop identity therefore holds against BrainLM run on one region's token sequence, not
against a slice of the whole-brain forward pass.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fimp.errors import CheckpointError, ConfigError, ShapeError
from fimp.models import FIMP, register_model
from fimp.pretrained._files import read_safetensors, read_torch_weights, sha256_of
from fimp.pretrained.two_stream import (
    FeedForward,
    PretrainedComponents,
    TransformerBlock,
    TwoStreamMessage,
)
from fimp.tokenizers.timeseries import TimeSeriesPatchTokenizer

__all__ = [
    "BrainLMCheckpoint",
    "DepthwiseTokenConv",
    "brainlm_blocks",
    "brainlm_message",
    "brainlm_tokenizer",
    "brainlm_vitmae_pixels",
    "fimp_brainlm",
    "load_brainlm",
    "load_brainlm_vitmae",
    "read_brainlm",
]

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_ACTIVATIONS["relu"] = "relu"


@dataclass(frozen=True)
class BrainLMCheckpoint:
    """A parsed legacy BrainLM checkpoint directory.

    Attributes:
        config: the ``config.json`` dict.
        state: the encoder-side state dict with the ``vit.`` prefix removed (``embeddings.*``,
            ``encoder.layer.{i}.*``, ``layernorm.*``), float32.
        weights_file: the file the tensors came from.
    """

    config: dict[str, Any]
    state: dict[str, Tensor] = field(repr=False)
    weights_file: Path

    @property
    def dim(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def heads(self) -> int:
        return int(self.config["num_attention_heads"])

    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def patch_size(self) -> int:
        """Time points per token (``timepoint_patching_size``, 20 upstream)."""
        return int(self.config["timepoint_patching_size"])

    @property
    def eps(self) -> float:
        return float(self.config.get("layer_norm_eps", 1e-12))


class DepthwiseTokenConv(nn.Module):
    """BrainLM's (Nystromformer's) value-stream convolution as a two-stream ``value_term``.

    ``conv``: ``Conv2d(H, H, (K, 1), padding=(K // 2, 0), groups=H, bias=False)``; it slides along
    the token axis of the value heads ``v [B, H, L, d_h]`` (same kernel for every channel of a head).
    Padded value rows are zeroed first, which is what the convolution sees past the sequence ends.

    ``forward(v [B, H, L, d_h], key_mask bool [B, L]) -> [B, H, L, d_h]``.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if (
            not isinstance(conv, nn.Conv2d)
            or conv.groups != conv.in_channels
            or conv.kernel_size[1] != 1
            or conv.padding != (conv.kernel_size[0] // 2, 0)
        ):
            raise ConfigError(
                "conv must be Conv2d(H, H, (K, 1), padding=(K // 2, 0), groups=H) as in "
                f"Nystromformer, got {conv!r}"
            )
        self.conv = conv

    def forward(self, v: Tensor, key_mask: Tensor) -> Tensor:
        v = v * key_mask[:, None, :, None].to(v.dtype)
        return self.conv(v)


def _read_json_config(root: Path) -> dict[str, Any]:
    path = root / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing; a BrainLM checkpoint directory holds config.json"
        )
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} must be a JSON object")
    return cfg


def _read_config(root: Path) -> dict[str, Any]:
    path = root / "config.json"
    cfg = _read_json_config(root)
    kind = cfg.get("model_type")
    if kind == "vit_mae":
        raise ConfigError(
            f"{path} is a ViT-MAE BrainLM (vitmae_111M / vitmae_650M: stock HF ViT-MAE over the "
            "recording as an image); read_brainlm reads the legacy Nystromformer model "
            "(model_type 'brainlm_mae'). load_brainlm dispatches to load_brainlm_vitmae for it."
        )
    if kind != "brainlm_mae":
        raise CheckpointError(f"{path}: model_type is {kind!r}, expected 'brainlm_mae'")
    need = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "timepoint_patching_size",
    )
    missing = [k for k in need if k not in cfg]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}")
    if cfg.get("num_landmarks") != cfg.get("segment_means_seq_len"):
        raise ConfigError(
            f"num_landmarks={cfg.get('num_landmarks')} != segment_means_seq_len="
            f"{cfg.get('segment_means_seq_len')}: upstream would run the Nystrom landmark branch, "
            "which reshapes by the constant segment_means_seq_len and fails for real sequence "
            "lengths. Only the exact branch (the two equal, as in every released config) is "
            "supported."
        )
    act = cfg.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise ConfigError(
            f"hidden_act={act!r} is not supported (use one of {sorted(_ACTIVATIONS)})"
        )
    return cfg


def _load_weights(root: Path) -> tuple[dict[str, Tensor], Path]:
    bin_file, st_file = root / "pytorch_model.bin", root / "model.safetensors"
    if bin_file.is_file():
        raw = read_torch_weights(bin_file)
        path = bin_file
    elif st_file.is_file():
        raw = read_safetensors(st_file)
        path = st_file
    else:
        raise CheckpointError(
            f"{root} holds neither pytorch_model.bin nor model.safetensors (a BrainLM HF checkpoint)"
        )
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} must hold a state dict (mapping name -> tensor)")
    return dict(raw), path


def _strip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if any(k.startswith("vit.") for k in state):  # BrainLMForPretraining
        state = {k[4:]: v for k, v in state.items() if k.startswith("vit.")}
    # else: a bare BrainLMModel state dict
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def read_brainlm(path: str | os.PathLike[str]) -> BrainLMCheckpoint:
    """Read a legacy BrainLM checkpoint directory (``config.json`` + ``pytorch_model.bin``).

    Raises:
        CheckpointError: files missing or malformed, tensors missing or of the wrong shape.
        ConfigError: a variant this loader does not implement (ViT-MAE BrainLM, the Nystrom
            landmark branch, an unknown activation).
    """
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"BrainLM checkpoint directory {root} does not exist")
    cfg = _read_config(root)
    raw, weights = _load_weights(root)
    ckpt = BrainLMCheckpoint(config=cfg, state=_strip(raw), weights_file=weights)
    _check_shapes(ckpt)
    return ckpt


def _check_shapes(ckpt: BrainLMCheckpoint) -> None:
    d, h, ff, p = ckpt.dim, ckpt.heads, int(ckpt.config["intermediate_size"]), ckpt.patch_size
    if d % h:
        raise CheckpointError(f"hidden_size {d} is not divisible by num_attention_heads {h}")
    expected: dict[str, tuple[int, ...] | None] = {
        "embeddings.signal_embedding_projection.weight": (d, p),
        "embeddings.signal_embedding_projection.bias": (d,),
        "embeddings.xyz_embedding_projection.weight": (d, 3),
        "embeddings.xyz_embedding_projection.bias": (d,),
        "embeddings.cls_token": (1, 1, d),
        "embeddings.pos_embedding.pe": None,
        "layernorm.weight": (d,),
        "layernorm.bias": (d,),
    }
    k = ckpt.config.get("conv_kernel_size")
    for i in range(ckpt.num_layers):
        pre = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            expected[pre + f"attention.self.{name}.weight"] = (d, d)
            expected[pre + f"attention.self.{name}.bias"] = (d,)
        if k is not None:
            expected[pre + "attention.self.conv.weight"] = (h, 1, int(k), 1)
        expected.update(
            {
                pre + "attention.output.dense.weight": (d, d),
                pre + "attention.output.dense.bias": (d,),
                pre + "attention.output.LayerNorm.weight": (d,),
                pre + "attention.output.LayerNorm.bias": (d,),
                pre + "intermediate.dense.weight": (ff, d),
                pre + "intermediate.dense.bias": (ff,),
                pre + "output.dense.weight": (d, ff),
                pre + "output.dense.bias": (d,),
                pre + "output.LayerNorm.weight": (d,),
                pre + "output.LayerNorm.bias": (d,),
            }
        )
    absent = [key for key in expected if key not in ckpt.state]
    if absent:
        raise CheckpointError(
            f"{ckpt.weights_file} lacks {len(absent)} BrainLM tensors, e.g. "
            f"{['vit.' + a for a in absent[:5]]} (num_hidden_layers={ckpt.num_layers})"
        )
    for key, shape in expected.items():
        got = tuple(ckpt.state[key].shape)
        if shape is not None and got != shape:
            raise CheckpointError(
                f"{ckpt.weights_file}: vit.{key} has shape {got}, expected {shape}"
            )
    pe = ckpt.state["embeddings.pos_embedding.pe"]
    if pe.dim() != 2 or pe.shape[1] != d:
        raise CheckpointError(
            f"vit.embeddings.pos_embedding.pe must be [max_len, {d}], got {pe.shape}"
        )
    if f"encoder.layer.{ckpt.num_layers}.output.dense.weight" in ckpt.state:
        raise CheckpointError(
            f"the weights hold more layers than num_hidden_layers={ckpt.num_layers}"
        )


def _linear(state: Mapping[str, Tensor], prefix: str) -> nn.Linear:
    w = state[prefix + ".weight"]
    b = state.get(prefix + ".bias")
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    return lin


def _layer_norm(state: Mapping[str, Tensor], prefix: str, eps: float) -> nn.LayerNorm:
    w = state[prefix + ".weight"]
    ln = nn.LayerNorm(w.shape[0], eps=eps)
    with torch.no_grad():
        ln.weight.copy_(w)
        ln.bias.copy_(state[prefix + ".bias"])
    return ln


def brainlm_blocks(ckpt: BrainLMCheckpoint) -> tuple[list[TransformerBlock], nn.LayerNorm]:
    """BrainLM's encoder layers as post-LN two-stream blocks, plus its final ``vit.layernorm``.

    Each ``NystromformerLayer`` maps to ``norm1 = attention.output.LayerNorm``,
    ``norm2 = output.LayerNorm``, ``mlp = output.dense(gelu(intermediate.dense(x)))``, the
    attention ``query/key/value`` + ``attention.output.dense``, and the depthwise convolution
    ``attention.self.conv`` as a :class:`DepthwiseTokenConv` value term (source stream).
    """
    s, eps = ckpt.state, ckpt.eps
    act = _ACTIVATIONS[ckpt.config.get("hidden_act", "gelu")]
    k = ckpt.config.get("conv_kernel_size")
    blocks = []
    for i in range(ckpt.num_layers):
        pre = f"encoder.layer.{i}."
        value_term = None
        if k is not None:
            conv = nn.Conv2d(
                ckpt.heads,
                ckpt.heads,
                kernel_size=(int(k), 1),
                padding=(int(k) // 2, 0),
                bias=False,
                groups=ckpt.heads,
            )
            with torch.no_grad():
                conv.weight.copy_(s[pre + "attention.self.conv.weight"])
            value_term = DepthwiseTokenConv(conv)
        blocks.append(
            TransformerBlock(
                ckpt.dim,
                ckpt.heads,
                q_proj=_linear(s, pre + "attention.self.query"),
                k_proj=_linear(s, pre + "attention.self.key"),
                v_proj=_linear(s, pre + "attention.self.value"),
                out_proj=_linear(s, pre + "attention.output.dense"),
                norm1=_layer_norm(s, pre + "attention.output.LayerNorm", eps),
                norm2=_layer_norm(s, pre + "output.LayerNorm", eps),
                mlp=FeedForward(
                    _linear(s, pre + "intermediate.dense"),
                    _linear(s, pre + "output.dense"),
                    activation=act,
                ),
                norm_first=False,
                value_term=value_term,
            )
        )
    return blocks, _layer_norm(s, "layernorm", eps)


def brainlm_message(
    ckpt: BrainLMCheckpoint,
    *,
    source_stream: Literal["self", "fixed"] = "self",
    freeze: Literal["all", "attention", "none"] = "all",
) -> TwoStreamMessage:
    """BrainLM's encoder as a :class:`TwoStreamMessage` (final norm = ``vit.layernorm``)."""
    blocks, final_norm = brainlm_blocks(ckpt)
    return TwoStreamMessage(
        blocks, final_norm=final_norm, source_stream=source_stream, freeze=freeze
    )


def brainlm_tokenizer(
    ckpt: BrainLMCheckpoint, *, max_patches: int | None = None
) -> TimeSeriesPatchTokenizer:
    """BrainLM's embedding layer as a :class:`~fimp.tokenizers.TimeSeriesPatchTokenizer`.

    ``signal_embedding_projection``, ``xyz_embedding_projection`` and the time encoding ``pe``
    (copied from ``vit.embeddings.pos_embedding.pe``, first ``max_patches`` rows; default all) are
    upstream's tensors. A region's tokens are its ``T / P`` patches, no ``<cls>`` token. The mask
    token (signal term of a patch hidden for reconstruction) starts as the projection of a flat
    all-zero patch (the median of robust-scaled BOLD), i.e. ``signal_embedding_projection.bias``;
    upstream removes masked patches from the encoder input (MAE), which a fixed-length FIMP node
    cannot do.
    """
    s = ckpt.state
    pe = s["embeddings.pos_embedding.pe"]
    rows = int(pe.shape[0]) if max_patches is None else int(max_patches)
    if not 1 <= rows <= pe.shape[0]:
        raise ConfigError(f"max_patches must be in [1, {pe.shape[0]}], got {max_patches}")
    tok = TimeSeriesPatchTokenizer(
        ckpt.dim,
        patch_size=ckpt.patch_size,
        coord_dim=3,
        max_patches=rows,
        time_encoding="sinusoidal",
    )
    with torch.no_grad():
        for name in ("signal_embedding_projection", "xyz_embedding_projection"):
            lin = getattr(tok, name)
            lin.weight.copy_(s[f"embeddings.{name}.weight"])
            lin.bias.copy_(s[f"embeddings.{name}.bias"])
        tok.pos_embedding.pe.copy_(pe[:rows])
        tok.mask_token.copy_(s["embeddings.signal_embedding_projection.bias"])
    return tok


def load_brainlm(
    path: str | os.PathLike[str],
    *,
    max_patches: int | None = None,
    source_stream: Literal["self", "fixed"] = "self",
    freeze: Literal["all", "attention", "none"] = "all",
) -> PretrainedComponents:
    """Load a legacy BrainLM checkpoint as FIMP's tokenizer + two-stream message creator.

    Args:
        path: the checkpoint directory (``config.json`` + ``pytorch_model.bin`` or
            ``model.safetensors``; the HF Trainer's other files are ignored).
        max_patches: rows of the time encoding kept in the tokenizer (default all, 5000 upstream).
        source_stream, freeze: see :class:`~fimp.pretrained.two_stream.TwoStreamMessage`;
            ``freeze="all"`` also freezes the tokenizer.

    Returns:
        ``PretrainedComponents(tokenizer, message, config)``: tokenizer ``(signal [N, T], coords
        [N, 3]) -> (tokens [N, T / P, d], token_mask)`` (as upstream: ``signal`` robust-scaled
        BOLD per region, T = 200 for the released model; ``coords`` the regions' raw A424 X, Y, Z
        in mm, not normalised); the message creator over BrainLM's
        Nystromformer layers (exact attention + value-stream depthwise convolution, post-LN, final
        ``vit.layernorm``), whose self-loop message equals BrainLM run on that region's own patch
        sequence (see the module docs for this change of context); and a JSON-serialisable config.
        A ViT-MAE BrainLM directory (``model_type "vit_mae"``) is handed to
        :func:`load_brainlm_vitmae` (image tokenizer; a node is a whole recording).
    """
    root = Path(path)
    if root.is_dir() and _read_json_config(root).get("model_type") == "vit_mae":
        return load_brainlm_vitmae(root, source_stream=source_stream, freeze=freeze)
    ckpt = read_brainlm(path)
    tok = brainlm_tokenizer(ckpt, max_patches=max_patches)
    message = brainlm_message(ckpt, source_stream=source_stream, freeze=freeze)
    if freeze == "all":
        tok.requires_grad_(False)
    config = {
        "family": "brainlm",
        "architecture": "BrainLMForPretraining (Nystromformer encoder, exact branch)",
        "weights": {"file": str(ckpt.weights_file), "sha256": sha256_of(ckpt.weights_file)},
        "dim": ckpt.dim,
        "heads": ckpt.heads,
        "num_layers": ckpt.num_layers,
        "patch_size": ckpt.patch_size,
        "conv_kernel_size": ckpt.config.get("conv_kernel_size"),
        "context": "one region's patch sequence per node (upstream: all regions, CLS first)",
        "cls_token": "not used (a node is one region's patches)",
        "source_stream": source_stream,
        "freeze": freeze,
        "frozen_parameters": message.frozen_parameter_names(),
        "tokenizer_frozen": freeze == "all",
    }
    return PretrainedComponents(tok, message, config)


@register_model
def fimp_brainlm(
    *,
    checkpoint: str | os.PathLike[str],
    source_stream: Literal["self", "fixed"] = "self",
    freeze: Literal["all", "attention", "none"] = "all",
    num_layers: int = 1,
    **kwargs: Any,
) -> FIMP:
    """FIMP-BrainLM: BrainLM's embeddings as tokenizer, its encoder as every layer's message creator.

    ``checkpoint`` is a legacy BrainLM directory (:func:`load_brainlm`). The ``num_layers`` FIMP
    layers share the one pretrained creator. Other keyword arguments go to
    :class:`fimp.models.FIMP` (for masked-patch reconstruction pass ``recon_out`` = the patch size,
    20 upstream). The loader's config is kept as ``model.pretrained_config``.
    """
    tok, message, config = load_brainlm(checkpoint, source_stream=source_stream, freeze=freeze)
    model = FIMP(
        tok,
        dim=message.dim,
        heads=message.heads,
        num_layers=num_layers,
        message=lambda _i: message,
        **kwargs,
    )
    model.pretrained_config = config
    return model


# --------------------------------------------------------------------------- ViT-MAE BrainLM
_VITMAE_TARGET = {16: 432, 14: 434}  # ViTMAEForPreTraining.resize_target_size
_VITMAE_KEYS = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def brainlm_vitmae_pixels(recording: Tensor, *, patch_size: int = 16, channels: int = 3) -> Tensor:
    """A recording as the ViT-MAE BrainLM image, as ``ViTMAEForPreTraining.forward`` builds it.

    Args:
        recording: [V, T] or [B, V, T] (rows = regions, columns = time points), already prepared as
            upstream's tutorial does (divided by 5.6430855 and regions ordered by A424 Y
            coordinate for the released models).
        patch_size: the model's patch size (16 -> 432 x 432 image, 14 -> 434 x 434).
        channels: the model's input channels (3: the recording is repeated).

    Returns:
        ``[B, channels, S, S]``: the recording padded symmetrically with -1 to S x S.
    """
    if patch_size not in _VITMAE_TARGET:
        raise ConfigError(f"patch_size must be 16 or 14 (upstream's two cases), got {patch_size}")
    if recording.dim() == 2:
        recording = recording.unsqueeze(0)
    if recording.dim() != 3 or not recording.is_floating_point():
        raise ShapeError(
            f"recording must be float [V, T] or [B, V, T], got {tuple(recording.shape)}"
        )
    target = _VITMAE_TARGET[patch_size]
    _, v, t = recording.shape
    if v > target or t > target or (target - v) % 2 or (target - t) % 2:
        raise ShapeError(
            f"a [{v}, {t}] recording cannot be padded symmetrically to {target} x {target} "
            "(upstream pads (target - size) // 2 on each side; both sizes need the parity of "
            f"{target} and must not exceed it)"
        )
    img = recording.unsqueeze(1).expand(-1, channels, -1, -1)
    pw, ph = (target - t) // 2, (target - v) // 2
    return nn.functional.pad(img, (pw, pw, ph, ph), mode="constant", value=-1.0)


def brainlm_vitmae_to_timm(config: Mapping[str, Any], state: Mapping[str, Tensor]) -> nn.Module:
    """The ViT-MAE BrainLM encoder (HF ``ViTMAEModel`` keys) as a timm ``VisionTransformer``.

    HF ViT-MAE blocks are timm blocks under other names: ``layernorm_before`` = ``norm1``,
    ``attention.attention.{query,key,value}`` = ``attn.qkv`` (rows concatenated ``[q; k; v]``),
    ``attention.output.dense`` = ``attn.proj``, ``layernorm_after`` = ``norm2``,
    ``intermediate.dense`` / ``output.dense`` = ``mlp.fc1`` / ``fc2``; ``vit.layernorm`` = ``norm``;
    ``position_embeddings`` (fixed 2-D sin-cos with a CLS row, stored) = ``pos_embed``. Pre-LN,
    exact softmax, exact-erf GELU, LayerNorm eps ``layer_norm_eps``.
    """
    from functools import partial

    from fimp.pretrained.timm_vit import _require_timm

    timm = _require_timm()
    d = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    depth = int(config["num_hidden_layers"])
    ff = int(config["intermediate_size"])
    patch = int(config["patch_size"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConfigError(
            f"hidden_act={config.get('hidden_act')!r}: only exact 'gelu' is supported"
        )
    if patch not in _VITMAE_TARGET:
        raise ConfigError(f"patch_size={patch}: upstream supports only 16 and 14")
    pos = state.get("embeddings.position_embeddings")
    if pos is None:
        raise CheckpointError("the weights lack vit.embeddings.position_embeddings")
    n = pos.shape[1] - 1
    grid = math.isqrt(n)
    if grid * grid != n or grid * patch != _VITMAE_TARGET[patch]:
        raise CheckpointError(
            f"position_embeddings has {n} patch rows; expected a square grid of "
            f"{_VITMAE_TARGET[patch] // patch}^2 for patch_size {patch}"
        )
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=int(config.get("num_channels", 3)),
        num_classes=0,
        embed_dim=d,
        depth=depth,
        num_heads=heads,
        mlp_ratio=ff / d,
        qkv_bias=bool(config.get("qkv_bias", True)),
        class_token=True,
        global_pool="token",
        norm_layer=partial(nn.LayerNorm, eps=eps),
        act_layer=nn.GELU,
    )
    sd: dict[str, Tensor] = {
        "cls_token": state["embeddings.cls_token"],
        "pos_embed": pos,
        "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": state["layernorm.weight"],
        "norm.bias": state["layernorm.bias"],
    }
    for i in range(depth):
        hf, tm = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            sd[tm + f"attn.qkv.{kind}"] = torch.cat(
                [state[hf + f"attention.attention.{x}.{kind}"] for x in ("query", "key", "value")]
            )
            for src, dst in _VITMAE_KEYS.items():
                sd[tm + f"{dst}.{kind}"] = state[hf + f"{src}.{kind}"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"ViT-MAE BrainLM weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()


def load_brainlm_vitmae(
    path: str | os.PathLike[str],
    *,
    source_stream: Literal["self", "fixed"] = "self",
    freeze: Literal["all", "attention", "none"] = "all",
) -> PretrainedComponents:
    """Load a ViT-MAE BrainLM (``vitmae_111M`` / ``vitmae_650M`` layout) via the timm ViT adapter.

    The directory holds ``config.json`` (``model_type "vit_mae"``) and ``pytorch_model.bin`` or
    ``model.safetensors`` with HF ViT-MAE keys (``vit.*``; ``decoder.*`` is ignored). Here a node
    is a whole recording as an image (:func:`brainlm_vitmae_pixels`), tokens = CLS + 16 x 16
    patches of the padded recording; the self-loop message equals ``ViTMAEModel``'s
    ``last_hidden_state`` with no masking, in patch order. Needs the ``[timm]`` extra.
    """
    from fimp.pretrained.timm_vit import load_timm_vit

    root = Path(path)
    cfg = _read_json_config(root)
    if cfg.get("model_type") != "vit_mae":
        raise CheckpointError(f"{root / 'config.json'}: model_type is {cfg.get('model_type')!r}")
    need = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [k for k in (*need, "patch_size") if k not in cfg]
    if missing:
        raise CheckpointError(f"{root / 'config.json'} lacks {missing}")
    raw, weights = _load_weights(root)
    state = _strip(raw)
    model = brainlm_vitmae_to_timm(cfg, state)
    tok, message, config = load_timm_vit(model, source_stream=source_stream, freeze=freeze)
    config = {
        **config,
        "family": "brainlm_vitmae",
        "architecture": "BrainLM ViT-MAE (HF ViTMAEModel, pre-LN)",
        "weights": {"file": str(weights), "sha256": sha256_of(weights)},
        "context": "one recording per node as a padded image (regions x time, -1 padding)",
    }
    return PretrainedComponents(tok, message, config)
