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
