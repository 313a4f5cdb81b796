"""A small harness for tests that open generated static pages in a real browser (Playwright
driving the system Chromium; ``playwright install`` is never needed nor run).

- :func:`serve` serves a folder over HTTP on loopback (port 0, a thread) and records the status
  of every request it answers;
- :func:`launch` starts the system Chromium headless (``$FIMP_CHROMIUM``, default
  ``/usr/bin/chromium``) with everything that phones home turned off;
- :func:`open_page` gives a page whose :class:`PageLog` records console errors, page errors,
  failed requests and HTTP errors, and that ABORTS (and records) every request to a host other
  than loopback, so a page that would load something from the network fails its test;
- :func:`require_browser` skips a test when Playwright or Chromium is missing, and fails it
  instead when ``FIMP_STRICT_SKIPS=1`` (the full tox environments).

The fixtures ``browser`` (session) and ``browser_page`` (a fresh page + its log) in this
folder's conftest.py are built from these. A test elsewhere in the repository can import this
module by path (``importlib.util.spec_from_file_location``) and reuse them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest

CHROMIUM = os.environ.get("FIMP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
VIEWPORT = {"width": 1280, "height": 800}


def require_browser() -> None:
    """Skip the calling test if Playwright or Chromium is missing; fail it under
    ``FIMP_STRICT_SKIPS=1``, where a skipped test would hide a missing feature."""
    if importlib.util.find_spec("playwright") is None:
        reason = "playwright is not installed (pip install playwright; the system chromium is used)"
    elif not os.access(CHROMIUM, os.X_OK):
        reason = f"no chromium at {CHROMIUM} (apt-get install chromium, or set FIMP_CHROMIUM)"
    else:
        return
    if os.environ.get("FIMP_STRICT_SKIPS") == "1":
        pytest.fail(f"browser test cannot run (FIMP_STRICT_SKIPS=1): {reason}")
    pytest.skip(reason)


@dataclass
class Server:
    """A running loopback server: ``url`` ends with ``/``; ``requests`` holds
    ``(method, path, status)`` of every request answered so far."""

    url: str
    root: Path
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    def statuses(self, path: str) -> list[int]:
        """Statuses answered for ``path`` (as requested, e.g. ``/index.html``)."""
        return [s for _, p, s in self.requests if p.split("?", 1)[0] == path]


@contextlib.contextmanager
def serve(folder: str | os.PathLike[str]) -> Iterator[Server]:
    """Serve ``folder`` on ``http://127.0.0.1:<free port>/`` from a thread while in the block."""
    server_info = Server(url="", root=Path(folder))
    lock = threading.Lock()

    class Handler(SimpleHTTPRequestHandler):
        def log_request(self, code: Any = "-", size: Any = "-") -> None:
            with lock:
                server_info.requests.append((self.command, self.path, int(code)))

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    httpd.daemon_threads = True
    server_info.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield server_info
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def launch() -> Iterator[Any]:
    """The system Chromium, headless, via Playwright (call :func:`require_browser` first)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What went wrong on a page: console errors, uncaught page errors, failed requests,
    HTTP responses >= 400 and requests aborted because they left loopback."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        return [
            *(f"console error: {m}" for m in self.console_errors),
            *(f"page error: {m}" for m in self.page_errors),
            *(f"failed request: {m}" for m in self.failed_requests),
            *(f"HTTP error: {m}" for m in self.http_errors),
            *(f"blocked non-loopback request: {m}" for m in self.blocked),
        ]

    def assert_clean(self) -> None:
        problems = self.problems()
        assert not problems, "\n".join(problems)


def _local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("file", "data", "blob", "about"):
        return True
    return parts.scheme in ("http", "https", "ws", "wss") and parts.hostname in LOOPBACK


@contextlib.contextmanager
def open_page(
    browser: Any, *, viewport: dict[str, int] | None = None
) -> Iterator[tuple[Any, PageLog]]:
    """A fresh browser context and page plus its :class:`PageLog`; every request that is not
    to loopback (or a file / data URL) is aborted and recorded in ``log.blocked``."""
    log = PageLog()
    context = browser.new_context(viewport=viewport or VIEWPORT, service_workers="block")

    def route(r: Any) -> None:
        if _local(r.request.url):
            r.continue_()
        else:
            log.blocked.append(r.request.url)
            r.abort("blockedbyclient")

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log.page_errors.append(str(e)))
    page.on(
        "requestfailed",
        lambda req: (
            None
            if req.url in log.blocked
            else log.failed_requests.append(f"{req.url} ({req.failure})")
        ),
    )
    page.on(
        "response",
        lambda resp: (
            log.http_errors.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None
        ),
    )
    try:
        yield page, log
    finally:
        context.close()


_LINKS = """text => {
    const doc = new DOMParser().parseFromString(text, "text/html");
    return Array.from(doc.querySelectorAll("a[href], link[href], script[src], img[src]"))
        .map(e => e.getAttribute("href") || e.getAttribute("src"));
}"""


def crawl(page: Any, start: str, *, external_links: bool = False) -> dict[str, Any]:
    """Follow every same-origin href / src from ``start``: each URL is requested through the
    page's browser context (a page CSP may forbid ``fetch()``), each HTML answer is parsed by the
    browser's own DOMParser. Asserts every answer is 200; with ``external_links=False`` also that
    no link points off the origin (with True, such plain links are skipped, never requested).
    Returns ``{"by_extension": {ext: count}, "json": [parsed JSON answers]}``."""
    origin = urlsplit(start).netloc
    seen: set[str] = set()
    queue = [start]
    kinds: dict[str, int] = {}
    parsed: list[Any] = []
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        resp = page.request.get(url)
        assert resp.status == 200, url
        ext = url.rsplit(".", 1)[-1]
        kinds[ext] = kinds.get(ext, 0) + 1
        if ext == "json":
            parsed.append(resp.json())
        for link in page.evaluate(_LINKS, resp.text()) if ext == "html" else []:
            absolute = urldefrag(urljoin(url, link))[0]
            parts = urlsplit(absolute)
            if parts.scheme in ("data", "mailto"):
                continue
            if parts.netloc != origin:
                assert external_links, (url, link)  # nothing points off the site
                continue
            queue.append(absolute)
    return {"by_extension": kinds, "json": parsed}
