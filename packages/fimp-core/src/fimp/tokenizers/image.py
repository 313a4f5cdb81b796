"""Image patch tokenizer aligned with timm's Vision Transformer (patch + position embedding)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fimp.errors import ConfigError, ShapeError
from fimp.tokenizers._common import (
    check_bool_mask,
    check_choice,
    check_finite,
    check_float,
    check_positive_int,
)

__all__ = ["ImagePatchTokenizer", "PatchEmbed", "resample_abs_pos_embed"]


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2:
        raise ConfigError(f"{name} must be an int or a pair of ints, got {value!r}.")
    for v in pair:
        check_positive_int(v, name)
    return pair  # type: ignore[return-value]


class PatchEmbed(nn.Module):
    """Torch-only twin of ``timm.layers.PatchEmbed`` (``flatten=True``, no norm layer).

    ``proj`` is a Conv2d(in_chans, embed_dim, kernel = stride = patch_size); the output
    [N, C, H/P, W/P] is flattened row-major to [N, (H/P)(W/P), embed_dim]. Attribute and parameter
    names (``proj``, ``norm``, ``patch_size``, ``img_size``, ``grid_size``, ``num_patches``) equal
    timm's, so timm ViT weights (``patch_embed.proj.*``) load by name and outputs are identical.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = _pair(patch_size, "patch_size")
        self.img_size = _pair(img_size, "img_size")
        self.grid_size = (
            self.img_size[0] // self.patch_size[0],
            self.img_size[1] // self.patch_size[1],
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = True
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias
        )
        self.norm = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [N, C, H, W] (H, W multiples of the patch size) -> [N, (H/P)(W/P), embed_dim]."""
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


def resample_abs_pos_embed(
    posemb: Tensor,
    new_size: tuple[int, int],
    old_size: tuple[int, int],
    *,
    num_prefix_tokens: int = 1,
) -> Tensor:
    """Resize a ViT position embedding [1, prefix + gh*gw, d] to a new patch grid.

    The same operation as ``timm.layers.resample_abs_pos_embed``: the prefix (class token) rows are
    kept; the grid rows are reshaped to [1, d, gh, gw], resized with bicubic interpolation
    (``antialias=True``, ``align_corners=False``) in float32 and flattened row-major.

    Returns [1, prefix + new_h*new_w, d] in the dtype of ``posemb``.
    """
    if tuple(new_size) == tuple(old_size):
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid, size=tuple(new_size), mode="bicubic", align_corners=False, antialias=True
    )
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(posemb.dtype)
    return torch.cat([prefix, grid], dim=1)


def _timm_patch_embed() -> type[nn.Module] | None:
    try:
        from timm.layers import PatchEmbed as TimmPatchEmbed
    except ImportError:
        return None
    return TimmPatchEmbed


class ImagePatchTokenizer(nn.Module):
    r"""One token per image patch (+ an optional class token), as timm's ViT builds them.

    .. math::
        h = [\,\mathrm{cls};\ \mathrm{patch\_embed}(x)\,] + \mathrm{pos\_embed}

    ``patch_embed.proj`` is a Conv2d with kernel = stride = P (tokens row-major over the
    (H/P) x (W/P) grid), ``pos_embed`` [1, (1 +) num_patches, d] a learned table whose first row
    belongs to the class token ``cls_token`` [1, 1, d]. Names and shapes equal timm's
    ``VisionTransformer`` (``no_embed_class=False``), so ``patch_embed.*``, ``pos_embed`` and
    ``cls_token`` of a timm checkpoint load by name. ``patch_embed`` is ``timm.layers.PatchEmbed``
    when timm is installed (``backend="auto"``) and the torch-only `PatchEmbed` otherwise; both give
    identical outputs for the same weights.

    Images of another size (multiples of P) are accepted when ``dynamic_img_size=True``: the grid
    part of ``pos_embed`` is resized bicubically as timm's ``resample_abs_pos_embed`` does.

    Masking for reconstruction (BEiT / SimMIM style): a masked patch's embedding is replaced by the
    learned ``mask_token`` [1, 1, d] before the position embedding is added, so the token keeps its
    position. The class token is never masked.

    Args:
        img_size: expected image size (int or (H, W)) in pixels; fixes the ``pos_embed`` grid.
        patch_size: patch side P in pixels.
        in_chans: image channels C.
        dim: token width d.
        class_token: prepend ``cls_token`` (timm ViT default).
        pos_embed: ``"learned"`` (timm ViT) or ``"none"``.
        dynamic_img_size: accept other image sizes by resizing ``pos_embed`` (else a `ShapeError`).
        backend: ``"auto"`` (timm if importable), ``"timm"`` (required) or ``"torch"``.
        dropout: dropout after adding the position embedding (timm's ``pos_drop``).

    Shapes:
        forward ``images`` [N, C, H, W] -> tokens [N, L, d], token_mask bool [N, L] (all True),
        L = (1 if class_token) + (H/P)(W/P).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        dim: int = 768,
        *,
        class_token: bool = True,
        pos_embed: str = "learned",
        dynamic_img_size: bool = True,
        backend: str = "auto",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        img = _pair(img_size, "img_size")
        self.patch_size = check_positive_int(patch_size, "patch_size")
        self.in_chans = check_positive_int(in_chans, "in_chans")
        self.dim = check_positive_int(dim, "dim")
        if img[0] % self.patch_size or img[1] % self.patch_size:
            raise ConfigError(
                f"img_size {img} must be a multiple of patch_size {self.patch_size} on both sides."
            )
        self.img_size = img
        check_choice(backend, "backend", ("auto", "timm", "torch"))
        self.pos_embed_kind = check_choice(pos_embed, "pos_embed", ("learned", "none"))
        self.dynamic_img_size = bool(dynamic_img_size)
        timm_cls = _timm_patch_embed() if backend != "torch" else None
        if backend == "timm" and timm_cls is None:
            raise ConfigError(
                "backend='timm' needs timm, which is not installed; `pip install fimp-core[timm]` "
                "or use backend='auto' / 'torch' (identical outputs)."
            )
        if timm_cls is not None:
            self.patch_embed: nn.Module = timm_cls(
                img_size=img,
                patch_size=self.patch_size,
                in_chans=self.in_chans,
                embed_dim=self.dim,
                strict_img_size=False,
            )
            self.backend = "timm"
        else:
            self.patch_embed = PatchEmbed(img, self.patch_size, self.in_chans, self.dim)
            self.backend = "torch"
        self.grid_size = (img[0] // self.patch_size, img[1] // self.patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_prefix_tokens = 1 if class_token else 0
        self.cls_token = nn.Parameter(torch.empty(1, 1, self.dim)) if class_token else None
        self.pos_embed = (
            nn.Parameter(torch.empty(1, self.num_prefix_tokens + self.num_patches, self.dim))
            if self.pos_embed_kind == "learned"
            else None
        )
        self.mask_token = nn.Parameter(torch.empty(1, 1, self.dim))
        self.pos_drop = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm ViT's initialisation: pos_embed trunc-normal(0.02), cls_token normal(1e-6), the
        patch convolution PyTorch's default; mask_token trunc-normal(0.02)."""
        self.patch_embed.proj.reset_parameters()
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(img_size={self.img_size}, patch_size={self.patch_size}, "
            f"in_chans={self.in_chans}, dim={self.dim}, class_token={self.cls_token is not None}, "
            f"backend={self.backend!r})"
        )

    @property
    def target_dim(self) -> int:
        """Reconstruction target width per patch token, P * P * C pixels (see `patchify`)."""
        return self.patch_size * self.patch_size * self.in_chans

    def _check_images(self, images: Tensor) -> tuple[int, int]:
        check_float(images, "images", 4, "[N, C, H, W]")
        _, c, h, w = images.shape
        p = self.patch_size
        if c != self.in_chans:
            raise ShapeError(
                f"images have {c} channels but the tokenizer expects in_chans={self.in_chans}; "
                "images must be [N, C, H, W] (channels first)."
            )
        if h == 0 or w == 0 or h % p or w % p:
            raise ShapeError(
                f"image size {h}x{w} is not a (non-zero) multiple of patch_size {p}; "
                "resize or crop the images."
            )
        grid = (h // p, w // p)
        if grid != self.grid_size and not self.dynamic_img_size:
            raise ShapeError(
                f"images are {h}x{w} but the tokenizer was built for img_size {self.img_size}; "
                "resize them, or build it with dynamic_img_size=True to interpolate pos_embed."
            )
        return grid

    def patchify(self, images: Tensor) -> Tensor:
        """Pixel targets of every patch: [N, C, H, W] -> [N, (H/P)(W/P), P*P*C], patches row-major,
        pixels ordered (row, column, channel) within a patch (MAE's ``patchify``)."""
        gh, gw = self._check_images(images)
        n, c, p = images.shape[0], self.in_chans, self.patch_size
        x = images.reshape(n, c, gh, p, gw, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(n, gh * gw, p * p * c)

    def forward(self, images: Tensor, *, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Tokenize images.

        Args:
            images: [N, C, H, W] float pixels (normalised as the weights expect, e.g. ImageNet
                mean/std); H, W multiples of the patch size.
            mask: optional bool [N, (H/P)(W/P)] (row-major patch grid), True = patch hidden for
                reconstruction (its embedding becomes ``mask_token``).

        Returns:
            ``(tokens [N, L, d], token_mask bool [N, L])`` with L = prefix + (H/P)(W/P).
        """
        grid = self._check_images(images)
        check_finite(images, "images")
        n = images.shape[0]
        num_patches = grid[0] * grid[1]
        weight = self.patch_embed.proj.weight
        x = self.patch_embed(images.to(weight.dtype))
        if mask is not None:
            check_bool_mask(mask, (n, num_patches), "mask", "one entry per image patch, row-major")
            x = torch.where(mask.to(x.device).unsqueeze(-1), self.mask_token, x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + resample_abs_pos_embed(
                self.pos_embed, grid, self.grid_size, num_prefix_tokens=self.num_prefix_tokens
            )
        x = self.pos_drop(x)
        return x, torch.ones(n, x.shape[1], dtype=torch.bool, device=x.device)
