"""Tasks: masking ratios, fill strategies, splits, shapes, on synthetic and embedded data."""

import numpy as np
import pytest

from conftest import fmri_data, image_data, spatial_data
from fimp_bench.errors import BenchConfigError, UnknownNameError
from fimp_bench.tasks import FAMILIES, get_preset, get_task, resolve_tasks
from fimp_bench.tasks.base import fill_masked

SMOKE = get_preset("smoke")


def test_families_and_unknown_names():
    assert FAMILIES == {
        "spatial": ["spatial-expression", "spatial-celltype"],
        "fmri": ["fmri-reconstruction"],
        "image": ["image-country", "image-zeroshot", "image-zeroshot-random"],
        "spatial-large": ["spatial-expression-cycif", "spatial-celltype-cycif"],
        "fmri-large": ["fmri-reconstruction-fsa4"],
    }
    assert [t.name for t in resolve_tasks("spatial")] == FAMILIES["spatial"]
    with pytest.raises(UnknownNameError, match="valid tasks: spatial-expression"):
        get_task("spatial-exprssion")
    with pytest.raises(UnknownNameError, match="quick"):
        get_preset("fast")


def test_spatial_expression_masks_15_percent_and_fills_with_train_mean():
    prep = get_task("spatial-expression").prepare(seed=3, preset=SMOKE, data=spatial_data())
    g = prep.graphs[0]
    mask = g.input_mask.numpy()
    f = mask.shape[1]
    assert (mask.sum(1) == max(1, round(0.15 * f))).all()
    x, target = g.x.numpy(), g.target.numpy()
    assert np.array_equal(x[~mask], target[~mask])  # unmasked entries are untouched
    train = g.train_mask.numpy()
    observed = np.where(mask[train], np.nan, target[train])
    mean = np.nanmean(observed, axis=0)
    rows, cols = np.nonzero(mask)
    np.testing.assert_allclose(x[rows, cols], mean[cols], rtol=1e-5, atol=1e-6)
    # split: disjoint, covering
    parts = [g.train_mask, g.val_mask, g.test_mask]
    assert (
        int(sum(p.long() for p in parts).max()) == 1
        and int(sum(p.sum() for p in parts)) == g.num_nodes
    )
    assert prep.info["split_id"].startswith("spatial_block-")
    assert prep.token_shape == (f, 1) and len(prep.token_info["genes"]) == f


def test_same_seed_same_task_different_seed_different_mask():
    t = get_task("spatial-expression")
    a = t.prepare(seed=1, preset=SMOKE, data=spatial_data()).graphs[0]
    b = t.prepare(seed=1, preset=SMOKE, data=spatial_data()).graphs[0]
    c = t.prepare(seed=2, preset=SMOKE, data=spatial_data()).graphs[0]
    assert np.array_equal(a.input_mask, b.input_mask) and np.array_equal(a.x, b.x)
    assert not np.array_equal(a.input_mask, c.input_mask)


def test_fill_interpolate_is_linear_in_time_and_noise_is_seeded():
    x = np.array([[0.0, 10.0, 20.0, 30.0, 40.0]])
    mask = np.array([[False, True, True, False, False]])
    out = fill_masked(
        x,
        mask,
        strategy="interpolate",
        reference=x,
        reference_mask=mask,
        rng=np.random.default_rng(0),
        time_axis_len=5,
    )
    np.testing.assert_allclose(out, x)  # linear data is recovered exactly
    n1 = fill_masked(
        x, mask, strategy="noise", reference=x, reference_mask=mask, rng=np.random.default_rng(0)
    )
    n2 = fill_masked(
        x, mask, strategy="noise", reference=x, reference_mask=mask, rng=np.random.default_rng(0)
    )
    assert np.array_equal(n1, n2) and not np.array_equal(n1[mask], x[mask])
    with pytest.raises(BenchConfigError, match="time-ordered"):
        fill_masked(
            x,
            mask,
            strategy="interpolate",
            reference=x,
            reference_mask=mask,
            rng=np.random.default_rng(0),
        )
    with pytest.raises(BenchConfigError, match="not available"):
        get_task("spatial-expression").prepare(
            seed=0, preset=SMOKE, data=spatial_data(), fill="interpolate"
        )


