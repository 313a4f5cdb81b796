"""Bad input to every fimp-bench subcommand, parametrised by entry point x fault: unknown names,
output paths that are files or lie under one, roots that are missing or files, bad seed / epoch /
budget values. Each is one line on stderr, exit status 2, no traceback, raised before any
training; a snapshot of the whole tmp folder before and after shows nothing was created, changed
or removed. (Record-level faults -- traversal names, NaN metrics, non-UTF-8 files -- are in
test_bench_hostile_records.py; data files in fimp-data's test_bad_input_data.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

import fimp_bench.explain as explain_mod
import fimp_bench.train as train
from fimp_bench.cli import main


def _snapshot(top: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(top)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(top.rglob("*"))
    }


RUN = ["run", "--task", "spatial-celltype", "--model", "gcn", "--preset", "smoke"]
EXPLAIN = ["explain", "--task", "spatial-celltype", "--model", "fimp-base"]

# (entry point, fault) -> (argv with {f} = an existing file, {m} = a missing path, {d} = a folder,
#                          words the one error line must contain)
CASES = {
    ("run", "unknown-task"): (["run", "--task", "nope", "--out", "{m}"], ["nope"]),
    ("run", "unknown-model"): ([*RUN[:3], "--model", "nope", "--out", "{m}"], ["nope"]),
    ("run", "unknown-dataset"): ([*RUN, "--dataset", "nope", "--out", "{m}"], ["nope"]),
    ("run", "out-is-a-file"): ([*RUN, "--out", "{f}"], ["--out", "not a folder"]),
    ("run", "out-under-a-file"): ([*RUN, "--out", "{f}/sub"], ["--out", "is a file"]),
    ("run", "bad-seeds"): ([*RUN, "--seeds", "3-1", "--out", "{m}"], ["seeds"]),
    ("run", "zero-epochs"): ([*RUN, "--max-epochs", "0", "--out", "{m}"], ["max_epochs"]),
    ("run", "zero-budget"): ([*RUN, "--tuning-budget", "0", "--out", "{m}"], ["tuning_budget"]),
    ("explain", "unknown-task"): (
        ["explain", "--task", "nope", "--model", "gcn", "--out", "{m}"],
        ["nope"],
    ),
    ("explain", "out-is-a-file"): ([*EXPLAIN, "--out", "{f}"], ["--out", "not a folder"]),
    ("explain", "out-under-a-file"): ([*EXPLAIN, "--out", "{f}/sub"], ["--out", "is a file"]),
    ("explain", "bad-pair"): ([*EXPLAIN, "--pair", "3-5", "--out", "{m}"], ["--pair"]),
    ("leaderboard", "root-missing"): (["leaderboard", "--root", "{m}"], ["does not exist"]),
    ("leaderboard", "root-is-a-file"): (["leaderboard", "--root", "{f}"], ["not a folder"]),
    ("leaderboard --check", "root-missing"): (
        ["leaderboard", "--root", "{m}", "--check"],
        ["does not exist"],
    ),
    ("leaderboard --check", "no-records"): (
        ["leaderboard", "--root", "{d}", "--check"],
        ["no records found"],
    ),
    ("site", "out-is-a-file"): (
        ["site", "--root", "{d}", "--out", "{f}"],
        ["--out", "not a folder"],
    ),
    ("site", "out-under-a-file"): (
        ["site", "--root", "{d}", "--out", "{f}/sub"],
        ["--out", "is a file"],
    ),
    ("site", "root-missing"): (["site", "--root", "{m}", "--out", "{m}"], ["does not exist"]),
    ("site", "root-is-a-file"): (["site", "--root", "{f}", "--out", "{m}"], ["not a folder"]),
    ("site", "no-records"): (["site", "--root", "{d}", "--out", "{m}"], ["no records found"]),
    ("site", "out-is-the-root"): (
        ["site", "--root", "{d}", "--out", "{d}"],
        ["--out", "records folder"],
    ),
    ("validate", "path-missing"): (["validate", "{m}"], ["does not exist"]),
    ("validate", "path-is-a-file"): (["validate", "{f}"], ["not a folder"]),
}


@pytest.mark.parametrize(("entry", "fault"), sorted(CASES), ids=lambda v: v.replace(" ", ""))
def test_bad_cli_input_is_one_line_exit_2_and_changes_nothing(
    tmp_path, capsys, monkeypatch, entry, fault
):
    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError(f"{entry}: work started before the input was checked")

    monkeypatch.setattr(train, "run_benchmark", boom)
    monkeypatch.setattr(explain_mod, "explain", boom)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results.txt").write_text("keep me")
    (tmp_path / "folder").mkdir()
    argv_t, words = CASES[(entry, fault)]
    subs = {"{f}": "results.txt", "{m}": "missing/out", "{d}": "folder"}
    argv = []
    for a in argv_t:
        for k, v in subs.items():
            a = a.replace(k, str(tmp_path / v))
        argv.append(a)
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("fimp-bench: error: ") and "Traceback" not in err[0]
    for w in words:
        assert w in err[0], (w, err[0])
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["run", "explain"])
def test_argparse_choice_errors_exit_2_with_usage_and_one_error_line(tmp_path, capsys, command):
    base = RUN[:5] if command == "run" else EXPLAIN
    with pytest.raises(SystemExit) as e:
        main([*base, "--preset", "nope", "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage:") and "invalid choice: 'nope'" in err[-1]
    assert "Traceback" not in "".join(err) and list(tmp_path.iterdir()) == []
