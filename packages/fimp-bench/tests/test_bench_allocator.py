"""The fimp-bench command's malloc setting: applied once, opt-out, the user's own settings kept,
the effect real (a large block comes from the heap), and recorded. Each case runs in a fresh
interpreter: the setting is process-wide."""

import json
import os
import subprocess
import sys

import pytest

from fimp_bench._allocator import HEAP

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# Where a fresh 64 MiB block lives: inside [heap] (brk) or in an anonymous mapping of its own.
_PROBE = r"""
import ctypes, json, sys
from fimp_bench._allocator import keep_heap, allocator_setting
setting = keep_heap()
again = keep_heap()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
addr = libc.malloc(64 * 2**20)
heap = None
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
        heap = lo <= addr < hi
print(json.dumps({"setting": setting, "again": again, "recorded": allocator_setting(),
                  "in_heap": heap}))
"""


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "FIMP_BENCH_MALLOC"))
    }


def _probe(**env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**_clean_env(), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_keep_heap_serves_large_blocks_from_the_heap():
    got = _probe()
    assert got["setting"] == got["again"] == got["recorded"] == HEAP
    assert got["in_heap"] is True


def test_opt_out_keeps_glibc_defaults():
    got = _probe(FIMP_BENCH_MALLOC="default")
    assert got["setting"] == "system default"
    assert got["in_heap"] is False  # 64 MiB is above glibc's largest mmap threshold


@pytest.mark.parametrize(
    ("var", "value"),
    [("MALLOC_MMAP_MAX_", "65536"), ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000")],
)
def test_the_users_own_malloc_settings_win(var, value):
    got = _probe(**{var: value})
    assert got["setting"] == f"user environment ({var})"


def test_run_records_the_allocator(tmp_path):
    """``fimp-bench run`` (a real process) applies the setting and the record says so."""
    out = tmp_path / "res"
    args = "run --task spatial-celltype --model mlp --seeds 0 --preset smoke --device cpu"
    subprocess.run(
        [sys.executable, "-m", "fimp_bench", *args.split(), "--out", str(out), "--no-progress"],
        env=_clean_env(),
        capture_output=True,
        check=True,
        timeout=300,
    )
    (rec,) = out.glob("spatial-celltype/records/mlp/seed-0.json")
    training = json.loads(rec.read_text())["task_info"]["training"]
    assert training["allocator"] == HEAP
