"""Verified downloads and safe archive extraction.

A download streams into a temp file beside the target, checks the byte count against
Content-Length, the registered size and the sha256, and only then renames it into place
(``os.replace``, atomic on one filesystem). A failed attempt removes its temp file, so the cache
never holds a partial or wrong file, and a target that already holds the right bytes is never
touched. A cached file that fails its checksum is reported (a warning naming it) and kept: once a
verified copy has arrived it is renamed to ``<name>.corrupt-<sha256 prefix>``, not deleted; if
no verified copy arrives it stays where it was and the error says so. Transient failures (timeouts, connection errors, HTTP 5xx/429, truncated bodies) are
retried with exponential backoff; permanent ones (HTTP 4xx, a complete file with the wrong sha256)
fail at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from .errors import ArchiveError, ChecksumError, DownloadError

__all__ = ["download_file", "extract_archive", "sha256_file", "verify_file"]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(
    path: str | os.PathLike[str], *, sha256: str | None, size: int | None = None
) -> None:
    """Raise :class:`ChecksumError` if ``path`` differs from the expected size (bytes) or sha256."""
    path = Path(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(
            f"{path}: size {actual_size} bytes, expected {size} (truncated or wrong file); "
            "delete it and download again"
        )
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise ChecksumError(
                f"{path}: sha256 {actual}, expected {sha256} (corrupt or changed file); delete "
                "it and download again, or fix the registry entry if the source changed"
            )


class _Transient(DownloadError):
    """A failure worth retrying."""


def _fetch_once(
    url: str,
    tmp: Path,
    *,
    timeout: float,
    progress: bool,
    desc: str,
    size: int | None,
) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "fimp-data"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        msg = f"HTTP {exc.code} {exc.reason} for {url}"
        exc.close()
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(msg) from exc
        raise DownloadError(f"{msg}; check the URL or the registry entry") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise _Transient(f"cannot reach {url}: {exc}") from exc
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else size
        from tqdm.auto import tqdm

        received = 0
        try:
            with (
                open(tmp, "wb") as fh,
                tqdm(
                    total=expected,
                    unit="B",
                    unit_scale=True,
                    desc=desc,
                    disable=not progress,
                    leave=False,
                ) as bar,
            ):
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
                fh.flush()
                os.fsync(fh.fileno())
        except (TimeoutError, ConnectionError, OSError) as exc:
            if isinstance(exc, DownloadError):
                raise
            raise _Transient(f"reading {url} failed after {received} bytes: {exc}") from exc
        except Exception as exc:  # http.client.IncompleteRead and friends
            raise _Transient(f"reading {url} failed after {received} bytes: {exc}") from exc
        if length and length.isdigit() and received != int(length):
            raise _Transient(
                f"{url}: received {received} bytes but the server announced {length} (truncated)"
            )


def _aside_name(target: Path) -> Path:
    """``<name>.corrupt-<first 12 hex of its sha256>`` (``-2``, ``-3``, ... if taken)."""
    base = target.with_name(f"{target.name}.corrupt-{sha256_file(target)[:12]}")
    aside, i = base, 1
    while aside.exists():
        i += 1
        aside = base.with_name(f"{base.name}-{i}")
    return aside


def download_file(
    url: str | Sequence[str],
    target: str | os.PathLike[str],
    *,
    sha256: str,
    size: int | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` (or the first working of several mirrors) to ``target``, verified.

    Args:
        url: one URL or a list of mirrors tried in order (http(s):// or file://).
        target: final path of the file; its folder is created.
        sha256: expected sha256 hex digest (required: every download is verified).
        size: expected size in bytes, or None when the publisher gives none.
        retries: extra attempts per URL after a transient failure.
        backoff: seconds before the first retry; doubles each retry.
        timeout: seconds without data before the connection counts as stalled.
        progress: show a tqdm progress bar.

    Returns:
        ``target`` as a Path. If it already exists with the right sha256/size, nothing is fetched.

    Raises:
        DownloadError: every mirror failed (the message lists each failure).
        ChecksumError: the bytes arrived but their sha256/size is wrong.
    """
    target = Path(target)
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise DownloadError(f"no URL given for {target.name}; fix the registry entry")
    stale: ChecksumError | None = None
    if target.exists():
        try:
            verify_file(target, sha256=sha256, size=size)
            return target
        except ChecksumError as exc:
            # kept in place until a verified copy has arrived, then moved aside (never deleted)
            stale = exc
            warnings.warn(
                f"cached {target} failed its checksum ({exc}); fetching a fresh copy. The bad "
                "copy is kept, renamed to <name>.corrupt-<sha256 prefix>, once the new one "
                "verifies.",
                stacklevel=2,
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    checksum_failure: ChecksumError | None = None
    for u in urls:
        for attempt in range(retries + 1):
            fd, tmp_name = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".part"
            )
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                _fetch_once(u, tmp, timeout=timeout, progress=progress, desc=target.name, size=size)
                verify_file(tmp, sha256=sha256, size=size)
                if stale is not None and target.exists():
                    os.replace(target, _aside_name(target))
                os.replace(tmp, target)
                return target
            except _Transient as exc:
                failures.append(f"{u} (attempt {attempt + 1}): {exc}")
                if attempt < retries:
                    time.sleep(backoff * 2**attempt)
                    continue
                break
            except ChecksumError as exc:
                checksum_failure = exc
                failures.append(f"{u}: {exc}")
                break
            except DownloadError as exc:
                failures.append(f"{u}: {exc}")
                break
            finally:
                tmp.unlink(missing_ok=True)
    detail = "\n  ".join(failures)
    if stale is not None:
        detail += (
            f"\n  (the cached copy {target} failed its checksum: {stale}; it was left in place)"
        )
    if checksum_failure is not None and len(failures) == 1:
        raise ChecksumError(
            f"download of {target.name} failed verification:\n  {detail}\nNothing was written to "
            f"{target.parent}. If the source legitimately changed, update the registry entry."
        ) from checksum_failure
    raise DownloadError(
        f"download of {target.name} failed:\n  {detail}\nNothing was written to {target.parent}. "
        "Check your network, or download the file yourself and place it there "
        "(it is verified against the registry sha256)."
    )


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in p.parts:
        raise ArchiveError(f"{archive}: member {name!r} contains '..'; refusing to extract")
    return p


