"""The ``fimp-bench`` command line: help texts, lists, errors that name the valid choices, run."""

import pytest

from fimp_bench.cli import main, parse_seeds
from fimp_bench.errors import BenchConfigError


@pytest.mark.parametrize("cmd", [[], ["run"], ["list"], ["leaderboard"], ["validate"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: fimp-bench" in capsys.readouterr().out


def test_lists(capsys):
    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "spatial-expression" in out and "image-zeroshot" in out
    assert main(["list", "models"]) == 0
    assert "graph-transformer" in capsys.readouterr().out
    assert main(["list", "datasets"]) == 0
    assert "spatial-cscc" in capsys.readouterr().out


def test_unknown_names_list_valid_ones(capsys):
    assert main(["run", "--task", "spatal"]) == 2
    assert "valid tasks: spatial-expression" in capsys.readouterr().err
    assert main(["run", "--task", "spatial", "--model", "gcnn"]) == 2
    assert "valid models: mlp, gcn" in capsys.readouterr().err


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0-1,5") == [0, 1, 5]
    for bad in ("a", "1,1", ""):
        with pytest.raises(BenchConfigError):
            parse_seeds(bad)


def test_run_prints_table_writes_records_and_plot(tmp_path, capsys):
    out = tmp_path / "res"
    code = main(
        [
            "run",
            "--task",
            "spatial-celltype",
            "--model",
            "mlp,majority",
            "--seeds",
            "0-1",
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
    captured = capsys.readouterr()
    text = captured.out
    # --no-progress: no bars, one stderr line per finished trial instead (smoke: 1 trial per seed)
    trial_lines = [ln for ln in captured.err.splitlines() if " trial 1/1: best val " in ln]
    assert len(trial_lines) == 4, captured.err  # (mlp, majority) x seeds 0-1
    assert any(ln.startswith("fimp-bench: spatial-celltype/mlp/s1 trial 1/1") for ln in trial_lines)
    assert all(" of 2 run (" in ln or " of 1 run (" in ln for ln in trial_lines)
    assert "\r" not in captured.err  # no progress bar redraws
    assert "spatial-celltype (test split, mean ± std over seeds, ddof=1)" in text
    assert "majority" in text and "mlp" in text
    assert (out / "spatial-celltype" / "results.png").is_file()
    assert len(list(out.glob("spatial-celltype/records/*/seed-*.json"))) == 4
