"""The tasks on the larger embedded datasets, chosen with ``dataset=`` / ``--dataset`` or as
their own task variants (families spatial-large, fmri-large): spatial-cycif-lung (11,201 cells
x 9 markers) and fmri-fsa4 (4,687 cortical vertices)."""

import json

import pytest

from fimp_bench.cli import main
from fimp_bench.tasks import get_preset, get_task

SMOKE = get_preset("smoke")
NAME = "spatial-cycif-lung"


@pytest.mark.parametrize("task", ["spatial-expression", "spatial-celltype"])
def test_tasks_prepare_on_the_cycif_dataset(task):
    prep = get_task(task).prepare(seed=0, preset=SMOKE, dataset=NAME)
    g = prep.graphs[0]
    assert prep.info["dataset"] == NAME
    assert len(prep.info["dataset_sha256"]) == 64
    # 9 markers: every preset's panel (12 / 32 / 256) keeps all of them, one token each
    assert prep.in_dim == 9 and prep.token_shape == (9, 1)
    assert prep.token_info["genes"][0] == "ELANE" and len(prep.token_info["genes"]) == 9
    assert g.num_nodes == 120 and g.x.shape == (120, 9) and g.x.isfinite().all()
    assert int(g.train_mask.sum() + g.val_mask.sum() + g.test_mask.sum()) == 120
    assert g.edge_index.size(1) > 0
    if task == "spatial-celltype":
        assert prep.num_classes == 8
    else:
        assert g.input_mask.sum(dim=1).eq(1).all()  # round(0.15 * 9) = 1 masked marker per cell


def test_cli_run_with_dataset_override(tmp_path, capsys):
    """``fimp-bench run --task spatial --dataset spatial-cycif-lung`` runs both tasks on it."""
    out = tmp_path / "res"
    code = main(
        [
            "run",
            "--task",
            "spatial",
            "--dataset",
            NAME,
            "--model",
            "gcn",
            "--seeds",
            "0",
            "--preset",
            "smoke",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    for task in ("spatial-expression", "spatial-celltype"):
        (rec,) = out.glob(f"{task}/records/gcn/seed-0.json")
        record = json.loads(rec.read_text())
        assert record["dataset"]["name"] == NAME
        assert len(record["dataset"]["sha256"]) == 64
        assert record["task_info"]["dataset"] == NAME
        assert record["task_info"]["num_features"] == 9
    assert "spatial-celltype (test split" in capsys.readouterr().out


def test_fmri_reconstruction_on_the_vertex_level_dataset():
    prep = get_task("fmri-reconstruction").prepare(seed=0, preset=SMOKE, dataset="fmri-fsa4")
    assert prep.info["dataset"] == "fmri-fsa4" and prep.info["num_nodes"] == 4687
    # 3 time segments of one run are the groups: one each for train, val and test
    assert (len(prep.train_idx), len(prep.val_idx), len(prep.test_idx)) == (2, 2, 2)
    g = prep.graphs[0]
    assert g.x.shape == (4687, 40) and g.x.isfinite().all()
    assert g.edge_index.shape == (2, 27844)
    assert g.pos.shape == (4687, 3)


@pytest.mark.parametrize(
    ("variant", "base", "dataset"),
    [
        ("spatial-expression-cycif", "spatial-expression", NAME),
        ("spatial-celltype-cycif", "spatial-celltype", NAME),
        ("fmri-reconstruction-fsa4", "fmri-reconstruction", "fmri-fsa4"),
    ],
)
def test_task_variants_are_the_base_task_on_the_large_dataset(variant, base, dataset):
    """A variant is its base task (metrics, objective, masking) on one dataset in every preset,
    and prepares exactly what ``--task <base> --dataset <name>`` prepares."""
    v, b = get_task(variant), get_task(base)
    assert v.family == b.family + "-large"
    assert {v.dataset_for(p) for p in ("quick", "full", "smoke")} == {dataset}
    assert (v.metrics, v.primary_metric, v.objective, v.level) == (
        b.metrics,
        b.primary_metric,
        b.objective,
        b.level,
    )
    pv = v.prepare(seed=1, preset=SMOKE)
    pb = b.prepare(seed=1, preset=SMOKE, dataset=dataset)
    assert pv.info == pb.info and pv.token_shape == pb.token_shape
    for gv, gb in zip(pv.graphs[:2], pb.graphs[:2], strict=True):
        assert gv.x.equal(gb.x) and gv.edge_index.equal(gb.edge_index)
    spec = v.spec()
    assert spec["task"] == variant and spec["datasets"]["quick"] == dataset
    assert dataset in spec["description"]
