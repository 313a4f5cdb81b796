import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F

from fimp.errors import ConfigError, NonFiniteError, ShapeError
from fimp.tokenizers import ImagePatchTokenizer
from fimp.tokenizers.image import PatchEmbed, resample_abs_pos_embed

HAS_TIMM = importlib.util.find_spec("timm") is not None
TIMM_KEYS = {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "cls_token"}


@torch.no_grad()
def slow_patch_reference(images, weight, bias, p):
    """Explicit loop over the grid: token (i, j) = <W, patch(i, j)> + b, tokens row-major."""
    n, _, h, w = images.shape
    out = []
    for i in range(h // p):
        for j in range(w // p):
            patch = images[:, :, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(n, -1)
            out.append(patch @ weight.reshape(weight.shape[0], -1).T + bias)
    return torch.stack(out, dim=1)


def _images(n=2, c=3, h=32, w=32, seed=0):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_patch_embedding_backends_match_reference_and_each_other():
    torch.manual_seed(0)
    images = _images(h=32, w=24)
    auto = ImagePatchTokenizer(32, 8, 3, 16, class_token=False, pos_embed="none").eval()
    torch_only = ImagePatchTokenizer(
        32, 8, 3, 16, class_token=False, pos_embed="none", backend="torch"
    ).eval()
    assert isinstance(torch_only.patch_embed, PatchEmbed) and torch_only.backend == "torch"
    torch_only.load_state_dict(auto.state_dict())
    want = slow_patch_reference(images, auto.patch_embed.proj.weight, auto.patch_embed.proj.bias, 8)
    for tok in (auto, torch_only):
        got, token_mask = tok(images)
        assert got.shape == (2, 12, 16) and token_mask.all()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(auto(images)[0], torch_only(images)[0])
    if HAS_TIMM:
        from timm.layers import PatchEmbed as TimmPatchEmbed

        assert auto.backend == "timm" and isinstance(auto.patch_embed, TimmPatchEmbed)
        timm_tok = ImagePatchTokenizer(32, 8, 3, 16, backend="timm")
        assert isinstance(timm_tok.patch_embed, TimmPatchEmbed)
    else:
        assert auto.backend == "torch"
        with pytest.raises(ConfigError, match=r"fimp-core\[timm\]"):
            ImagePatchTokenizer(32, 8, 3, 16, backend="timm")


def test_without_timm_the_torch_backend_is_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm...` raise ImportError
    monkeypatch.setitem(sys.modules, "timm.layers", None)
    tok = ImagePatchTokenizer(16, 4, 1, 8)
    assert tok.backend == "torch" and isinstance(tok.patch_embed, PatchEmbed)
    with pytest.raises(ConfigError, match="not installed"):
        ImagePatchTokenizer(16, 4, 1, 8, backend="timm")
    tokens, _ = tok(torch.randn(2, 1, 16, 16))
    assert tokens.shape == (2, 17, 8)


def test_timm_vit_weights_load_by_name_and_tokens_match():
    torch.manual_seed(0)
    tok = ImagePatchTokenizer(32, 8, 3, 24).eval()
    shapes = {k: tuple(v.shape) for k, v in tok.state_dict().items()}
    assert TIMM_KEYS <= set(shapes)
    assert shapes["pos_embed"] == (1, 17, 24) and shapes["cls_token"] == (1, 1, 24)
    assert shapes["patch_embed.proj.weight"] == (24, 3, 8, 8)
    images = _images(h=32, w=32)
    # tokens = [cls; conv patches] + pos_embed, by hand
    tokens, _ = tok(images)
    patches = slow_patch_reference(
        images, tok.patch_embed.proj.weight, tok.patch_embed.proj.bias, 8
    )
    by_hand = torch.cat([tok.cls_token.expand(2, 1, 24), patches], dim=1) + tok.pos_embed
    torch.testing.assert_close(tokens, by_hand, atol=1e-5, rtol=1e-5)
    if HAS_TIMM:
        from timm.models.vision_transformer import VisionTransformer

        for size in (32, 48):
            vit = VisionTransformer(
                img_size=32,
                patch_size=8,
                embed_dim=24,
                depth=1,
                num_heads=2,
                dynamic_img_size=True,
            ).eval()
            state = {k: v for k, v in vit.state_dict().items() if k in TIMM_KEYS}
            missing, unexpected = tok.load_state_dict(state, strict=False)
            assert missing == ["mask_token"] and unexpected == []
            x = _images(h=size, w=size, seed=size)
            with torch.no_grad():
                feats = vit.patch_embed(x)  # NHWC when dynamic_img_size
                want = vit._pos_embed(feats)
            torch.testing.assert_close(tok(x)[0], want, atol=1e-5, rtol=1e-5)


def test_pos_embed_interpolation():
    torch.manual_seed(0)
    tok = ImagePatchTokenizer((16, 24), 4, 1, 6, backend="torch").eval()
    assert tok.grid_size == (4, 6) and tok.pos_embed.shape == (1, 25, 6)
    images = _images(n=1, c=1, h=32, w=16)
    tokens, _ = tok(images)
    assert tokens.shape == (1, 1 + 8 * 4, 6)
    grid = tok.pos_embed[:, 1:].reshape(1, 4, 6, 6).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(8, 4), mode="bicubic", antialias=True)
    resized = resized.permute(0, 2, 3, 1).reshape(1, 32, 6)
    patches = tok.patch_embed(images)
    torch.testing.assert_close(tokens[:, 1:], patches + resized)
    torch.testing.assert_close(tokens[:, :1], tok.cls_token + tok.pos_embed[:, :1])
    # a constant table stays constant; the same size is the identity
    const = torch.full((1, 1 + 16, 3), 0.7)
    torch.testing.assert_close(
        resample_abs_pos_embed(const, (7, 5), (4, 4)), torch.full((1, 36, 3), 0.7)
    )
    assert resample_abs_pos_embed(const, (4, 4), (4, 4)) is const
    if HAS_TIMM:
        from timm.layers import resample_abs_pos_embed as timm_resample

        table = torch.randn(1, 1 + 24, 5)
        torch.testing.assert_close(
            resample_abs_pos_embed(table, (3, 9), (4, 6)),
            timm_resample(table, [3, 9], [4, 6], num_prefix_tokens=1),
        )
    strict = ImagePatchTokenizer(16, 4, 1, 6, dynamic_img_size=False)
    with pytest.raises(ShapeError, match="dynamic_img_size=True"):
        strict(torch.randn(1, 1, 32, 16))


def test_mask_token_replaces_patch_before_pos_embed():
    torch.manual_seed(0)
    tok = ImagePatchTokenizer(16, 4, 3, 8).eval()
    images = _images(n=2, h=16, w=16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [0, 5]] = True
    mask[1, 15] = True
    plain, _ = tok(images)
    masked, token_mask = tok(images, mask=mask)
    assert token_mask.all() and masked.shape == (2, 17, 8)
    keep = torch.cat([torch.zeros(2, 1, dtype=torch.bool), mask], dim=1)
    assert torch.equal(plain[~keep], masked[~keep])  # cls and unmasked patches unchanged
    pos = tok.pos_embed.expand(2, 17, 8)
    torch.testing.assert_close(masked[keep], (tok.mask_token[0] + pos[keep]))
    # the masked pixels do not reach the tokens
    changed = images.clone()
    changed[0, :, 0:4, 0:4] = 9.0  # patch 0 of image 0
    assert torch.equal(tok(changed, mask=mask)[0], masked)
    masked.sum().backward()
    assert tok.mask_token.grad is not None


def test_patchify_matches_mae_layout():
    tok = ImagePatchTokenizer(8, 4, 2, 4, backend="torch")
    images = _images(n=1, c=2, h=8, w=12)
    targets = tok.patchify(images)
    assert targets.shape == (1, 6, 32) and tok.target_dim == 32 and tok.num_prefix_tokens == 1
    for i in range(2):
        for j in range(3):
            patch = images[0, :, i * 4 : (i + 1) * 4, j * 4 : (j + 1) * 4]  # [C, P, P]
            assert torch.equal(targets[0, i * 3 + j], patch.permute(1, 2, 0).reshape(-1))


def test_bad_input_raises_typed_errors():
    tok = ImagePatchTokenizer(16, 4, 3, 8, backend="torch")
    with pytest.raises(ShapeError, match="rank 4"):
        tok(torch.randn(3, 16, 16))
    with pytest.raises(ShapeError, match="channels"):
        tok(torch.randn(1, 1, 16, 16))
    with pytest.raises(ShapeError, match="multiple of patch_size"):
        tok(torch.randn(1, 3, 18, 16))
    with pytest.raises(NonFiniteError):
        tok(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(ShapeError, match="shape"):
        tok(torch.randn(1, 3, 16, 16), mask=torch.zeros(1, 17, dtype=torch.bool))
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        ImagePatchTokenizer(18, 4, 3, 8)
    with pytest.raises(ConfigError, match="pos_embed"):
        ImagePatchTokenizer(16, 4, 3, 8, pos_embed="rope")


def test_repr_reset_no_class_token():
    tok = ImagePatchTokenizer(16, 4, 3, 8, class_token=False, backend="torch")
    assert repr(tok) == (
        "ImagePatchTokenizer(img_size=(16, 16), patch_size=4, in_chans=3, dim=8, "
        "class_token=False, backend='torch')"
    )
    assert tok.cls_token is None and tok.pos_embed.shape == (1, 16, 8)
    before = tok.pos_embed.detach().clone()
    tok.reset_parameters()
    assert not torch.equal(before, tok.pos_embed)
    tokens, token_mask = tok(torch.randn(2, 3, 16, 16))
    assert tokens.shape == (2, 16, 8) and token_mask.shape == (2, 16)
