"""fimp-bench explain: a trained fimp-base on the spatial tasks -> attention heatmaps and CSVs.

Runs on the smoke preset (embedded spatial data, 12-gene panel, 120 spots, 2 epochs, 1 trial).
Checks: the files exist (PNG/SVG/CSV/state/summary), every row of a full CSV sums to 1 over the
source tokens (attention rows), within - across rows sum to 0, the CSV equals an independent
recomputation with fimp.interpret on the saved model, and the CLI entry reuses a checkpoint.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fimp_bench.errors import BenchConfigError, UnknownNameError
from fimp_bench.explain import explain, run_explain, write_label_csv

SMOKE = {"preset": "smoke", "budget": 1, "top_k": 6}


def _read(path: str) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    assert header[0] == "target \\ source"
    return [r[0] for r in body], header[1:], np.array([[float(v) for v in r[1:]] for r in body])


@pytest.fixture(scope="module")
def celltype_run(tmp_path_factory) -> tuple[dict, Path]:
    from fimp_bench.tasks import get_preset, get_task

    g = get_task("spatial-celltype").prepare(seed=0, preset=get_preset("smoke")).graphs[0]
    src, dst = g.edge_index[:, g.test_mask[g.edge_index[1]]]
    pair = (int(g.y[dst].mode().values), int(g.y[src].mode().values))  # a frequent test pair
    out = tmp_path_factory.mktemp("explain-celltype")
    result = explain("spatial-celltype", "fimp-base", seed=0, out=out, pairs=[pair], **SMOKE)
    return result, out


def test_celltype_writes_heatmaps_and_rows_sum_to_one(celltype_run) -> None:
    result, _out = celltype_run
    files = result["files"]
    for name in ("all", "within", "across", "within_minus_across"):
        png = Path(files[f"{name}_png"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(files[f"{name}_svg"]).read_text().lstrip().startswith("<?xml")
    rows, cols, m = _read(files["all_full_csv"])
    assert len(rows) == len(cols) == 12  # the smoke panel: every gene is a row and a column
    assert set(rows) == set(cols)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
    assert (m >= 0).all()
    for name in ("within", "across"):
        _, _, mm = _read(files[f"{name}_full_csv"])
        np.testing.assert_allclose(mm.sum(1), 1.0, atol=1e-6)
    _, _, diff = _read(files["within_minus_across_full_csv"])
    np.testing.assert_allclose(diff.sum(1), 0.0, atol=1e-6)
    (pair,) = [
        k[: -len("_full_csv")]
        for k in files
        if k.startswith("pair") and "minus" not in k and k.endswith("full_csv")
    ]
    _, _, pm = _read(files[f"{pair}_full_csv"])
    np.testing.assert_allclose(pm.sum(1), 1.0, atol=1e-6)
    _, _, pd_ = _read(files[f"{pair}_minus_all_full_csv"])
    np.testing.assert_allclose(pd_[np.isfinite(pd_).all(1)].sum(1), 0.0, atol=1e-6)
    # the top-k CSV is the sub-matrix of the top_k most attended genes
    trows, tcols, top = _read(files["all_csv"])
    assert trows == tcols == result["top_labels"] and len(trows) == 6
    full = {(r, c): m[i, j] for i, r in enumerate(rows) for j, c in enumerate(cols)}
    assert all(top[i, j] == full[(r, c)] for i, r in enumerate(trows) for j, c in enumerate(tcols))
    share = m.mean(0)  # every gene row has the same weight here (one token per gene per cell)
    assert sorted(share, reverse=True)[5] <= min(share[cols.index(g)] for g in tcols) + 1e-12
    summary = json.loads(Path(files["summary"]).read_text())
    assert summary["task"] == "spatial-celltype" and summary["layer"] == 1
    # same-label attention: the mean diagonal of the full matrix (equal row weights here)
    same = summary["matrices"]["all"]["same_label_attention"]
    diag = np.mean([m[i, cols.index(r)] for i, r in enumerate(rows)])
    assert same["mass"] == pytest.approx(diag, rel=1e-9)
    assert same["uniform"] == pytest.approx(1 / 12) and same["ratio"] == pytest.approx(diag * 12)
    assert summary["matrices"]["within_minus_across"]["same_label_attention"] is None
    n_all = summary["matrices"]["all"]["num_edges"]
    assert n_all == (
        summary["matrices"]["within"]["num_edges"] + summary["matrices"]["across"]["num_edges"]
    )


def test_csv_matches_fimp_interpret_on_the_saved_model(celltype_run) -> None:
    import fimp.interpret as fi
    from fimp_bench.models import get_model
    from fimp_bench.tasks import get_preset, get_task

    result, out = celltype_run
    prep = get_task("spatial-celltype").prepare(seed=0, preset=get_preset("smoke"))
    model = get_model("fimp-base").build(prep, result["config"])
    model.load_state_dict(torch.load(out / "model_state.pt", weights_only=True))
    g = prep.graphs[0]
    test_edges = g.test_mask[g.edge_index[1]]
    maps = fi.attention_maps(model.fimp, g.x, edge_index=g.edge_index, genes=model.genes)
    m, rows, cols = fi.aggregate_by_label(maps, edges=test_edges)
    crows, ccols, cm = _read(result["files"]["all_full_csv"])
    assert crows == rows and ccols == cols
    np.testing.assert_allclose(cm, m.numpy(), rtol=1e-6, atol=1e-9)
    assert result["matrices"]["all"]["num_edges"] == int(test_edges.sum())


def test_expression_task_and_cli_with_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "expr"
    result = explain("spatial-expression", seed=1, out=out, layer=0, config={"dim": 16}, **SMOKE)
    assert result["config"]["dim"] == 16 and result["layer"] == 0
    assert "within_png" not in result["files"]  # no cell types on the expression task
    _, _, m = _read(result["files"]["all_full_csv"])
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)

    # the CLI as wired by cli.py: `fimp-bench explain ...` through cli.main
    from fimp_bench import cli

    again = tmp_path / "again"
    argv = ["explain", "--task", "spatial-expression", "--seed", "1", "--preset", "smoke"]
    argv += ["--layer", "0", "--top-k", "0", "--out", str(again), "--checkpoint", str(out)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "all_png: " in printed and "same-label attention (test edges, layer 0): " in printed
    args = cli.build_parser().parse_args(argv)
    assert args.func is run_explain and args.command == "explain"
    _, _, m2 = _read(str(again / "attention_all_full.csv"))
    np.testing.assert_allclose(m2, m, rtol=1e-6, atol=1e-9)  # same saved model, same maps
    rows, cols, _ = _read(str(again / "attention_all_top12.csv"))  # top_k=0: every gene
    assert len(rows) == len(cols) == 12
    # a checkpoint of another run is refused
    with pytest.raises(BenchConfigError, match="different run"):
        explain("spatial-expression", seed=2, out=tmp_path / "x", checkpoint=out, **SMOKE)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError):
        explain("no-such-task", out=tmp_path, **SMOKE)
    with pytest.raises(BenchConfigError, match="top_k"):
        explain("spatial-expression", out=tmp_path, preset="smoke", top_k=-1)
    with pytest.raises(BenchConfigError, match="not a FIMP model"):
        explain("spatial-expression", "mlp", out=tmp_path, **SMOKE)
    with pytest.raises(BenchConfigError, match="pairs need node groups"):
        explain("spatial-expression", out=tmp_path, pairs=[(0, 0)], **SMOKE)
    with pytest.raises(BenchConfigError, match="layer"):
        explain("spatial-expression", out=tmp_path, layer=2, **SMOKE)
    with pytest.raises(BenchConfigError, match="no attribute"):
        explain("spatial-expression", out=tmp_path, group_by="cell_type", **SMOKE)
    with pytest.raises(BenchConfigError, match="explain"):
        explain("spatial-expression", out=tmp_path, checkpoint=tmp_path / "none", **SMOKE)


def test_write_label_csv_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    write_label_csv(path, torch.tensor([[0.25, 0.75], [float("nan"), 1.0]]), ["a", "b"], ["x", "y"])
    rows, cols, m = _read(str(path))
    assert rows == ["a", "b"] and cols == ["x", "y"]
    assert m[0].tolist() == [0.25, 0.75] and np.isnan(m[1, 0])
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
