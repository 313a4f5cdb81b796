"""Result records: one JSON file per (task, model, seed), validated against a versioned schema.

Layout: ``<out>/<task>/records/<model>/seed-<n>.json``. Writes are atomic (temp file in the same
folder + ``os.replace``). The schema (:data:`RECORD_SCHEMA`, JSON Schema draft-07 subset) is checked
by the small validator in this module (types, required keys, enums, minimums, patterns, no extra
keys at the top level).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from fimp_bench.errors import BenchConfigError, RecordError

__all__ = [
    "NAME_PATTERN",
    "RECORD_SCHEMA",
    "SCHEMA_VERSION",
    "check_name",
    "environment_info",
    "read_record",
    "read_records",
    "record_path",
    "safe_child",
    "save_figure",
    "validate_record",
    "write_record",
]

#: The schema version that new records carry.
SCHEMA_VERSION = "1.1"
#: 1.1 added the optional ``run_hash`` (resume); 1.0 records stay valid.
_SCHEMA_VERSIONS = ["1.0", "1.1"]

_METRICS = {"type": "object", "additionalProperties": {"type": "number"}}
_SHA = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

#: Every name that becomes a path component (task, model, registry key, dataset) has a letter or
#: digit first, then letters, digits, ``.``, ``_`` or ``-`` (at most 100 characters). No ``/``,
#: no ``..``, no leading dot, no whitespace or control characters.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_NAME = {"type": "string", "pattern": NAME_PATTERN}

#: The JSON Schema (draft-07 subset) of a record, version :data:`SCHEMA_VERSION`; checked by
#: :func:`validate_record`.
RECORD_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "fimp-bench result record",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema_version",
        "task",
        "task_version",
        "dataset",
        "split_id",
        "model",
        "seed",
        "preset",
        "mode",
        "fill",
        "config",
        "tuning",
        "metrics",
        "best_epoch",
        "params",
        "wall_time_s",
        "peak_memory",
        "hardware",
        "versions",
        "git",
        "date",
    ],
    "properties": {
        "schema_version": {"type": "string", "enum": _SCHEMA_VERSIONS},
        "task": _NAME,
        "task_version": {"type": "string", "minLength": 1},
        "dataset": {
            "type": "object",
            "required": ["name", "sha256"],
            "properties": {"name": _NAME, "sha256": _SHA},
        },
        "split_id": {"type": "string", "minLength": 1},
        "model": {
            "type": "object",
            "required": ["name", "registry_key", "implementation", "external_weights"],
            "properties": {
                "name": _NAME,
                "registry_key": _NAME,
                "source": {"type": "string"},
                "implementation": {"type": "string", "enum": ["official", "re-implementation"]},
                "external_weights": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "sha256"],
                        "properties": {"name": {"type": "string", "minLength": 1}, "sha256": _SHA},
                    },
                },
            },
        },
        "seed": {"type": "integer", "minimum": 0},
        "preset": {"type": "string", "enum": ["quick", "full", "smoke"]},
        "mode": {"type": "string", "enum": ["trained", "zero-shot"]},
        "fill": {"type": "string", "enum": ["mean", "noise", "interpolate", "none"]},
        "config": {"type": "object"},
        "tuning": {
            "type": "object",
            "required": ["budget", "trials", "selected"],
            "properties": {
                "budget": {"type": "integer", "minimum": 1},
                "trials": {"type": "array"},
                "selected": {"type": "integer", "minimum": 0},
                "selection_metric": {"type": "string"},
            },
        },
        "metrics": {
            "type": "object",
            "required": ["val", "test"],
            "properties": {"val": _METRICS, "test": _METRICS},
        },
        "best_epoch": {"type": ["integer", "null"]},
        "params": {
            "type": "object",
            "required": ["trainable", "frozen"],
            "properties": {
                "trainable": {"type": "integer", "minimum": 0},
                "frozen": {"type": "integer", "minimum": 0},
            },
        },
        "wall_time_s": {"type": "number", "minimum": 0},
        "peak_memory": {
            "type": "object",
            "required": ["bytes", "method"],
            "properties": {
                "bytes": {"type": "integer", "minimum": 0},
                "method": {"type": "string"},
            },
        },
        "hardware": {"type": "string", "minLength": 1},
        "device": {"type": "string"},
        "world_size": {"type": "integer", "minimum": 1},
        "versions": {
            "type": "object",
            "required": ["python", "torch", "torch_geometric", "fimp", "fimp_data", "fimp_bench"],
            "additionalProperties": {"type": "string"},
        },
        "git": {
            "type": "object",
            "required": ["commit", "dirty"],
            "properties": {"commit": {"type": "string"}, "dirty": {"type": ["boolean", "null"]}},
        },
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"},
        "task_info": {"type": "object"},
        "run_hash": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
    },
}

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, t: str) -> bool:
    if t in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[t])


def _pattern_ok(pattern: str, value: str) -> bool:
    """JSON-Schema (ECMA) semantics: a final ``$`` anchors at the very end of the string (Python's
    ``$`` would also match before a trailing newline)."""
    m = re.search(pattern, value)
    return m is not None and (not pattern.endswith("$") or m.end() == len(value))


def _suggest_name(value: str) -> str:
    """A safe spelling of a bad name, for the error message (never itself a traversal)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", value)
    s = re.sub(r"\.{2,}", "-", s).lstrip("._-")[:100]
    return s or "my-name"


