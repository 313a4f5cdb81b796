"""Readers on tiny files written by anndata / nibabel / pandas / Pillow, including bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fimp_data import read_h5ad, read_image_folder, read_nifti, read_parcel_timeseries
from fimp_data.errors import (
    DataFileNotFoundError,
    DuplicateIdError,
    EmptySelectionError,
    MissingKeyError,
    NonFiniteError,
    ShapeError,
)

# ------------------------------------------------------------------ h5ad


def _adata(n=6, g=4, seed=0):
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(n, g)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "cluster": pd.Categorical(
                ["b", "a", "b", "c", "a", "b"][:n], categories=["b", "a", "c"]
            ),
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
            "slide": ["s1"] * (n // 2) + ["s2"] * (n - n // 2),
        },
        index=[f"cell{i}" for i in range(n)],
    )
    var = pd.DataFrame(index=[f"Gene{j}" for j in range(g)])
    a = ad.AnnData(X=sp.csr_matrix(np.log1p(counts)), obs=obs, var=var)
    a.layers["counts"] = counts
    a.obsm["spatial"] = rng.uniform(0, 10, size=(n, 2))
    return a


def test_read_h5ad_obsm_layer_labels(tmp_path):
    a = _adata()
    a.write_h5ad(tmp_path / "a.h5ad")
    d = read_h5ad(tmp_path / "a.h5ad", label_key="cluster", group_key="slide")
    assert d.x.dtype == torch.float32 and d.x.shape == (6, 4)
    assert d.x.layout == torch.sparse_coo  # X is stored sparse: x stays sparse
    np.testing.assert_allclose(d.x.to_dense().numpy(), a.X.toarray(), rtol=1e-6)
    np.testing.assert_allclose(d.pos.numpy(), a.obsm["spatial"].astype(np.float32))
    assert d.label_names == ["b", "a", "c"]  # categorical order kept
    assert d.y.tolist() == [0, 1, 0, 2, 1, 0] and d.y.dtype == torch.long
    assert d.feature_names == ["Gene0", "Gene1", "Gene2", "Gene3"]
    assert d.node_ids[0] == "cell0" and d.group[-1] == "s2"
    counts = read_h5ad(tmp_path / "a.h5ad", layer="counts", genes=["Gene2", "Gene0"])
    np.testing.assert_array_equal(counts.x.numpy(), a.layers["counts"][:, [2, 0]])
    assert counts.feature_names == ["Gene2", "Gene0"] and "y" not in counts


def test_read_h5ad_obs_columns(tmp_path):
    a = _adata()
    a.write_h5ad(tmp_path / "a.h5ad")
    d = read_h5ad(tmp_path / "a.h5ad", spatial_key=("x", "y"))
    np.testing.assert_allclose(d.pos[:, 0].numpy(), a.obs["x"].to_numpy(np.float32))


def test_read_h5ad_errors_list_existing_keys(tmp_path):
    a = _adata()
    a.write_h5ad(tmp_path / "a.h5ad")
    p = tmp_path / "a.h5ad"
    with pytest.raises(MissingKeyError, match=r"obsm has \['spatial'\]"):
        read_h5ad(p, spatial_key="X_umap")
    with pytest.raises(MissingKeyError, match=r"\['row'\].*obs has"):
        read_h5ad(p, spatial_key=("row", "x"))
    with pytest.raises(MissingKeyError, match=r"layers are \['counts'\]"):
        read_h5ad(p, layer="spliced")
    with pytest.raises(MissingKeyError, match="cluster"):
        read_h5ad(p, label_key="celltype")
    with pytest.raises(MissingKeyError, match="Nope"):
        read_h5ad(p, genes=["Gene1", "Nope"])
    with pytest.raises(EmptySelectionError):
        read_h5ad(p, genes=[])
    with pytest.raises(DataFileNotFoundError, match="does not exist"):
        read_h5ad(tmp_path / "missing.h5ad")


def test_read_h5ad_bad_values(tmp_path):
    a = _adata()
    x = a.layers["counts"].copy()
    x[2, 1] = np.nan
    a.layers["bad"] = x
    a.obsm["spatial"][4, 0] = np.nan
    a.write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(NonFiniteError, match="cell2"):
        read_h5ad(tmp_path / "a.h5ad", layer="bad", spatial_key=("x", "y"))
    with pytest.raises(NonFiniteError, match=r"1 cells have no .*cell4"):
        read_h5ad(tmp_path / "a.h5ad")
    b = _adata()
    b.obs_names = ["c0", "c1", "c1", "c3", "c4", "c5"]
    b.write_h5ad(tmp_path / "b.h5ad")
    with pytest.raises(DuplicateIdError, match="obs_names_make_unique"):
        read_h5ad(tmp_path / "b.h5ad")
    c = _adata()[:0].copy()
    c.write_h5ad(tmp_path / "c.h5ad")
    with pytest.raises(EmptySelectionError):
        read_h5ad(tmp_path / "c.h5ad")


# ------------------------------------------------------------------ parcel series


def test_parcel_series_npy_csv_tsv(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "series"
    folder.mkdir()
    s1 = rng.normal(size=(5, 12))
    s2 = rng.normal(size=(5, 12))
    s3 = rng.normal(size=(5, 12))
    np.save(folder / "sub-01.npy", s1)
    pd.DataFrame(s2, index=[f"R{i}" for i in range(5)]).to_csv(folder / "sub-02.csv")
    np.savetxt(folder / "sub-03.tsv", s3, delimiter="\t")
    coords = pd.DataFrame({"name": [f"R{i}" for i in range(5)], "x": range(5), "y": 0.5, "z": -1.0})
    coords.to_csv(tmp_path / "regions.csv", index=False)
    out = read_parcel_timeseries(folder, tmp_path / "regions.csv", tr=0.72)
    assert [d.group for d in out] == ["sub-01", "sub-02", "sub-03"]
    for d, s in zip(out, (s1, s2, s3)):
        assert d.x.shape == (5, 12) and d.x.dtype == torch.float32
        np.testing.assert_allclose(d.x.numpy(), s.astype(np.float32), rtol=1e-6)
        assert d.node_ids == [f"R{i}" for i in range(5)]
        assert d.pos.shape == (5, 3) and d.tr == 0.72
    # time x regions layout, pandas default header, no coordinates
    pd.DataFrame(s1.T).to_csv(tmp_path / "t.csv", index=False)
    (d,) = read_parcel_timeseries(tmp_path / "t.csv", region_axis=1)
    np.testing.assert_allclose(d.x.numpy(), s1.astype(np.float32), rtol=1e-6)
    assert "pos" not in d and d.node_ids[0] == "region_0"


def test_parcel_series_errors(tmp_path):
    bad = np.ones((4, 10))
    bad[2, 3] = np.inf
    np.save(tmp_path / "s.npy", bad)
    with pytest.raises(NonFiniteError, match="region_2"):
        read_parcel_timeseries(tmp_path / "s.npy")
    np.save(tmp_path / "a.npy", np.ones((4, 10)))
    with pytest.raises(ShapeError, match="coordinate rows"):
        read_parcel_timeseries(tmp_path / "a.npy", np.zeros((3, 3)))
    pd.DataFrame({"a": [1, 2], "b": [3, 4]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(MissingKeyError, match=r"x, y, z.*\['a', 'b'\]"):
        read_parcel_timeseries(tmp_path / "a.npy", tmp_path / "c.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptySelectionError):
        read_parcel_timeseries(tmp_path / "empty")
    with pytest.raises(DataFileNotFoundError):
        read_parcel_timeseries(tmp_path / "nope")
    two = tmp_path / "two"
    two.mkdir()
    np.save(two / "x.npy", np.ones((4, 10)))
    np.save(two / "y.npy", np.ones((5, 10)))
    with pytest.raises(ShapeError, match="same parcellation"):
        read_parcel_timeseries(two)
    (tmp_path / "txt.csv").write_text("1,2,3\n4,abc,6\n")
    with pytest.raises(ShapeError, match="abc"):
        read_parcel_timeseries(tmp_path / "txt.csv")


# ------------------------------------------------------------------ NIfTI


def test_read_nifti_parcel_means_and_centroids(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(1)
    shape = (4, 3, 2)
    bold = rng.normal(size=(*shape, 7)).astype(np.float32)
    atlas = np.zeros(shape, dtype=np.int16)
    atlas[:2, :, 0] = 3
    atlas[2:, 1:, 1] = 7
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 1.0]
    img = nib.Nifti1Image(bold, affine)
    img.header.set_zooms((2.0, 2.0, 2.0, 0.8))
    nib.save(img, tmp_path / "sub-01_bold.nii.gz")
    nib.save(nib.Nifti1Image(atlas, affine), tmp_path / "atlas.nii.gz")
    d = read_nifti(tmp_path / "sub-01_bold.nii.gz", tmp_path / "atlas.nii.gz")
    assert d.x.shape == (2, 7) and d.group == "sub-01_bold" and d.tr == pytest.approx(0.8)
    for row, label in enumerate((3, 7)):
        mask = atlas == label
        np.testing.assert_allclose(d.x[row].numpy(), bold[mask].mean(axis=0), rtol=1e-5, atol=1e-6)
        ijk = np.argwhere(mask).mean(axis=0)
        np.testing.assert_allclose(
            d.pos[row].numpy(), affine[:3, :3] @ ijk + affine[:3, 3], rtol=1e-6
        )
    assert d.node_ids == ["label_3", "label_7"]
    d2 = read_nifti(tmp_path / "sub-01_bold.nii.gz", tmp_path / "atlas.nii.gz", labels=[7])
    assert d2.x.shape == (1, 7)
    with pytest.raises(EmptySelectionError, match=r"\[5\]"):
        read_nifti(tmp_path / "sub-01_bold.nii.gz", tmp_path / "atlas.nii.gz", labels=[5])
    nib.save(nib.Nifti1Image(atlas[:3], affine), tmp_path / "small.nii.gz")
    with pytest.raises(ShapeError, match="resample"):
        read_nifti(tmp_path / "sub-01_bold.nii.gz", tmp_path / "small.nii.gz")
    bold[0, 0, 0, 2] = np.nan
    nib.save(nib.Nifti1Image(bold, affine), tmp_path / "nan.nii.gz")
    with pytest.raises(NonFiniteError):
        read_nifti(tmp_path / "nan.nii.gz", tmp_path / "atlas.nii.gz")


# ------------------------------------------------------------------ images


def _image_folder(tmp_path, n=4, size=(6, 5)):
    from PIL import Image

    rng = np.random.default_rng(2)
    (tmp_path / "img").mkdir()
    arrays = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / "img" / f"p{i}.png")
        arrays.append(arr)
    df = pd.DataFrame(
        {
            "image": [f"img/p{i}.png" for i in range(n)],
            "lat": [10.0, 11.0, -5.0, 60.0][:n],
            "lon": [20.0, 21.0, 100.0, -3.0][:n],
            "country": ["DE", "FR", "DE", "GB"][:n],
        }
    )
    df.to_csv(tmp_path / "coords.csv", index=False)
    return arrays, df


def test_read_image_folder(tmp_path):
    arrays, df = _image_folder(tmp_path)
    d = read_image_folder(tmp_path, tmp_path / "coords.csv", label_column="country")
    assert d.x.shape == (4, 3 * 6 * 5) and d.image_shape == (3, 6, 5)
    np.testing.assert_allclose(
        d.x[1].reshape(3, 6, 5).numpy(), arrays[1].transpose(2, 0, 1) / 255.0, rtol=1e-6
    )
    np.testing.assert_allclose(d.pos.numpy(), df[["lat", "lon"]].to_numpy(np.float32))
    assert d.label_names == ["DE", "FR", "GB"] and d.y.tolist() == [0, 1, 0, 2]
    small = read_image_folder(tmp_path, tmp_path / "coords.csv", size=4)
    assert small.image_shape == (3, 4, 4)


def test_read_image_folder_errors(tmp_path):
    _, df = _image_folder(tmp_path)
    with pytest.raises(MissingKeyError, match=r"\['latitude'\].*it has"):
        read_image_folder(tmp_path, tmp_path / "coords.csv", lat_column="latitude")
    df.loc[2, "lat"] = np.nan
    df.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(NonFiniteError, match=r"img/p2\.png"):
        read_image_folder(tmp_path, tmp_path / "nan.csv")
    df2 = df.copy()
    df2.loc[2, "lat"] = 1.0
    df2.loc[3, "image"] = "img/missing.png"
    df2.to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(DataFileNotFoundError, match=r"missing\.png"):
        read_image_folder(tmp_path, tmp_path / "missing.csv")
    df2.loc[3, "image"] = "img/p0.png"
    df2.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DuplicateIdError):
        read_image_folder(tmp_path, tmp_path / "dup.csv")
    from PIL import Image

    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(tmp_path / "img" / "p3.png")
    df2.loc[3, "image"] = "img/p3.png"
    df2.to_csv(tmp_path / "sizes.csv", index=False)
    with pytest.raises(ShapeError, match="size="):
        read_image_folder(tmp_path, tmp_path / "sizes.csv")