def extract_archive(archive: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Extract a .zip / .tar / .tar.gz / .tgz / .tar.bz2 / .tar.xz archive into folder ``target``.

    Every member is checked first: no absolute paths, no ``..``, no symlinks or hardlinks (in
    either format), no device files. Extraction goes to a temp folder beside ``target`` that is
    renamed into place, so a failure leaves nothing behind. An existing ``target`` is not touched
    and is returned as is.

    Raises:
        ArchiveError: an unsafe member or an unsupported/corrupt archive.
    """
    archive = Path(archive)
    target = Path(target)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".extract"))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member_name(info.filename, archive)
                    mode = (info.external_attr >> 16) & 0o170000
                    if mode == 0o120000:
                        raise ArchiveError(
                            f"{archive}: member {info.filename!r} is a symlink; refusing to extract"
                        )
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member_name(m.name, archive)
                    if m.issym() or m.islnk():
                        raise ArchiveError(
                            f"{archive}: member {m.name!r} is a link to {m.linkname!r}; "
                            "refusing to extract"
                        )
                    if not (m.isfile() or m.isdir()):
                        raise ArchiveError(
                            f"{archive}: member {m.name!r} is not a regular file or folder"
                        )
                tf.extractall(tmp, members=members, filter="data")
        else:
            raise ArchiveError(f"{archive}: not a zip or tar archive (or corrupt)")
        root = tmp.resolve()
        for p in tmp.rglob("*"):
            if p.is_symlink() or not p.resolve().is_relative_to(root):
                raise ArchiveError(f"{archive}: extracted path {p} escapes the target")
        os.replace(tmp, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(
            f"{archive}: corrupt archive ({exc}); delete it and download again"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
