"""Corrupt weight files given to every checkpoint reader: empty, truncated, garbage bytes or a
directory in place of the file. Each is a CheckpointError naming the file and what is wrong (no
raw SafetensorError / UnpicklingError / DecodeError), on every format branch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fimp.errors import CheckpointError
from fimp.pretrained import load_bert, load_brainlm, load_scgpt
from fimp.pretrained.dinov2_onnx import dinov2_onnx_to_timm
from fimp.pretrained.timm_vit import read_state_dict

CORRUPTIONS = ["empty", "truncated", "garbage", "directory"]


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes() if path.is_file() else b""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: max(1, len(data) // 3)])
    elif how == "garbage":
        path.write_bytes(b"\x00\xffnot a weights file\x13" * 50)
    else:
        path.mkdir()


def _check(exc: pytest.ExceptionInfo, path: Path, how: str) -> None:
    msg = str(exc.value)
    assert str(path) in msg
    if how == "empty":
        assert "empty" in msg
    if how == "directory":
        assert "directory" in msg or "does not exist" in msg or "holds neither" in msg


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_brainlm(tmp_path, fmt, how):
    if fmt == "safetensors":
        pytest.importorskip("safetensors", reason="the [safetensors] extra is not installed")
    from test_pretrained_brainlm import write_brainlm_dir

    write_brainlm_dir(tmp_path, fmt=fmt)
    f = tmp_path / ("pytorch_model.bin" if fmt == "bin" else "model.safetensors")
    _corrupt(f, how)
    with pytest.raises(CheckpointError) as exc:
        load_brainlm(tmp_path)
    if how != "directory":
        _check(exc, f, how)


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_bert(tmp_path, fmt, how):
    pytest.importorskip("safetensors", reason="the [safetensors] extra is not installed")
    from test_pretrained_bert import write_bert

    write_bert(tmp_path, fmt=fmt)
    f = tmp_path / ("pytorch_model.bin" if fmt == "bin" else "model.safetensors")
    _corrupt(f, how)
    with pytest.raises(CheckpointError) as exc:
        load_bert(tmp_path)
    if how != "directory":
        _check(exc, f, how)


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_scgpt(tmp_path, how):
    from test_pretrained_scgpt import write_scgpt_dir

    write_scgpt_dir(tmp_path)
    f = tmp_path / "best_model.pt"
    _corrupt(f, how)
    with pytest.raises(CheckpointError) as exc:
        load_scgpt(tmp_path)
    _check(exc, f, how)


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_state_dict(tmp_path, suffix, how):
    import torch

    f = tmp_path / f"vit{suffix}"
    sd = {"w": torch.randn(4, 4)}
    if suffix == ".safetensors":
        st = pytest.importorskip("safetensors.torch")
        st.save_file(sd, str(f))
    else:
        torch.save(sd, f)
    _corrupt(f, how)
    with pytest.raises(CheckpointError) as exc:
        read_state_dict(f)
    _check(exc, f, how)


@pytest.mark.parametrize("how", ["empty", "garbage", "directory"])
def test_dinov2_onnx(tmp_path, how):
    pytest.importorskip("onnx")
    f = tmp_path / "model.onnx"
    _corrupt(f, how)
    with pytest.raises(CheckpointError) as exc:
        dinov2_onnx_to_timm(f, img_size=28)
    _check(exc, f, how)
