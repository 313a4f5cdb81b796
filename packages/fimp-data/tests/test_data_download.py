"""Verified downloader against a loopback HTTP server started by the tests."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from fimp_data.download import download_file, extract_archive, sha256_file
from fimp_data.errors import ArchiveError, ChecksumError, DownloadError

GOOD = bytes(range(256)) * 64  # 16 KiB
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hits: ClassVar[dict[str, int]] = {}

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        if self.path == "/good":
            self._send(GOOD)
        elif self.path == "/corrupt":
            self._send(GOOD[:-1] + b"\x00")
        elif self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[: len(GOOD) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[:100])
            self.wfile.flush()
            time.sleep(1.5)
            self.close_connection = True
        elif self.path == "/flaky":
            if _Handler.hits[self.path] == 1:
                self.send_error(503, "try later")
            else:
                self._send(GOOD)
        else:
            self.send_error(404, "not found")

    def _send(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


FAST = {"retries": 1, "backoff": 0.01, "timeout": 0.5, "progress": False}


def _cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file(server, tmp_path):
    out = download_file(
        f"{server}/good", tmp_path / "c" / "f.bin", sha256=GOOD_SHA, size=len(GOOD), **FAST
    )
    assert out.read_bytes() == GOOD
    assert _cache_files(tmp_path / "c") == ["f.bin"]
    # a verified cached file is reused, not fetched again
    hits = _Handler.hits.get("/good", 0)
    download_file(f"{server}/good", out, sha256=GOOD_SHA, **FAST)
    assert _Handler.hits["/good"] == hits


@pytest.mark.parametrize(
    ("path", "error", "size"),
    [
        ("/corrupt", ChecksumError, len(GOOD)),
        ("/truncated", DownloadError, len(GOOD)),
        ("/truncated", DownloadError, None),
        ("/missing", DownloadError, None),
        ("/slow", DownloadError, len(GOOD)),
    ],
)
def test_failures_leave_nothing(server, tmp_path, path, error, size):
    cache = tmp_path / "c"
    cache.mkdir()
    with pytest.raises(error) as info:
        download_file(f"{server}{path}", cache / "f.bin", sha256=GOOD_SHA, size=size, **FAST)
    assert _cache_files(cache) == []
    assert "f.bin" in str(info.value)


def test_404_is_not_retried_and_names_status(server, tmp_path):
    before = _Handler.hits.get("/nothere", 0)
    with pytest.raises(DownloadError, match="404"):
        download_file(f"{server}/nothere", tmp_path / "f", sha256=GOOD_SHA, **FAST)
    assert _Handler.hits["/nothere"] == before + 1


def test_retry_then_success(server, tmp_path):
    out = download_file(f"{server}/flaky", tmp_path / "f", sha256=GOOD_SHA, **FAST)
    assert out.read_bytes() == GOOD and _Handler.hits["/flaky"] == 2


def test_mirror_fallback(server, tmp_path):
    out = download_file(
        [f"{server}/missing", f"{server}/good"], tmp_path / "f", sha256=GOOD_SHA, **FAST
    )
    assert sha256_file(out) == GOOD_SHA


def test_good_cache_never_overwritten_by_bad(server, tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(GOOD)
    # the cached copy verifies, so the corrupt URL is never even fetched
    download_file(f"{server}/corrupt", target, sha256=GOOD_SHA, **FAST)
    assert target.read_bytes() == GOOD
    # a wrong cached file is replaced only by a verified copy; a bad fetch keeps it
    target.write_bytes(b"stale")
    with pytest.warns(UserWarning, match="failed its checksum"), pytest.raises(ChecksumError):
        download_file(f"{server}/corrupt", target, sha256=GOOD_SHA, **FAST)
    assert target.read_bytes() == b"stale"
    assert _cache_files(tmp_path) == ["f.bin"]
    with pytest.warns(UserWarning, match="failed its checksum"):
        download_file(f"{server}/good", target, sha256=GOOD_SHA, **FAST)
    assert target.read_bytes() == GOOD


def test_connection_refused(tmp_path):
    with pytest.raises(DownloadError, match="cannot reach"):
        download_file("http://127.0.0.1:9/x", tmp_path / "f", sha256=GOOD_SHA, **FAST)
    assert _cache_files(tmp_path) == []


# ---------------------------------------------------------------- archives


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_extract_good_tar_and_zip(tmp_path):
    arc = _tar(tmp_path / "a.tar.gz", [_file("d/one.txt", b"1"), _file("two.txt", b"22")])
    out = extract_archive(arc, tmp_path / "out")
    assert (out / "d" / "one.txt").read_bytes() == b"1" and (out / "two.txt").read_bytes() == b"22"
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("z/three.txt", "333")
    assert (extract_archive(zpath, tmp_path / "zout") / "z" / "three.txt").read_text() == "333"


@pytest.mark.parametrize(
    "member",
    [
        _file("../evil.txt"),
        _file("/abs/evil.txt"),
        _file("ok/../../evil.txt"),
        _link("ln", "/etc/passwd", tarfile.SYMTYPE),
        _link("ln", "../outside", tarfile.LNKTYPE),
    ],
)
def test_tar_traversal_rejected(tmp_path, member):
    arc = _tar(tmp_path / "bad.tar.gz", [_file("fine.txt"), member])
    with pytest.raises(ArchiveError, match="refusing"):
        extract_archive(arc, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz"]


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt", "a/../../evil.txt"])
def test_zip_traversal_rejected(tmp_path, name):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr(zipfile.ZipInfo(name), "evil")
    with pytest.raises(ArchiveError, match="refusing"):
        extract_archive(zpath, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


def test_zip_symlink_rejected(tmp_path):
    zpath = tmp_path / "bad.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symlink"):
        extract_archive(zpath, tmp_path / "out")


def test_not_an_archive(tmp_path):
    p = tmp_path / "x.tar.gz"
    p.write_bytes(b"garbage")
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        extract_archive(p, tmp_path / "out")
    assert not (tmp_path / "out").exists()
