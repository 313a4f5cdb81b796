"""The dataset registry: ``registry.yaml`` shipped in the package, plus user registry files.

The schema is documented at the top of ``registry.yaml``. Extra registries are read, in order, from
``<cache dir>/registry.local.yaml`` (written by :func:`register_local`) and from the files listed in
the environment variable ``FIMP_DATA_REGISTRY`` (``os.pathsep``-separated). A name may be defined
once only.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import DataFileNotFoundError, RegistryError, UnknownDatasetError

__all__ = [
    "DatasetEntry",
    "FileEntry",
    "cache_dir",
    "get_entry",
    "list_datasets",
    "load_registry",
    "register_local",
]

SCHEMA_VERSION = 1
DOMAINS = ("spatial", "fmri", "image")
KINDS = ("node", "graph")
BUILDERS = ("knn", "radius", "delaunay", "none")
LOCAL_REGISTRY = "registry.local.yaml"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_READER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_ENTRY_KEYS = {
    "name",
    "domain",
    "tasks",
    "kind",
    "files",
    "licence",
    "citation",
    "description",
    "reader",
    "reader_args",
    "graph",
    "user_supplied",
    "checksum_note",
    "url_note",
}
_FILE_KEYS = {"name", "url", "mirrors", "sha256", "size", "embedded", "path", "local", "extract"}


def cache_dir() -> Path:
    """The data cache folder: ``$FIMP_DATA_DIR`` if set, else a per-user cache (``fimp`` in the
    platform's cache location, via ``platformdirs`` as pooch uses it). Not created here."""
    env = os.environ.get("FIMP_DATA_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("fimp")) / "data"


@dataclass(frozen=True)
class FileEntry:
    """One file of a dataset. Exactly one of ``url`` / ``embedded`` / ``local`` is set."""

    name: str
    sha256: str | None = None
    size: int | None = None
    url: str | None = None
    mirrors: tuple[str, ...] = ()
    embedded: bool = False
    path: str | None = None
    local: str | None = None
    extract: bool = False

    @property
    def source(self) -> str:
        """``"url"``, ``"embedded"`` or ``"local"``."""
        if self.url is not None:
            return "url"
        return "embedded" if self.embedded else "local"


@dataclass(frozen=True)
class DatasetEntry:
    """A validated registry entry (see ``registry.yaml`` for the meaning of each field)."""

    name: str
    domain: str
    tasks: tuple[str, ...]
    kind: str
    files: tuple[FileEntry, ...]
    licence: str
    citation: str
    description: str
    reader: str
    reader_args: Mapping[str, Any] = field(default_factory=dict)
    graph: Mapping[str, Any] = field(default_factory=lambda: {"builder": "none"})
    user_supplied: bool = False
    checksum_note: str | None = None
    source_file: str = "registry.yaml"

    @property
    def sha256(self) -> str | None:
        """Dataset checksum, the file's sha256 for a one-file dataset, else the sha256 of the lines
        ``"<file name>:<sha256>\\n"`` in registry order. None when a file has no registered sha256
        (user-supplied files: load() then hashes the files themselves)."""
        return dataset_checksum([(f.name, f.sha256) for f in self.files])

    def resolve_reader(self) -> Callable[..., Any]:
        """Import and return the reader function named by ``reader`` ("module:function")."""
        module_name, func_name = self.reader.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise RegistryError(
                f"dataset {self.name!r}: cannot import reader module {module_name!r} ({exc}); "
                "fix the `reader` field or install the package that provides it"
            ) from exc
        func = getattr(module, func_name, None)
        if not callable(func):
            raise RegistryError(
                f"dataset {self.name!r}: module {module_name!r} has no function {func_name!r}; "
                "fix the `reader` field"
            )
        return func


def dataset_checksum(files: Sequence[tuple[str, str | None]]) -> str | None:
    """Combine per-file sha256 digests into the dataset checksum (see :attr:`DatasetEntry.sha256`)."""
    if not files or any(sha is None for _, sha in files):
        return None
    if len(files) == 1:
        return files[0][1]
    lines = "".join(f"{name}:{sha}\n" for name, sha in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _fail(where: str, msg: str) -> RegistryError:
    return RegistryError(f"{where}: {msg}")


def _validate_file(raw: Any, where: str) -> FileEntry:
    if not isinstance(raw, Mapping):
        raise _fail(where, f"each file must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _FILE_KEYS
    if unknown:
        raise _fail(where, f"unknown file keys {sorted(unknown)}; allowed: {sorted(_FILE_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(where, "file needs a non-empty `name`")
    where = f"{where} file {name!r}"
    sources = [k for k in ("url", "embedded", "local") if raw.get(k)]
    if len(sources) != 1:
        raise _fail(where, f"set exactly one of `url`, `embedded: true`, `local` (got {sources})")
    sha = raw.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA_RE.match(sha)):
        raise _fail(where, f"`sha256` must be 64 lowercase hex digits, got {sha!r}")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise _fail(where, f"`size` must be a non-negative integer (bytes) or null, got {size!r}")
    source = sources[0]
    if source == "url":
        url = raw["url"]
        mirrors = raw.get("mirrors") or []
        for u in [url, *mirrors]:
            if not isinstance(u, str) or not u.startswith(("https://", "http://", "file://")):
                raise _fail(where, f"url {u!r} must start with https://, http:// or file://")
        if sha is None:
            raise _fail(where, "a downloaded file needs a `sha256` (downloads are verified)")
        return FileEntry(
            name=name,
            sha256=sha,
            size=size,
            url=url,
            mirrors=tuple(mirrors),
            extract=bool(raw.get("extract", False)),
        )
    if source == "embedded":
        path = raw.get("path")
        if (
            not isinstance(path, str)
            or not path
            or Path(path).is_absolute()
            or ".." in Path(path).parts
        ):
            raise _fail(
                where, "an embedded file needs `path` relative to the fimp_data package dir"
            )
        if sha is None:
            raise _fail(where, "an embedded file needs a `sha256`")
        return FileEntry(name=name, sha256=sha, size=size, embedded=True, path=path)
    if raw.get("path") is not None or raw.get("mirrors"):
        raise _fail(where, "a `local` file takes no `path`/`mirrors` (put the path in `local`)")
    local = raw["local"]
    if not isinstance(local, str):
        raise _fail(where, f"`local` must be a path string, got {local!r}")
    return FileEntry(name=name, sha256=sha, size=size, local=local)


def _validate_entry(raw: Any, where: str) -> DatasetEntry:
    if not isinstance(raw, Mapping):
        raise _fail(where, f"each dataset must be a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail(where, f"`name` must match [a-z0-9][a-z0-9-]*, got {name!r}")
    where = f"{where} dataset {name!r}"
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
    missing = [
        k
        for k in ("domain", "kind", "files", "licence", "citation", "description", "reader")
        if k not in raw
    ]
    if missing:
        raise _fail(where, f"missing required keys {missing}")
    if raw["domain"] not in DOMAINS:
        raise _fail(where, f"`domain` must be one of {DOMAINS}, got {raw['domain']!r}")
    if raw["kind"] not in KINDS:
        raise _fail(where, f"`kind` must be one of {KINDS}, got {raw['kind']!r}")
    tasks = raw.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise _fail(where, "`tasks` must be a list of task names")
    for key in ("licence", "citation", "description"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise _fail(where, f"`{key}` must be non-empty text")
    if not isinstance(raw["reader"], str) or not _READER_RE.match(raw["reader"]):
        raise _fail(where, f"`reader` must be 'module:function', got {raw['reader']!r}")
    reader_args = raw.get("reader_args") or {}
    if not isinstance(reader_args, Mapping):
        raise _fail(where, "`reader_args` must be a mapping")
    graph = raw.get("graph") or {"builder": "none"}
    if not isinstance(graph, Mapping) or graph.get("builder") not in BUILDERS:
        raise _fail(where, f"`graph` must be a mapping with `builder` in {BUILDERS}, got {graph!r}")
    _check_recipe(graph, where)
    files_raw = raw["files"]
    if not isinstance(files_raw, list) or not files_raw:
        raise _fail(where, "`files` must be a non-empty list")
    files = tuple(_validate_file(f, where) for f in files_raw)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise _fail(where, f"file names must be unique, got {names}")
    user_supplied = bool(raw.get("user_supplied", False))
    if any(f.source == "local" for f in files) and not user_supplied:
        raise _fail(where, "`local` files need `user_supplied: true`")
    if any(f.sha256 is None for f in files if f.source != "local") and not raw.get("checksum_note"):
        raise _fail(where, "a file without sha256 needs a `checksum_note` saying why")
    return DatasetEntry(
        name=name,
        domain=raw["domain"],
        tasks=tuple(tasks),
        kind=raw["kind"],
        files=files,
        licence=raw["licence"].strip(),
        citation=raw["citation"].strip(),
        description=raw["description"].strip(),
        reader=raw["reader"],
        reader_args=dict(reader_args),
        graph=dict(graph),
        user_supplied=user_supplied,
        checksum_note=raw.get("checksum_note"),
        source_file=where.split(":")[0],
    )


def _check_recipe(graph: Mapping[str, Any], where: str) -> None:
    builder = graph["builder"]
    allowed = {"knn": {"k", "metric"}, "radius": {"r", "metric"}, "delaunay": set(), "none": set()}
    extra = set(graph) - {"builder", "groups"} - allowed[builder]
    if extra:
        raise _fail(where, f"graph builder {builder!r} takes no {sorted(extra)}")
    if builder == "knn" and (not isinstance(graph.get("k"), int) or graph["k"] < 1):
        raise _fail(where, f"graph `k` must be a positive integer, got {graph.get('k')!r}")
    if builder == "radius" and (not isinstance(graph.get("r"), int | float) or not graph["r"] > 0):
        raise _fail(where, f"graph `r` must be a positive number, got {graph.get('r')!r}")
    if graph.get("metric", "euclidean") not in ("euclidean", "haversine"):
        raise _fail(
            where, f"graph `metric` must be euclidean or haversine, got {graph['metric']!r}"
        )


def parse_registry(text: str, *, source: str) -> dict[str, DatasetEntry]:
    """Parse and validate registry YAML text. Raises :class:`RegistryError` naming the bad key."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{source}: not valid YAML ({exc}); fix the file") from exc
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or "datasets" not in raw:
        raise RegistryError(f"{source}: top level must be a mapping with a `datasets:` list")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise RegistryError(
            f"{source}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION}); "
            "upgrade fimp-data or rewrite the file"
        )
    datasets = raw["datasets"] or []
    if not isinstance(datasets, list):
        raise RegistryError(f"{source}: `datasets` must be a list")
    out: dict[str, DatasetEntry] = {}
    for i, item in enumerate(datasets):
        entry = _validate_entry(item, f"{source}: datasets[{i}]")
        if entry.name in out:
            raise RegistryError(f"{source}: dataset name {entry.name!r} is defined twice")
        out[entry.name] = entry
    return out


def _extra_registry_files() -> list[Path]:
    files = [cache_dir() / LOCAL_REGISTRY]
    env = os.environ.get("FIMP_DATA_REGISTRY", "")
    files += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return files


def load_registry() -> dict[str, DatasetEntry]:
    """Read and validate every registry: the packaged one, the user's local one, and those in
    ``FIMP_DATA_REGISTRY``. Returns ``{name: DatasetEntry}`` in definition order."""
    text = resources.files("fimp_data").joinpath("registry.yaml").read_text(encoding="utf-8")
    entries = parse_registry(text, source="fimp_data/registry.yaml")
    for path in _extra_registry_files():
        if not path.is_file():
            if path.name != LOCAL_REGISTRY:
                raise DataFileNotFoundError(
                    f"registry file {str(path)!r} from FIMP_DATA_REGISTRY does not exist; "
                    "fix the variable or create the file"
                )
            continue
        for name, entry in parse_registry(
            path.read_text(encoding="utf-8"), source=str(path)
        ).items():
            if name in entries:
                raise RegistryError(
                    f"{path}: dataset {name!r} is already defined in {entries[name].source_file}; "
                    "choose another name"
                )
            entries[name] = entry
    return entries


def list_datasets(*, domain: str | None = None, task: str | None = None) -> list[str]:
    """Names of all registered datasets (sorted), optionally only one ``domain`` or ``task``."""
    entries = load_registry().values()
    return sorted(
        e.name
        for e in entries
        if (domain is None or e.domain == domain) and (task is None or task in e.tasks)
    )


def get_entry(name: str) -> DatasetEntry:
    """The registry entry of ``name``; :class:`UnknownDatasetError` lists the known names."""
    entries = load_registry()
    if name not in entries:
        raise UnknownDatasetError(
            f"no dataset named {name!r}; registered: {sorted(entries)}. "
            "Register your own with fimp_data.register_local(...)"
        )
    return entries[name]


def register_local(
    name: str,
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    kind: str,
    domain: str,
    reader: str,
    reader_args: Mapping[str, Any] | None = None,
    graph: Mapping[str, Any] | None = None,
    tasks: Sequence[str] = (),
    licence: str = "user-supplied; see the data owner's terms",
    citation: str = "user-supplied",
    description: str = "user-supplied local dataset",
    overwrite: bool = False,
) -> DatasetEntry:
    """Register a user-supplied local dataset (no URL) so ``load(name)`` and the bench CLI find it.

    The entry is written atomically to ``<cache dir>/registry.local.yaml`` (``FIMP_DATA_DIR``).

    Args:
        name: new dataset name, ``[a-z0-9-]``; may not shadow a packaged dataset.
        path: the file/folder (or list of them) passed positionally to ``reader``; stored absolute.
        kind: ``"node"`` or ``"graph"``. domain: ``"spatial"``, ``"fmri"`` or ``"image"``.
        reader: ``"module:function"``, e.g. ``"fimp_data.readers:read_parcel_timeseries"``.
        reader_args: keyword arguments for the reader. graph: recipe, e.g. ``{"builder": "knn", "k": 6}``.
        overwrite: replace an existing local entry of the same name.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    resolved = []
    for p in paths:
        p = Path(p).expanduser().resolve()
        if not p.exists():
            raise DataFileNotFoundError(f"register_local: {str(p)!r} does not exist; fix the path")
        resolved.append(str(p))
    raw_entry: dict[str, Any] = {
        "name": name,
        "domain": domain,
        "tasks": list(tasks),
        "kind": kind,
        "user_supplied": True,
        "files": [{"name": f"file{i}", "local": p} for i, p in enumerate(resolved)],
        "licence": licence,
        "citation": citation,
        "description": description,
        "reader": reader,
        "reader_args": dict(reader_args or {}),
        "graph": dict(graph or {"builder": "none"}),
    }
    entry = _validate_entry(raw_entry, f"register_local({name!r})")
    target = cache_dir() / LOCAL_REGISTRY
    existing: list[dict[str, Any]] = []
    if target.is_file():
        parse_registry(target.read_text(encoding="utf-8"), source=str(target))
        existing = (yaml.safe_load(target.read_text(encoding="utf-8")) or {}).get("datasets") or []
    packaged = parse_registry(
        resources.files("fimp_data").joinpath("registry.yaml").read_text(encoding="utf-8"),
        source="fimp_data/registry.yaml",
    )
    if name in packaged:
        raise RegistryError(f"register_local: {name!r} is a packaged dataset; choose another name")
    if any(e.get("name") == name for e in existing):
        if not overwrite:
            raise RegistryError(
                f"register_local: {name!r} is already registered in {target}; "
                "pass overwrite=True to replace it"
            )
        existing = [e for e in existing if e.get("name") != name]
    existing.append(raw_entry)
    text = yaml.safe_dump({"schema_version": SCHEMA_VERSION, "datasets": existing}, sort_keys=False)
    atomic_write_text(target, text)
    return entry


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
