"""``fimp-bench validate``: a correct submission passes; each malformed kind is rejected."""

import json
import shutil

import pytest

from fimp_bench.cli import main
from fimp_bench.validate import validate_submission


@pytest.fixture
def submission(smoke_records, tmp_path):
    src, _ = smoke_records
    root = tmp_path / "submission"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("results.*", "README.md"))
    return root


def _edit(path, fn):
    r = json.loads(path.read_text())
    fn(r)
    path.write_text(json.dumps(r))


def _mlp(root, seed=0):
    return root / "spatial-celltype" / "records" / "mlp" / f"seed-{seed}.json"


def test_accepts_a_correct_submission(submission, capsys):
    rep = validate_submission(submission, smoke=True)
    assert rep.ok, rep.render()
    assert any("smoke re-run" in p for p in rep.passed)
    assert main(["validate", str(submission), "--no-smoke"]) == 0
    assert "submission is valid" in capsys.readouterr().out


def test_rejects_empty(tmp_path):
    assert validate_submission(tmp_path, smoke=False).kinds == {"empty"}


def test_rejects_bad_json(submission):
    _mlp(submission).write_text("{oops")
    assert "json" in validate_submission(submission, smoke=False).kinds


def test_rejects_schema_violation(submission):
    _edit(_mlp(submission), lambda r: r.pop("metrics"))
    rep = validate_submission(submission, smoke=False)
    assert "schema" in rep.kinds
    assert "metrics" in rep.render()


def test_rejects_too_few_seeds(submission):
    _mlp(submission, 4).unlink()
    rep = validate_submission(submission, smoke=False)
    assert rep.kinds == {"seed-count"}
    assert "4 distinct seed(s); at least 5" in rep.render()


def test_rejects_repeated_seed_and_wrong_location(submission):
    _edit(_mlp(submission, 3), lambda r: r.__setitem__("seed", 2))
    rep = validate_submission(submission, smoke=False)
    assert {"distinct-seeds", "location", "seed-count"} <= rep.kinds


def test_rejects_duplicate_against_existing_leaderboards(submission, smoke_records):
    existing, _ = smoke_records
    rep = validate_submission(submission, smoke=False, existing=existing)
    assert rep.kinds == {"duplicate"}


def test_rejects_unregistered_model(submission):
    d = submission / "spatial-celltype" / "records"
    shutil.move(d / "gcn", d / "my-gnn")
    for p in (d / "my-gnn").glob("*.json"):
        _edit(
            p,
            lambda r: (
                r["model"].__setitem__("name", "my-gnn"),
                r["model"].__setitem__("registry_key", "my-gnn"),
            ),
        )
    rep = validate_submission(submission, smoke=True)
    assert rep.kinds == {"unregistered-model"}
    assert "entry-point group" in rep.render()


def test_rejects_unknown_task(submission):
    for p in (submission / "spatial-celltype" / "records" / "gcn").glob("*.json"):
        _edit(p, lambda r: r.__setitem__("task", "spatial-nonsense"))
    assert "unknown-task" in validate_submission(submission, smoke=False).kinds


def test_rejects_failing_smoke_rerun(submission, capsys):
    for p in (submission / "spatial-celltype" / "records" / "mlp").glob("*.json"):
        _edit(p, lambda r: r["config"].__setitem__("hidden", -3))
    rep = validate_submission(submission, smoke=True)
    assert rep.kinds == {"smoke"}
    assert main(["validate", str(submission)]) == 1
    assert "PROBLEM [smoke]" in capsys.readouterr().out


def test_rejects_mixed_task_versions(submission, smoke_records):
    for p in (submission / "spatial-celltype" / "records" / "gcn").glob("*.json"):
        _edit(p, lambda r: r.__setitem__("task_version", "0.9"))
    rep = validate_submission(submission, smoke=False)
    assert rep.kinds == {"task-version"}
    assert "0.9: gcn" in rep.render() and "re-run the older records" in rep.render()
    # one version in the submission, another in the leaderboards it is submitted to
    for p in (submission / "spatial-celltype" / "records").glob("*/*.json"):
        _edit(p, lambda r: r.__setitem__("task_version", "0.9"))
    existing, _ = smoke_records
    rep = validate_submission(submission, smoke=False, existing=existing)
    assert "task-version" in rep.kinds
    assert "the leaderboards hold task version(s)" in rep.render()
