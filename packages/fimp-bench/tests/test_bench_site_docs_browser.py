"""Both websites, built by the one command (``ci/scripts/build_site.sh OUT``), in a real browser.

The leaderboard site (OUT/, tested page by page in test_bench_site_browser.py) and the API
reference (OUT/api/, Sphinx) are built into a temp folder and served on loopback; every request
to another host is aborted and counts as a failure (see _browser.py). Checked here: the build
writes both sites; every same-origin link of every API page answers 200; each kind of API page
renders without a console error, page error or failed request; FIMPConv's docstring equation is
typeset by the bundled MathJax (visible ``mjx-container`` elements, no network); the search page
finds FIMPConv from the bundled index; the leaderboard index and the API index open from the
same server. A screenshot of the API page of fimp lands in the test's tmp folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _browser import crawl, serve

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("sphinx")  # a skip fails the strict tox envs (FIMP_STRICT_SKIPS=1)
    out = tmp_path_factory.mktemp("both-sites") / "site"
    res = subprocess.run(
        ["bash", str(REPO / "ci" / "scripts" / "build_site.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def served(built):
    with serve(built) as server:
        yield server


def test_the_one_command_builds_both_sites_and_refuses_a_used_folder(built):
    assert (built / "index.html").is_file() and (built / "api" / "index.html").is_file()
    assert (built / "api" / "reference" / "fimp.html").is_file()
    res = subprocess.run(
        ["bash", str(REPO / "ci" / "scripts" / "build_site.sh"), str(built)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "not an empty folder" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_every_link_of_every_api_page_resolves(served, browser_page):
    """Crawl from api/index.html: every same-origin URL is fetched by the browser context and
    each HTML page's href/src (parsed by the browser's DOMParser) followed; all answer 200."""
    page, log = browser_page
    start = served.url + "api/index.html"
    page.goto(start)
    # plain links out (e.g. "Made with Furo") are links, never loaded: skipped
    pages = crawl(page, start, external_links=True)["by_extension"]["html"]
    assert pages >= 12, pages  # index, 3 reference pages, cli, example, errors, 4 tutorial pages
    log.assert_clean()


@pytest.mark.parametrize(
    "path",
    [
        "api/index.html",
        "api/reference/fimp.html",
        "api/reference/fimp_data.html",
        "api/reference/fimp_bench.html",
        "api/cli.html",
        "api/example.html",
        "api/errors.html",
        "api/tutorials/spatial.html",
        "api/tutorials/fmri.html",
        "api/tutorials/image.html",
        "index.html",
    ],
)
def test_page_renders_cleanly(served, browser_page, path):
    page, log = browser_page
    resp = page.goto(served.url + path)
    assert resp.status == 200
    page.wait_for_load_state("networkidle")
    assert page.locator("h1").first.is_visible()
    log.assert_clean()


def test_docstring_equations_are_typeset_by_the_bundled_mathjax(served, browser_page, tmp_path):
    page, log = browser_page
    page.goto(served.url + "api/reference/fimp.html#fimp.nn.FIMPConv")
    doc = page.locator("dt#fimp\\.nn\\.FIMPConv + dd")
    math = doc.locator("mjx-container")
    math.first.wait_for(state="visible", timeout=30_000)
    assert math.count() >= 2  # the display equation and the inline H_i
    box = math.first.bounding_box()
    assert box and box["width"] > 20 and box["height"] > 5
    mathjax = [path for _, path, _ in served.requests if "mathjax" in path.lower()]
    assert mathjax, "MathJax was not loaded from the local server"
    page.screenshot(path=str(tmp_path / "api-fimp.png"))
    assert (tmp_path / "api-fimp.png").stat().st_size > 0
    log.assert_clean()


def test_search_finds_fimpconv_from_the_bundled_index(served, browser_page):
    page, log = browser_page
    page.goto(served.url + "api/search.html?q=FIMPConv")
    hit = page.locator("#search-results a", has_text="FIMPConv").first
    hit.wait_for(state="visible", timeout=30_000)
    hit.click()
    page.wait_for_load_state("load")
    assert "reference/fimp.html" in page.url
    log.assert_clean()


def test_api_pages_work_from_a_file_url(built, browser_page):
    """Opened from disk (no server): the math is typeset and search finds FIMPConv with no
    console error (search summaries would fetch() each hit page, which file:// forbids)."""
    page, log = browser_page
    page.goto((built / "api" / "reference" / "fimp.html").as_uri() + "#fimp.nn.FIMPConv")
    page.locator("dt#fimp\\.nn\\.FIMPConv + dd mjx-container").first.wait_for(
        state="visible", timeout=30_000
    )
    page.goto((built / "api" / "search.html").as_uri() + "?q=FIMPConv")
    page.locator("#search-results a", has_text="FIMPConv").first.wait_for(
        state="visible", timeout=30_000
    )
    page.wait_for_timeout(1_000)  # any late fetch() of a hit page would log an error by now
    log.assert_clean()
