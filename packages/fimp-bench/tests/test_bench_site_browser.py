"""The leaderboard website in a real browser (Playwright + the system Chromium, see _browser.py).

The site is built from the committed leaderboards/ into a temp folder and served on loopback;
every request to another host is aborted and counts as a failure. Checked: the index lists
every task and its links open; clicking a numeric header sorts the rows (again: reversed);
filters hide rows and clearing them restores the rows; every same-origin link of every page
answers 200; the inline plot is visible; the comparison draws one point per common seed; the
index works from file:// too; no console error, page error or failed request anywhere.
Screenshots of the index and a task page land in the test's tmp folder (and, with
FIMP_SITE_SCREENSHOTS=DIR, in DIR as site-index.png / site-task.png)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _browser import crawl, serve

from fimp_bench.leaderboard import group_by_task, summarize
from fimp_bench.records import read_records
from fimp_bench.site import generate_site, model_kind

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[3]
BOARDS = REPO / "leaderboards"
TASK = "image-country"  # 17 models, two of them with external weights


@pytest.fixture(scope="module")
def by_task():
    return group_by_task(r for _, r in read_records(BOARDS))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser-site") / "site"
    generate_site(BOARDS, out)
    with serve(out) as server:
        yield server


def _column(page, col: int) -> list[str]:
    return page.eval_on_selector_all(
        "#board tbody tr", f"rows => rows.map(r => r.cells[{col}].textContent.trim())"
    )


def _mean(cell: str) -> float:
    return float(cell.split("±")[0])


def _screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 0
    if os.environ.get("FIMP_SITE_SCREENSHOTS"):
        dest = Path(os.environ["FIMP_SITE_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / name)


def test_index_lists_every_task_and_its_links_open(served, browser_page, by_task, tmp_path):
    page, log = browser_page
    resp = page.goto(served.url + "index.html")
    assert resp.status == 200
    tasks = page.eval_on_selector_all("#tasks tbody tr", "rows => rows.map(r => r.dataset.task)")
    assert tasks == list(by_task)
    _screenshot(page, tmp_path, "site-index.png")
    for task in by_task:
        page.goto(served.url + "index.html")
        with page.expect_navigation():
            page.click(f'#tasks a.task-link[href="{task}/index.html"]')
        assert page.url == f"{served.url}{task}/index.html"
        assert page.locator("h1").inner_text() == f"Leaderboard: {task}"
        assert page.locator("#board tbody tr").count() == len(summarize(by_task[task]))
    log.assert_clean()


def test_numeric_header_sorts_and_a_second_click_reverses(served, browser_page, tmp_path):
    page, log = browser_page
    page.goto(f"{served.url}{TASK}/index.html")
    _screenshot(page, tmp_path, "site-task.png")
    header = page.locator("#board thead th[data-metric]").first
    col = page.eval_on_selector("#board thead th[data-metric]", "th => th.cellIndex")
    before = [_mean(c) for c in _column(page, col)]
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    asc = [_mean(c) for c in _column(page, col)]
    assert asc == sorted(before) and asc != before  # the table starts best (highest) first
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    desc = [_mean(c) for c in _column(page, col)]
    assert desc == sorted(before, reverse=True)
    models_desc = _column(page, 1)
    # numeric, not text order: the #params column sorts 226 below 21,745
    params = page.locator("#board thead th", has_text="#params")
    params.click()
    pcol = params.evaluate("th => th.cellIndex")
    trainable = [int(c.split("/")[0].replace(",", "")) for c in _column(page, pcol)]
    assert trainable == sorted(trainable)
    assert sorted(models_desc) == sorted(_column(page, 1))  # rows moved, none lost
    log.assert_clean()


def test_filters_hide_rows_and_clearing_restores_them(served, browser_page, by_task):
    from playwright.sync_api import expect  # (the browser fixture skipped if it is missing)

    page, log = browser_page
    page.goto(f"{served.url}{TASK}/index.html")
    rows = summarize(by_task[TASK])
    visible = page.locator("#board tbody tr:visible")
    count = page.locator("#row-count")
    expect(visible).to_have_count(len(rows))
    kinds = [model_kind(r["registry_key"], external=bool(r["external_weights"])) for r in rows]
    assert 0 < kinds.count("ablation") < len(rows)
    page.select_option('select[data-filter="kind"]', "ablation")
    expect(visible).to_have_count(kinds.count("ablation"))
    expect(count).to_have_text(f"{kinds.count('ablation')} of {len(rows)} rows")
    page.click('button[type="reset"]')
    expect(visible).to_have_count(len(rows))
    expect(count).to_have_text(f"{len(rows)} of {len(rows)} rows")
    page.fill("input[data-filter-text]", "tokenmean")
    expected = [r["model"] for r in rows if "tokenmean" in r["model"]]
    assert expected
    expect(visible).to_have_count(len(expected))
    names = page.locator("#board tbody tr:visible td:nth-child(2)").all_inner_texts()
    assert sorted(names) == sorted(expected)
    page.select_option('select[data-filter="kind"]', "classic GNN")  # text AND kind: none left
    expect(visible).to_have_count(0)
    page.fill("input[data-filter-text]", "")
    expect(visible).to_have_count(kinds.count("classic GNN"))
    page.select_option('select[data-filter="kind"]', "")
    expect(visible).to_have_count(len(rows))
    log.assert_clean()


def test_every_link_on_every_page_resolves(served, browser_page, by_task):
    """Crawl from the index: every same-origin URL is requested through the browser context,
    each HTML page is parsed by the browser's own parser (DOMParser) and every href / src is
    followed; each answers 200 (the server's log says so too). The pages' CSP forbids fetch(),
    hence the context's request API. Then one page of each kind per task is rendered."""
    page, log = browser_page
    page.goto(served.url + "index.html")
    found = crawl(page, served.url + "index.html")
    kinds = found["by_extension"]
    assert all(isinstance(j, dict) for j in found["json"])
    n_records = sum(len(rs) for rs in by_task.values())
    n_models = sum(len({r["model"]["name"] for r in rs}) for rs in by_task.values())
    assert kinds == {"html": 1 + 2 * len(by_task) + n_models, "json": n_records, "css": 1, "js": 1}
    for path, _, status in served.requests:
        assert status == 200, path
    for task, records in by_task.items():
        first = sorted(r["model"]["name"] for r in records)[0]
        for rel in ("index.html", "compare.html", f"records/{first}/index.html"):
            resp = page.goto(f"{served.url}{task}/{rel}")
            assert resp.status == 200
    log.assert_clean()


def test_inline_plot_is_visible(served, browser_page):
    page, log = browser_page
    page.goto(f"{served.url}{TASK}/index.html")
    plot = page.locator("#plot figure > svg")
    plot.scroll_into_view_if_needed()
    assert plot.is_visible()
    box = plot.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100
    log.assert_clean()


def test_comparison_draws_one_point_per_common_seed(served, browser_page, by_task):
    page, log = browser_page
    task = "spatial-celltype"
    page.goto(f"{served.url}{task}/compare.html")
    seeds = {}
    for r in by_task[task]:
        seeds.setdefault(r["model"]["name"], set()).add(r["seed"])
    for a, b in (("gcn", "fimp-base"), ("mlp", "gat")):
        page.select_option("#model-a", label=a)
        page.select_option("#model-b", label=b)
        common = seeds[a] & seeds[b]
        points = page.locator("#scatter circle.pt")
        assert points.count() == len(common) > 0
        drawn = {int(s) for s in points.evaluate_all("cs => cs.map(c => c.dataset.seed)")}
        assert drawn == common
        assert page.locator("#scatter line.diag").count() == 1
        assert page.locator("#compare-summary").inner_text().startswith(f"{len(common)} common")
    page.select_option("#metric", "macro_f1")
    assert page.locator("#scatter circle.pt").count() == len(seeds["mlp"] & seeds["gat"])
    log.assert_clean()


def test_index_from_a_file_url(served, browser_page, by_task):
    page, log = browser_page
    page.goto((served.root / "index.html").as_uri())
    rows = page.locator("#tasks tbody tr")
    assert rows.count() == len(by_task)
    assert page.locator("#tasks thead th.sortable").count() > 0  # the script ran
    first = next(iter(by_task))
    page.click(f'#tasks a.task-link[href="{first}/index.html"]')
    page.wait_for_load_state()
    assert page.locator("#board tbody tr").count() == len(summarize(by_task[first]))
    assert page.locator("#plot figure > svg").is_visible()
    log.assert_clean()


def test_the_harness_aborts_and_reports_non_loopback_requests(served, browser_page):
    """The zero-blocked-requests assertions above mean something: a page (without the site's
    CSP) that loads an image from another host gets the request aborted and reported."""
    page, log = browser_page
    page.set_content('<img src="https://example.org/x.png"><p>hi</p>')
    page.wait_for_load_state()
    assert log.blocked == ["https://example.org/x.png"]
    assert any("blocked non-loopback request" in p for p in log.problems())
    log.blocked.clear()
    log.console_errors.clear()  # the aborted image is also a console error
    page.goto(served.url + "index.html")
    log.assert_clean()
