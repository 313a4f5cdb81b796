"""The CI definitions and the scripts they call, run on a tiny config so they cannot rot."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
CI = REPO / "ci"


def _bench_env(tmp_path):
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    exe = shim / "fimp-bench"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fimp_bench "$@"\n')
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}


def test_workflows_parse_and_call_the_scripts():
    cpu = yaml.safe_load((CI / "cpu-tests.yml").read_text())
    gpu = yaml.safe_load((CI / "gpu-leaderboard.yml").read_text())
    cpu_runs = [s.get("run", "") for s in cpu["jobs"]["tox"]["steps"]]
    assert "bash .ci/run" in cpu_runs
    assert any("ci/scripts/check_leaderboards.sh" in r for r in cpu_runs)
    job = gpu["jobs"]["full-presets"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    gpu_runs = " ".join(s.get("run", "") for s in job["steps"])
    for script in ("changed_models.py", "run_models.sh", "check_leaderboards.sh"):
        assert f"ci/scripts/{script}" in gpu_runs
        assert (CI / "scripts" / script).is_file()
    assert "--preset full --device cuda" in gpu_runs


def test_changed_models_mapping():
    res = subprocess.run(
        [
            sys.executable,
            str(CI / "scripts" / "changed_models.py"),
            "--files",
            "packages/fimp-bench/src/fimp_bench/configs/gat.yaml",
            "packages/fimp-core/src/fimp/nn/fimp_conv.py",
            "leaderboards/image-country/records/my-gnn/seed-0.json",
            "README.md",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.split() == ["fimp-base", "gat", "my-gnn"]


def test_run_models_and_check_scripts_on_a_tiny_config(tmp_path):
    env = _bench_env(tmp_path)
    out = tmp_path / "boards"
    subprocess.run(
        [
            "bash",
            str(CI / "scripts" / "run_models.sh"),
            "--models",
            "mlp majority",
            "--tasks",
            "spatial-celltype",
            "--preset",
            "smoke",
            "--device",
            "cpu",
            "--seeds",
            "0-4",
            "--out",
            str(out),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=900,
    )
    assert len(list((out / "spatial-celltype" / "records" / "mlp").glob("seed-*.json"))) == 5
    assert (out / "spatial-celltype" / "results.svg").is_file() and (out / "README.md").is_file()
    ok = subprocess.run(
        ["bash", str(CI / "scripts" / "check_leaderboards.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (out / "spatial-celltype" / "results.csv").write_text("edited by hand\n")
    bad = subprocess.run(
        ["bash", str(CI / "scripts" / "check_leaderboards.sh"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode != 0 and "results.csv: differs" in bad.stderr
    shutil.rmtree(out)


def test_validation_probe_reports_validation_only(tmp_path):
    script = CI / "scripts" / "validation_probe.py"
    args = ["spatial-celltype", "mlp", "fimp-base-pooled:self_attention=false", "--preset", "smoke"]
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env=_bench_env(tmp_path),
        check=True,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert [ln.split()[0] for ln in lines] == ["mlp", "fimp-base-pooled:self_attention=false"]
    for line in lines:
        value = float(line.split("val accuracy ")[1].split()[0])
        assert 0.0 <= value <= 1.0
        assert "test" not in line
    bad = subprocess.run(
        [sys.executable, str(script), "spatial-celltype", "mlp:dropout", "--preset", "smoke"],
        capture_output=True,
        text=True,
        env=_bench_env(tmp_path),
    )
    assert bad.returncode != 0 and "not key=value" in bad.stderr