def test_fmri_windows_patches_and_subject_split():
    prep = get_task("fmri-reconstruction").prepare(
        seed=0, preset=SMOKE, data=fmri_data(), fill="interpolate"
    )
    assert prep.token_shape == (2, 20) and prep.in_dim == 40
    g = prep.graphs[0]
    pmask = g.input_mask.view(g.num_nodes, 2, 20)
    assert (pmask.all(-1) | ~pmask.any(-1)).all()  # whole patches are masked
    assert (pmask.all(-1).sum(1) == 1).all()  # 20% of 2 patches -> 1 (at least one)
    subj = lambda idx: {int(prep.graphs[i].subject) for i in idx}  # noqa: E731
    assert not subj(prep.train_idx) & subj(prep.test_idx)
    assert not subj(prep.val_idx) & subj(prep.test_idx)
    # z-scored windows
    np.testing.assert_allclose(g.target.mean(1).numpy(), 0, atol=1e-5)


def test_image_tasks_split_kinds():
    country = get_task("image-country").prepare(seed=0, preset=SMOKE, data=image_data())
    assert country.info["split_id"].startswith("spatial_block-")
    assert country.token_info["image_shape"] == [3, 8, 8]
    zs = get_task("image-zeroshot").prepare(seed=0, preset=SMOKE, data=image_data())
    g = zs.graphs[0]
    assert int(g.val_mask.sum()) == 0
    assert int(g.test_mask.sum()) == round(0.25 * g.num_nodes)


@pytest.mark.parametrize(
    "task", ["spatial-expression", "spatial-celltype", "fmri-reconstruction", "image-country"]
)
def test_embedded_data_smoke_preset(task):
    prep = get_task(task).prepare(seed=0, preset=SMOKE)
    assert len(prep.info["dataset_sha256"]) == 64
    assert prep.graphs[0].x.isfinite().all()


def test_presets_give_every_model_the_same_budget_with_early_stopping():
    quick, full = get_preset("quick"), get_preset("full")
    assert (quick.max_epochs, quick.min_epochs, quick.patience) == (300, 150, 20)
    assert (quick.tuning_budget, full.tuning_budget) == (4, 8)
    assert full.min_epochs < full.max_epochs


@pytest.mark.parametrize(("min_epochs", "expected"), [(0, 2), (5, 5), (6, 6)])
def test_early_stopping_waits_for_min_epochs(min_epochs, expected):
    """lr = 0: the validation metric never improves after epoch 0, so the trial stops after
    ``patience`` stale epochs, but never before ``min_epochs``."""
    import torch

    from fimp_bench.models import get_model
    from fimp_bench.tasks import Preset
    from fimp_bench.train import train_trial

    preset = Preset("smoke", max_epochs=6, patience=1, tuning_budget=1, seeds=(0,))
    preset = Preset(**{**preset.__dict__, "min_epochs": min_epochs})
    prep = get_task("spatial-celltype").prepare(seed=0, preset=preset, data=spatial_data())
    spec = get_model("mlp")
    result = train_trial(
        prep, spec, {**spec.defaults, "lr": 0.0}, device=torch.device("cpu"), progress=False
    )
    assert result.epochs_run == expected
    assert result.best_epoch == 0


def test_user_data_is_named_and_checked():
    """Tasks take user data: named by its ``dataset`` attribute (else ``user-data``); a missing
    field or a node-level Data given to a graph-level task is a clear BenchConfigError."""
    data = spatial_data()
    data.dataset = "my-slide"
    prep = get_task("spatial-celltype").prepare(seed=0, preset=SMOKE, data=data)
    assert prep.info["dataset"] == "my-slide"
    del data.dataset
    prep = get_task("spatial-expression").prepare(seed=0, preset=SMOKE, data=data)
    assert prep.info["dataset"] == "user-data"
    assert prep.info["num_nodes"] == prep.graphs[0].num_nodes
    del data.y
    with pytest.raises(BenchConfigError, match=r"needs Data fields \['y'\]"):
        get_task("spatial-celltype").prepare(seed=0, preset=SMOKE, data=data)
    with pytest.raises(BenchConfigError, match="needs a graph-level dataset"):
        get_task("fmri-reconstruction").prepare(seed=0, preset=SMOKE, data=spatial_data())
    series = fmri_data()
    series[0].dataset = "my-study"
    assert (
        get_task("fmri-reconstruction").prepare(seed=0, preset=SMOKE, data=series).info["dataset"]
        == "my-study"
    )