def _check(value: Any, schema: dict[str, Any], where: str, problems: list[str]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{where}: non-finite number {value!r}; a record holds finite numbers only")
        return
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_type_ok(value, t) for t in types):
            problems.append(f"{where}: expected {' or '.join(types)}, got {type(value).__name__}")
            return
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        problems.append(f"{where}: {value} < minimum {schema['minimum']}")
    if "minLength" in schema and isinstance(value, str) and len(value) < schema["minLength"]:
        problems.append(f"{where}: empty string")
    if "pattern" in schema and isinstance(value, str) and not _pattern_ok(schema["pattern"], value):
        if schema["pattern"] == NAME_PATTERN:
            problems.append(
                f"{where}: {value!r} is not a safe name (it becomes a folder name): use letters, "
                f"digits, '.', '_' and '-' only, starting with a letter or digit, e.g. "
                f"{_suggest_name(value)!r} (pattern {NAME_PATTERN})"
            )
        else:
            problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                problems.append(f"{where}: missing required key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, v in value.items():
            if key in props:
                _check(v, props[key], f"{where}.{key}", problems)
            elif extra is False:
                problems.append(f"{where}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                _check(v, extra, f"{where}.{key}", problems)
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            _check(v, schema["items"], f"{where}[{i}]", problems)
    elif (
        isinstance(value, list | dict)
        and "properties" not in schema
        and "items" not in schema
        and not isinstance(schema.get("additionalProperties"), dict)
    ):
        _check_finite(value, where, problems)


def _check_finite(value: Any, where: str, problems: list[str]) -> None:
    """Non-finite numbers anywhere inside a free-form part (config, tuning trials, task info)."""
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{where}: non-finite number {value!r}; a record holds finite numbers only")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}", problems)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]", problems)


def schema_problems(record: Any) -> list[str]:
    """Every way ``record`` violates :data:`RECORD_SCHEMA` (empty list = valid)."""
    problems: list[str] = []
    _check(record, RECORD_SCHEMA, "record", problems)
    return problems


def validate_record(record: Any, *, source: str = "record") -> dict[str, Any]:
    """Return ``record`` if it matches the schema; raise :class:`RecordError` listing all problems."""
    problems = schema_problems(record)
    if problems:
        raise RecordError(
            f"{source} does not match record schema {SCHEMA_VERSION}: " + "; ".join(problems)
        )
    return record


def check_name(name: Any, what: str = "name") -> str:
    """Return ``name`` if it is safe as one path component (:data:`NAME_PATTERN`), else raise
    :class:`RecordError` saying why and suggesting a safe spelling."""
    if not isinstance(name, str) or not _pattern_ok(NAME_PATTERN, name):
        hint = _suggest_name(name) if isinstance(name, str) else "my-name"
        raise RecordError(
            f"{what} {name!r} is not a safe name (it becomes a folder name): use letters, digits, "
            f"'.', '_' and '-' only, starting with a letter or digit, e.g. {hint!r}"
        )
    return name


def check_out_dir(path: str | Path, option: str = "--out") -> None:
    """Fail before any work if ``path`` cannot hold results: it exists and is not a folder, a
    parent of it is a file, or the folder (or the nearest existing parent it would be created
    in) is not writable. Creates nothing: a run that fails later leaves no empty folder."""
    p = Path(path).absolute()
    if p.exists() and not p.is_dir():
        raise BenchConfigError(
            f"{option} {str(path)!r} exists and is not a folder; pass a folder path"
        )
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise BenchConfigError(
            f"{option} {str(path)!r}: {existing} is a file, not a folder; pass a folder path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BenchConfigError(
            f"{option} {str(path)!r}: {existing} is not writable; pass a folder you can write to"
        )


