"""Resume and concurrency with real processes: a restarted run skips seeds whose records exist
with the same configuration, --force re-runs them, a record from another configuration is never
overwritten silently; two runs into one --out plus a regenerating leaderboard lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fimp_bench.cli import main
from fimp_bench.records import read_record, read_records

SMOKE = ["--preset", "smoke", "--seeds", "0-1", "--no-progress"]


def _records(out: Path) -> list[Path]:
    return sorted(out.glob("*/records/*/seed-*.json"))


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in _records(out)}


def _stamps(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) per record: an atomic rewrite (temp file + rename) changes both."""
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in _records(out)}


def test_restart_skips_same_config_and_force_reruns(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--task", "spatial-celltype", "--model", "mlp", *SMOKE, "--out", str(out)]
    assert main(argv) == 0
    first = _snapshot(out)
    assert len(first) == 2
    rec = read_record(next(iter(first)))
    assert len(rec["run_hash"]) == 16 and rec["schema_version"] == "1.1"
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("record exists with the same configuration, skipped") == 2
    assert _snapshot(out) == first  # nothing re-run, nothing rewritten
    stamps = _stamps(out)
    assert main([*argv, "--force"]) == 0
    assert "skipped" not in capsys.readouterr().err
    again = _snapshot(out)
    assert set(again) == set(first)
    # re-run and rewritten (atomically: a new file each), even when its bytes come out equal
    # (a smoke run's rounded wall time and its date can repeat)
    new = _stamps(out)
    assert all(new[p] != stamps[p] for p in stamps)
    for p in again:  # same seed, same numbers
        a, b = json.loads(first[p]), json.loads(again[p])
        assert a["metrics"] == b["metrics"] and a["config"] == b["config"]


def test_a_record_from_another_config_is_never_overwritten_silently(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--task", "spatial-celltype", "--model", "mlp", *SMOKE, "--out", str(out)]
    assert main(argv) == 0
    path = sorted(out.glob("*/records/mlp/seed-0.json"))[0]
    rec = json.loads(path.read_text())
    rec["run_hash"] = "0" * 16
    path.write_text(json.dumps(rec))
    before = path.read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different configuration" in err[0] and "--force" in err[0]
    assert "--rerun-changed" in err[0]
    assert path.read_bytes() == before
    assert main([*argv, "--force"]) == 0
    assert json.loads(path.read_text())["run_hash"] != "0" * 16


def test_rerun_changed_replaces_only_the_records_of_a_changed_configuration(tmp_path, capsys):
    """--rerun-changed: a record made by another configuration (here: an older task version) is
    re-run and replaced, the unchanged seed is skipped and left as it was."""
    out = tmp_path / "out"
    argv = ["run", "--task", "spatial-celltype", "--model", "mlp", *SMOKE, "--out", str(out)]
    assert main(argv) == 0
    stale, same = (out / "spatial-celltype" / "records" / "mlp" / f"seed-{s}.json" for s in (0, 1))
    rec = json.loads(stale.read_text())
    rec["run_hash"], rec["task_version"] = "0" * 16, "0.9"
    stale.write_text(json.dumps(rec))
    kept = _stamps(out)[str(same)]
    capsys.readouterr()
    assert main([*argv, "--rerun-changed"]) == 0
    err = capsys.readouterr().err
    assert "task version '0.9'" in err and "replacing the record" in err
    assert err.count("record exists with the same configuration, skipped") == 1
    fresh = json.loads(stale.read_text())
    assert fresh["run_hash"] != "0" * 16 and fresh["task_version"] != "0.9"
    assert _stamps(out)[str(same)] == kept


def test_two_runs_and_a_leaderboard_into_one_folder_lose_nothing(tmp_path):
    out = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "fimp_bench"]
    runs = [
        subprocess.Popen(
            [*cmd, "run", "--task", task, "--model", model, *SMOKE, "--out", str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for task, model in (("spatial-celltype", "mlp,gcn"), ("spatial-expression", "mlp,gcn"))
    ]
    boards = 0
    deadline = time.monotonic() + 240
    while any(r.poll() is None for r in runs) and time.monotonic() < deadline:
        if out.exists():
            lb = subprocess.run(
                [*cmd, "leaderboard", "--root", str(out)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert lb.returncode == 0, lb.stderr
            boards += 1
        time.sleep(0.2)
    for r in runs:
        _, err = r.communicate(timeout=240)
        assert r.returncode == 0, err
    records = read_records(out)  # every file parses and validates: nothing half-written
    keys = {(r["task"], r["model"]["name"], r["seed"]) for _, r in records}
    assert keys == {
        (t, m, s)
        for t in ("spatial-celltype", "spatial-expression")
        for m in ("mlp", "gcn")
        for s in (0, 1)
    }
    assert boards >= 1
    assert not [p for p in out.rglob("*.tmp")]  # no temp file left behind
    assert main(["leaderboard", "--root", str(out), "--check"]) == 0
