"""Hostile and broken records: names that would become paths outside the root, non-finite
metrics, non-UTF-8 files. Each is one typed error naming the file; nothing is written outside
the leaderboard root (nor by ``fimp-bench site``) (a snapshot of the whole tmp folder before and after proves it)."""

from __future__ import annotations

import copy
import json
import os
import stat
from pathlib import Path

import pytest

from fimp_bench.cli import main
from fimp_bench.errors import RecordError
from fimp_bench.leaderboard import generate
from fimp_bench.records import (
    check_name,
    dumps,
    read_record,
    record_path,
    safe_child,
    schema_problems,
    validate_record,
    write_record,
)
from fimp_bench.validate import validate_submission


def _snapshot(top: Path) -> dict[str, bytes | None]:
    """Every path under ``top`` (files with their bytes, folders as None)."""
    return {
        str(p.relative_to(top)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(top.rglob("*"))
    }


@pytest.fixture
def good(smoke_records):
    return copy.deepcopy(smoke_records[1][0])


def _plant(root: Path, rec: dict, folder: str = "planted", text: str | None = None) -> Path:
    """Put ``rec`` where the leaderboard's glob finds it, whatever names it carries."""
    p = root / folder / "records" / "m" / f"seed-{rec['seed']}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text if text is not None else json.dumps(rec), encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task", "../escaped-lb"),
        ("task", "../../escaped-lb"),
        ("task", "/tmp/escaped-lb"),
        ("task", "a/../../escaped-lb"),
        ("task", ".."),
        ("task", "escaped-lb\n"),
        ("model.name", "../escaped-model"),
        ("model.registry_key", "..\\escaped"),
        ("dataset.name", "data/../../x"),
    ],
)
def test_traversal_names_are_refused_and_nothing_leaves_the_root(
    good, tmp_path, capsys, field, value
):
    top = tmp_path / "top"
    root = top / "leaderboards"
    root.mkdir(parents=True)
    bad = copy.deepcopy(good)
    if "." in field:
        a, b = field.split(".")
        bad[a][b] = value
    else:
        bad[field] = value
    rec_file = _plant(root, bad)
    before = _snapshot(top)
    for argv in (
        ["leaderboard", "--root", str(root)],
        ["leaderboard", "--root", str(root), "--check"],
        ["site", "--root", str(root), "--out", str(top / "site")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err  # one line, no traceback
        assert str(rec_file) in err[0] and "not a safe name" in err[0]
    with pytest.raises(RecordError, match="not a safe name"):
        generate(root)
    assert _snapshot(top) == before
    assert not (top / "escaped-lb").exists() and not Path("/tmp/escaped-lb").exists()

    report = validate_submission(root, smoke=False)
    assert not report.ok and "schema" in report.kinds
    msg = " ".join(p.message for p in report.problems)
    suggestion = msg.split("e.g. ", 1)[1].split(" ", 1)[0]
    assert ".." not in suggestion and "/" not in suggestion and "\\" not in suggestion
    assert _snapshot(top) == before


def test_record_path_and_write_record_check_names_where_the_path_is_built(good, tmp_path):
    for task, model in (("../x", "mlp"), ("t", "../../x"), ("t", "a/b"), ("", "mlp")):
        with pytest.raises(RecordError, match="not a safe name"):
            record_path(tmp_path, task, model, 0)
    with pytest.raises(RecordError, match="non-negative integer"):
        record_path(tmp_path, "t", "m", -1)
    bad = copy.deepcopy(good)
    bad["task"] = "../escaped"
    with pytest.raises(RecordError, match="not a safe name"):
        write_record(bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    assert check_name("spatial-celltype") == "spatial-celltype"
    assert check_name("my_model.v2") == "my_model.v2"


def test_a_symlinked_task_folder_that_leads_outside_is_refused(good, tmp_path):
    top = tmp_path / "top"
    outside = top / "outside"
    root = top / "leaderboards"
    (outside / "records" / "mlp").mkdir(parents=True)
    root.mkdir()
    (outside / "records" / "mlp" / "seed-0.json").write_text(dumps(good))
    os.symlink(outside, root / good["task"])
    before = _snapshot(outside)
    with pytest.raises(RecordError, match="outside"):
        generate(root)
    assert _snapshot(outside) == before
    with pytest.raises(RecordError, match="outside"):
        safe_child(root, good["task"], "README.md")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    "where", ["metrics.test.accuracy", "metrics.val.accuracy", "config.lr", "wall_time_s"]
)
def test_non_finite_numbers_are_a_record_error_naming_file_and_field(
    good, tmp_path, capsys, literal, where
):
    root = tmp_path / "lb"
    marker = 123.456789
    bad = copy.deepcopy(good)
    node = bad
    *parents, leaf = where.split(".")
    for k in parents:
        node = node[k]
    node[leaf] = marker
    text = json.dumps(bad).replace(repr(marker), literal)
    path = _plant(root, bad, folder=bad["task"], text=text)
    with pytest.raises(RecordError, match=rf"{path}.*record\.{where}: non-finite"):
        read_record(path)
    assert main(["leaderboard", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and f"record.{where}" in err[0]
    assert not (root / "README.md").exists()
    report = validate_submission(root, smoke=False)
    assert "schema" in report.kinds
    assert any(f"record.{where}: non-finite" in p.message for p in report.problems)


def test_non_finite_in_memory_record_is_refused(good):
    bad = copy.deepcopy(good)
    bad["metrics"]["test"]["accuracy"] = float("nan")
    assert any("non-finite" in p for p in schema_problems(bad))
    with pytest.raises(RecordError, match=r"record\.metrics\.test\.accuracy: non-finite"):
        validate_record(bad)


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe{\x00", b"\x89PNG\r\n\x1a\n\x00\x00", '{"seed": "caf\xe9"}'.encode("latin-1")],
)
def test_non_utf8_record_is_one_error_line_naming_the_file(good, tmp_path, capsys, content):
    root = tmp_path / "lb"
    path = root / good["task"] / "records" / "mlp" / "seed-0.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    for argv in (
        ["leaderboard", "--root", str(root), "--check"],
        ["leaderboard", "--root", str(root)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and "not UTF-8" in err[0]
    report = validate_submission(root, smoke=False)
    assert report.kinds == {"json"}


def test_a_directory_named_like_a_record_is_a_record_error(good, tmp_path, capsys):
    root = tmp_path / "lb"
    (root / good["task"] / "records" / "mlp" / "seed-0.json").mkdir(parents=True)
    assert main(["leaderboard", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a directory" in err[0]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_records_keep_the_users_umask(good, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_record(good, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