def check_root_dir(path: str | Path, what: str) -> None:
    """Fail unless ``path`` is an existing folder (a records root or a submission)."""
    p = Path(path)
    if not p.exists():
        raise BenchConfigError(f"{what} {str(path)!r} does not exist; pass a records folder")
    if not p.is_dir():
        raise BenchConfigError(f"{what} {str(path)!r} is a file, not a folder; pass a folder")


def safe_child(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root / parts...`` after checking that every part is a safe name and that the resolved
    path (symlinks followed) stays inside the resolved ``root``; :class:`RecordError` otherwise."""
    base = Path(root).resolve()
    for part in parts:
        check_name(part, "path component")
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base):
        raise RecordError(
            f"{Path(root).joinpath(*parts)} resolves to {path}, outside {base} (a symlink?); "
            "refusing to write there"
        )
    return Path(root).joinpath(*parts)


def record_path(out: str | os.PathLike[str], task: str, model: str, seed: int) -> Path:
    """``<out>/<task>/records/<model>/seed-<seed>.json``; every name is checked to be a safe path
    component and the path to stay under ``out`` (:class:`RecordError` otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RecordError(f"seed {seed!r} must be a non-negative integer")
    check_name(task, "task")
    check_name(model, "model")
    return safe_child(out, task, "records", model, f"seed-{seed}.json")


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and ``os.replace``.

    The file gets the permissions a plain ``open(path, "w")`` would give (0o666 less the
    user's umask), not the temp file's private 0o600, so a shared results folder stays readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(fig: Any, png: Path, svg: Path) -> None:
    """Save a matplotlib figure as PNG and SVG without timestamps (deterministic bytes), each
    through its own unique temp file + ``os.replace`` (safe with concurrent writers)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    mask = _umask()
    for path, fmt, meta in ((png, "png", {"Software": None}), (svg, "svg", {"Date": None})):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~mask)
            with os.fdopen(fd, "wb") as f:
                fig.savefig(f, format=fmt, metadata=meta, dpi=100)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_record(record: dict[str, Any], out: str | os.PathLike[str]) -> Path:
    """Validate ``record`` and write it atomically to its path under ``out``; returns the path."""
    validate_record(record)
    path = record_path(out, record["task"], record["model"]["name"], record["seed"])
    atomic_write_text(path, dumps(record))
    return path


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate one record file (plain JSON; never pickle)."""
    p = Path(path)
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RecordError(
            f"{p}: not UTF-8 text (byte {e.start}: {e.reason}); a record is UTF-8 JSON, "
            "regenerate it with fimp-bench run"
        ) from e
    except json.JSONDecodeError as e:
        raise RecordError(f"{p}: not valid JSON ({e}); regenerate it with fimp-bench run") from e
    except IsADirectoryError as e:
        raise RecordError(f"{p}: is a directory, not a record file; remove or rename it") from e
    except OSError as e:
        raise RecordError(f"{p}: cannot be read ({e.strerror or e})") from e
    return validate_record(record, source=str(p))


def read_records(root: str | os.PathLike[str]) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``*/records/*/seed-*.json`` below ``root`` as ``(path, record)``, sorted by path."""
    return [(p, read_record(p)) for p in sorted(Path(root).glob("*/records/*/seed-*.json"))]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def hardware_string(device: Any = None) -> str:
    """``"<CPU model> (<n> cores)"`` and the GPU name when running on CUDA."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import torch

    s = f"{cpu} ({n} cores, {torch.get_num_threads()} torch threads)"
    if device is not None and getattr(device, "type", None) == "cuda":
        s = f"{torch.cuda.get_device_name(device)}; {s}"
    return s


def environment_info() -> dict[str, Any]:
    """Versions, git commit + dirty flag (tracked files only) and UTC date for a record."""
    import sys
    from importlib import metadata

    import numpy
    import sklearn
    import torch
    import torch_geometric

    def ver(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__,
            "numpy": numpy.__version__,
            "scikit_learn": sklearn.__version__,
            "fimp": ver("fimp-core"),
            "fimp_data": ver("fimp-data"),
            "fimp_bench": ver("fimp-bench"),
        },
        "git": {"commit": commit or "unknown", "dirty": None if status is None else bool(status)},
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
