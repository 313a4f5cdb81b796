"""Record schema: valid records pass, each kind of corruption is caught; writes are atomic."""

import copy
import json

import pytest

from fimp_bench.errors import RecordError
from fimp_bench.records import (
    read_record,
    read_records,
    record_path,
    schema_problems,
    validate_record,
    write_record,
)


def test_records_written_by_run_are_valid_and_complete(smoke_records):
    out, records = smoke_records
    assert len(records) == 10
    files = read_records(out)
    assert len(files) == 10
    r = files[0][1]
    for key in (
        "task_version",
        "split_id",
        "config",
        "best_epoch",
        "wall_time_s",
        "hardware",
        "date",
    ):
        assert key in r
    assert r["dataset"]["name"] == "synthetic-spatial" and len(r["dataset"]["sha256"]) == 64
    assert r["params"]["trainable"] > 0 and r["params"]["frozen"] == 0
    assert r["peak_memory"]["bytes"] > 0 and "ru_maxrss" in r["peak_memory"]["method"]
    assert set(r["versions"]) >= {"torch", "torch_geometric", "fimp", "fimp_data", "fimp_bench"}
    assert set(r["git"]) == {"commit", "dirty"}
    assert r["mode"] == "trained" and r["preset"] == "smoke"
    assert set(r["metrics"]["test"]) == {"accuracy", "macro_f1"}
    assert r["task_info"]["training"]["precision"] == "fp32"
    assert files[0][0] == record_path(out, r["task"], r["model"]["name"], r["seed"])


def test_records_say_which_precision_ran(tmp_path):
    """``--bf16`` autocasts on CUDA only: a CPU run with it is recorded as fp32, and the rule
    that picks the autocast is the one the record states."""
    import torch

    from conftest import spatial_data
    from fimp_bench.tasks import get_task
    from fimp_bench.train import _precision, run_benchmark

    assert _precision(torch.device("cuda"), True) == "bf16 autocast"
    assert _precision(torch.device("cuda"), False) == "fp32"
    assert _precision(torch.device("cpu"), True) == "fp32"
    (rec,) = run_benchmark(
        [get_task("spatial-celltype")],
        ["mlp"],
        [0],
        preset="smoke",
        device="cpu",
        bf16=True,
        out=str(tmp_path),
        progress=False,
        data=spatial_data(),
    )
    assert rec["task_info"]["training"]["precision"] == "fp32"
    assert read_records(tmp_path)[0][1]["task_info"]["training"]["precision"] == "fp32"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("seed"), "missing required key 'seed'"),
        (lambda r: r.__setitem__("seed", -1), "minimum"),
        (lambda r: r.__setitem__("seed", "0"), "expected integer"),
        (lambda r: r["dataset"].__setitem__("sha256", "abc"), "does not match"),
        (lambda r: r.__setitem__("mode", "guessed"), "is not one of"),
        (lambda r: r["metrics"]["test"].__setitem__("accuracy", "high"), "expected number"),
        (lambda r: r.__setitem__("surprise", 1), "unexpected key"),
        (lambda r: r["params"].__setitem__("trainable", True), "expected integer"),
    ],
)
def test_schema_rejects(smoke_records, mutate, message):
    good = smoke_records[1][0]
    assert schema_problems(good) == []
    bad = copy.deepcopy(good)
    mutate(bad)
    with pytest.raises(RecordError, match=message):
        validate_record(bad)


def test_write_is_atomic_and_refuses_invalid(smoke_records, tmp_path):
    good = copy.deepcopy(smoke_records[1][0])
    path = write_record(good, tmp_path)
    before = path.read_text()
    bad = copy.deepcopy(good)
    bad["mode"] = "nope"
    with pytest.raises(RecordError):
        write_record(bad, tmp_path)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    path.write_text("{not json")
    with pytest.raises(RecordError, match="not valid JSON"):
        read_record(path)
    assert json.loads(before)["seed"] == good["seed"]
