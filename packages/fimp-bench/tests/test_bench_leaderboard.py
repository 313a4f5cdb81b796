"""Leaderboards: generated from records (mean ± std with ddof=1), deterministic, --check."""

import csv
import shutil

import numpy as np
import pytest

from fimp_bench.cli import main
from fimp_bench.errors import LeaderboardCheckError
from fimp_bench.leaderboard import check, generate


@pytest.fixture
def board(smoke_records, tmp_path):
    src, records = smoke_records
    root = tmp_path / "leaderboards"
    shutil.copytree(src, root)
    for p in root.glob("*/results.*"):
        p.unlink()
    generate(root)
    return root, records


def test_generated_files_and_ddof1(board):
    root, records = board
    d = root / "spatial-celltype"
    for name in ("README.md", "results.csv", "results.png", "results.svg"):
        assert (d / name).is_file()
    assert (root / "README.md").is_file()
    rows = list(csv.DictReader((d / "results.csv").open()))
    assert {r["model"] for r in rows} == {"mlp", "gcn"}
    for row in rows:
        accs = [
            r["metrics"]["test"]["accuracy"] for r in records if r["model"]["name"] == row["model"]
        ]
        assert int(row["n_seeds"]) == 5
        assert float(row["accuracy_mean"]) == pytest.approx(np.mean(accs), rel=1e-5)
        assert float(row["accuracy_std"]) == pytest.approx(np.std(accs, ddof=1), rel=1e-5)
    readme = (d / "README.md").read_text()
    assert "ddof=1" in readme and "| 5 |" in readme
    svg = (d / "results.svg").read_text()
    assert "<dc:date>" not in svg  # no timestamp: deterministic


def test_regeneration_is_byte_identical_and_check_passes(board, tmp_path):
    root, _ = board
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    generate(root)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    check(root)
    assert main(["leaderboard", "--root", str(root), "--check"]) == 0


def test_check_fails_on_any_difference(board, capsys):
    root, _ = board
    readme = root / "spatial-celltype" / "README.md"
    readme.write_text(readme.read_text().replace("mlp", "mlp-edited", 1))
    with pytest.raises(LeaderboardCheckError, match=r"README\.md: differs"):
        check(root)
    assert main(["leaderboard", "--root", str(root), "--check"]) != 0
    assert "differs" in capsys.readouterr().err
    generate(root)
    (root / "spatial-celltype" / "results.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(LeaderboardCheckError, match=r"results\.png: differs"):
        check(root)
    generate(root)
    (root / "orphan-task").mkdir()
    (root / "orphan-task" / "README.md").write_text("hand-written")
    with pytest.raises(LeaderboardCheckError, match="no records behind it"):
        check(root)


def test_external_weights_are_marked(board):
    import json

    root, _ = board
    rec_path = next((root / "spatial-celltype" / "records" / "mlp").glob("seed-*.json"))
    for p in (root / "spatial-celltype" / "records" / "mlp").glob("seed-*.json"):
        r = json.loads(p.read_text())
        r["model"]["external_weights"] = [{"name": "toy-weights", "sha256": "0" * 64}]
        p.write_text(json.dumps(r))
    generate(root)
    readme = (root / "spatial-celltype" / "README.md").read_text()
    assert "`mlp †`" in readme and "toy-weights" in readme
    assert rec_path.exists()


def test_plots_from_another_matplotlib_version_only_warn(board):
    root, _ = board
    svg = root / "spatial-celltype" / "results.svg"
    text = svg.read_text()
    import re

    svg.write_text(re.sub(r"Matplotlib v[0-9][^,<\s]*", "Matplotlib v0.0.1", text))
    warnings = check(root)
    assert any("matplotlib 0.0.1" in w for w in warnings)


def test_protocol_column():
    from fimp_bench.leaderboard import _protocol

    def rec(mode="trained", **training):
        return {"mode": mode, "task_info": {"training": training} if training else {}}

    assert _protocol(rec(min_epochs=30, max_epochs=60, patience=12)) == "30-60 ep, patience 12"
    assert _protocol(rec(min_epochs=60, max_epochs=60, patience=12)) == "60 ep, no early stop"
    assert _protocol(rec()) == "not recorded"
    assert _protocol(rec(mode="zero-shot")) == "no training"


def test_index_says_each_tasks_training_protocol(board):
    """The index names the protocol the records were trained under (smoke: 2 epochs, patience
    2), so a task left under an older preset is visible at a glance."""
    root, _ = board
    (row,) = [
        ln for ln in (root / "README.md").read_text().splitlines() if "spatial-celltype" in ln
    ]
    assert row.endswith("| smoke: 0-2 ep, patience 2 |")
    assert "| training |" in (root / "README.md").read_text()
    assert "[spatial-celltype](spatial-celltype/README.md) | 1.0 |" in row


def test_index_marks_records_of_an_older_task_version(board):
    """Records made under an older version of a task's protocol keep their numbers, and the
    index says that the bench's task has moved on."""
    import json

    root, _ = board
    for p in (root / "spatial-celltype" / "records").glob("*/seed-*.json"):
        rec = json.loads(p.read_text())
        rec["task_version"] = "0.9"
        p.write_text(json.dumps(rec))
    generate(root)
    (row,) = [
        ln for ln in (root / "README.md").read_text().splitlines() if "spatial-celltype" in ln
    ]
    assert "| 0.9 (bench: 1.0) |" in row


def test_rows_from_two_datasets_get_a_dataset_column(board):
    """A folder whose records come from two datasets (one model run with ``--dataset``) says which
    dataset each row is, in the table, the CSV and the plot labels; one dataset: no column."""
    import json

    root, _ = board
    d = root / "spatial-celltype"
    assert "| rank | model | accuracy |" in (d / "README.md").read_text()
    (default,) = {r["dataset"] for r in csv.DictReader((d / "results.csv").open())}
    for p in sorted((d / "records" / "mlp").glob("seed-*.json")):
        rec = json.loads(p.read_text())
        rec["dataset"]["name"] = "dataset-b"
        p.write_text(json.dumps(rec))
    generate(root)
    readme = (d / "README.md").read_text()
    assert "| rank | model | dataset | accuracy |" in readme
    assert "| `mlp` | dataset-b |" in readme and f"| `gcn` | {default} |" in readme
    table = {r["model"]: r["dataset"] for r in csv.DictReader((d / "results.csv").open())}
    assert table == {"mlp": "dataset-b", "gcn": default}
    assert "mlp (smoke, dataset-b)" in (d / "results.svg").read_text()


def test_readme_names_default_models_without_records(board):
    """A board that lacks some of its task's default models says which, instead of looking
    complete; with every default model present the line is absent."""
    import json

    from fimp_bench.tasks import TASKS

    root, _ = board
    readme = (root / "spatial-celltype" / "README.md").read_text()
    absent = [m for m in TASKS["spatial-celltype"].default_models if m not in ("mlp", "gcn")]
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("**Not on this board:**")]
    assert all(f"`{m}`" in line for m in absent) and "`mlp`" not in line
    assert f"--model {','.join(absent)}`" in line
    # copy one record under every default model name: the line disappears
    src = next((root / "spatial-celltype" / "records" / "mlp").glob("seed-*.json"))
    for m in absent:
        rec = json.loads(src.read_text())
        rec["model"]["name"] = rec["model"]["registry_key"] = m
        (root / "spatial-celltype" / "records" / m).mkdir(parents=True, exist_ok=True)
        (root / "spatial-celltype" / "records" / m / src.name).write_text(json.dumps(rec))
    generate(root)
    assert "Not on this board" not in (root / "spatial-celltype" / "README.md").read_text()
