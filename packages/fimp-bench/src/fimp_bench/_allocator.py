"""glibc malloc settings of the ``fimp-bench`` process (the command only, never the libraries).

glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
returns it with ``munmap`` when freed, so each training step of a graph with tens of thousands of
edges maps, page-faults in and unmaps its per-edge buffers ([E, L, d] gathers and their
gradients) again. On a virtual machine those page faults are the largest single cost of a
FIMP-base epoch: ``spatial-celltype-cycif`` (11,201 cells, 78k edges with self-loops) spent 11 s
of 42 s in the kernel, and a seed took 1.31x as long as with the heap kept (identical metrics;
peak RSS +7%). ``fimp-bench`` therefore asks glibc, at start-up, to serve large blocks from the
heap (``M_MMAP_MAX = 0``) and not to trim it (``M_TRIM_THRESHOLD`` 2 GiB): memory freed by one
step is reused by the next and is given back to the system when the process ends.

``FIMP_BENCH_MALLOC=default`` keeps glibc's defaults, and so does any glibc malloc setting of the
user's own (``GLIBC_TUNABLES`` with ``glibc.malloc``, ``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_``). Records say which was in effect
(``task_info.training.allocator``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["HEAP", "allocator_setting", "keep_heap"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_USER_VARS = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
)
#: the setting recorded when :func:`keep_heap` took effect
HEAP = "glibc malloc: large blocks from the heap, no trim (fimp-bench default)"

_setting = "system default"


def allocator_setting() -> str:
    """What this process's allocator does: :data:`HEAP`, ``"system default"`` or ``"user
    environment (...)"`` (for the records)."""
    return _setting


def _user_environment() -> list[str]:
    names = [v for v in _USER_VARS if v in os.environ]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return names


def keep_heap() -> str:
    """Apply the fimp-bench allocator setting (see the module docstring) once per process and
    return :func:`allocator_setting`. A no-op off glibc, under ``FIMP_BENCH_MALLOC=default`` and
    when the user's environment sets glibc malloc options itself."""
    global _setting
    if _setting == HEAP:
        return _setting
    user = _user_environment()
    if user:
        _setting = f"user environment ({', '.join(user)})"
        return _setting
    if os.environ.get("FIMP_BENCH_MALLOC", "").lower() == "default":
        return _setting
    if not sys.platform.startswith("linux"):
        return _setting
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return _setting
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt takes an int: 2**31 - 1 bytes of free heap top before any trim is "never" here
    if mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1:
        _setting = HEAP
    return _setting
