"""CLI errors: one line on stderr, exit status 2, no traceback, and checked before any work
(an unknown dataset, an --out that is a file or lies under one); --debug shows the traceback."""

from __future__ import annotations

import pytest

from fimp_bench.cli import main


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_unknown_dataset_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--task", "spatial-celltype", "--dataset", "nope", "--out", str(out)]) == 2
    line = _one_line(capsys)
    assert "unknown dataset 'nope'" in line and "spatial-cscc" in line
    assert not out.exists()


@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_out_that_cannot_be_a_folder_fails_before_training(tmp_path, capsys, kind, monkeypatch):
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    out = f if kind == "file" else f / "sub"
    import fimp_bench.train as train

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("training started before --out was checked")

    monkeypatch.setattr(train, "run_benchmark", boom)
    argv = ["run", "--task", "spatial-celltype", "--model", "gcn", "--preset", "smoke"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "--out" in _one_line(capsys)
    assert f.read_text() == "keep me"


def test_out_is_not_created_by_a_run_that_fails(tmp_path, capsys):
    out = tmp_path / "new" / "out"
    argv = ["run", "--task", "spatial-celltype", "--dataset", "nope", "--out", str(out)]
    assert main(argv) == 2
    assert not (tmp_path / "new").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="unknown dataset"):
        main(
            [
                "--debug",
                "run",
                "--task",
                "spatial-celltype",
                "--dataset",
                "nope",
                "--out",
                str(tmp_path),
            ]
        )


def test_typed_errors_of_fimp_data_and_fimp_are_one_line(tmp_path, capsys):
    bad = tmp_path / "lb"
    (bad / "spatial-celltype" / "records" / "gcn").mkdir(parents=True)
    (bad / "spatial-celltype" / "records" / "gcn" / "seed-0.json").write_text("{")
    assert main(["leaderboard", "--root", str(bad)]) == 2
    assert "not valid JSON" in _one_line(capsys)


@pytest.mark.parametrize("command", ["validate", "leaderboard", "leaderboard --check"])
@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_root_that_is_not_a_folder_is_a_usage_error(tmp_path, capsys, command, kind):
    target = tmp_path / "nope"
    if kind == "file":
        target.write_text("keep me")
    cmd, *flags = command.split()
    argv = [cmd, str(target), *flags] if cmd == "validate" else [cmd, "--root", str(target), *flags]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert (
        str(target) in line and ("does not exist" if kind == "missing" else "not a folder") in line
    )
    assert (target.read_text() == "keep me") if kind == "file" else not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["nope"] if kind == "file" else [])


def test_leaderboard_check_of_a_folder_without_records_is_an_error(tmp_path, capsys):
    assert main(["leaderboard", "--root", str(tmp_path), "--check"]) == 2
    assert "no records found" in _one_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_explain_checks_out_before_training(tmp_path, capsys, kind, monkeypatch):
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    out = f if kind == "file" else f / "sub"
    import fimp_bench.explain as explain_mod

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("explain trained before --out was checked")

    monkeypatch.setattr(explain_mod, "explain", boom)
    argv = ["explain", "--task", "spatial-celltype", "--model", "fimp-base", "--out", str(out)]
    assert main(argv) == 2
    assert "--out" in _one_line(capsys)
    assert f.read_text() == "keep me"
