"""Bad input to fimp_data's file readers, parametrised by entry point x fault: a file that is
empty, truncated, binary garbage, of another format, or a directory. Each is one typed
FIMPDataError naming the file; a snapshot of the tmp folder before and after shows nothing was
written or removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fimp_data import read_h5ad, read_image_folder, read_nifti, read_parcel_timeseries
from fimp_data.errors import FIMPDataError

FAULTS = ["empty", "truncated", "garbage", "other-format", "directory"]


def _snapshot(top: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(top)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(top.rglob("*"))
    }


def _good_h5ad(path: Path) -> None:
    ad = pytest.importorskip("anndata")
    a = ad.AnnData(X=np.ones((4, 3), dtype=np.float32))
    a.obsm["spatial"] = np.zeros((4, 2))
    a.write_h5ad(path)


def _good_npy(path: Path) -> None:
    np.save(path, np.random.default_rng(0).standard_normal((3, 40)))


def _good_nifti(path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 5), dtype=np.float32), np.eye(4)), str(path))


def _fault(path: Path, fault: str, good) -> None:
    if fault == "directory":
        path.mkdir()
        return
    if fault == "empty":
        path.write_bytes(b"")
    elif fault == "truncated":
        good(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif fault == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    else:  # another format under this name: a PNG header + text
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not the format you expect" * 10)


CASES = {
    "read_h5ad": ("cells.h5ad", _good_h5ad, lambda p: read_h5ad(p)),
    "read_parcel_timeseries[npy]": ("sub-01.npy", _good_npy, lambda p: read_parcel_timeseries(p)),
    "read_nifti[bold]": ("bold.nii.gz", _good_nifti, None),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("entry", sorted(CASES))
def test_file_readers(tmp_path, entry, fault):
    name, good, call = CASES[entry]
    path = tmp_path / name
    if entry == "read_nifti[bold]":
        atlas = tmp_path / "atlas.nii.gz"
        _good_nifti(atlas)

        def call(p):
            return read_nifti(p, atlas)

    _fault(path, fault, good)
    before = _snapshot(tmp_path)
    with pytest.raises(FIMPDataError) as info:
        call(path)
    assert str(path) in str(info.value) or path.name in str(info.value)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("fault", FAULTS)
def test_image_folder_with_a_bad_image_or_csv(tmp_path, fault):
    pil = pytest.importorskip("PIL.Image")
    root = tmp_path / "imgs"
    root.mkdir()
    pil.new("RGB", (8, 8)).save(root / "a.png")
    bad = root / "b.png"

    def good_png(p):
        pil.new("RGB", (8, 8)).save(p)

    _fault(bad, fault, good_png)
    csv = tmp_path / "coords.csv"
    csv.write_text("image,lat,lon,label\na.png,1,2,x\nb.png,3,4,y\n")
    before = _snapshot(tmp_path)
    with pytest.raises(FIMPDataError) as info:
        read_image_folder(root, csv)
    assert "b.png" in str(info.value)
    assert _snapshot(tmp_path) == before
    # and a broken coordinates CSV
    bad_csv = tmp_path / "bad.csv"
    _fault(bad_csv, fault, lambda p: p.write_text("image,lat,lon,label\na.png,1,2,x\n"))
    with pytest.raises(FIMPDataError) as info:
        read_image_folder(root, bad_csv)
    assert "bad.csv" in str(info.value)
