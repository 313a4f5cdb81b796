"""The leaderboard website (``fimp-bench site``), without a browser: every page exists, every
internal link and asset resolves to a file of the output, the record copies are the records,
nothing is loaded from another host, and two builds are byte-identical. (The browser checks are
in test_bench_site_browser.py.)"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest

import fimp_bench.site as site_mod
from fimp_bench.cli import main
from fimp_bench.errors import RecordError, SiteError
from fimp_bench.leaderboard import group_by_task, summarize
from fimp_bench.records import read_record, read_records
from fimp_bench.site import generate_site, model_kind

REPO = Path(__file__).resolve().parents[3]
BOARDS = REPO / "leaderboards"


class _Links(HTMLParser):
    """Every href / src of a page (with the tag it sits on) and every id."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src", "xlink:href"):
            if key in a:
                self.links.append((tag, key, a[key]))


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _tree(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def _check_links(out: Path) -> int:
    """Assert every link of every page resolves; return how many internal links were checked."""
    pages = sorted(out.rglob("*.html"))
    parsed = {p: _parse(p) for p in pages}
    checked = 0
    for page, links in parsed.items():
        for tag, attr, value in links.links:
            scheme = urlsplit(value).scheme
            if tag != "a" or attr != "href":
                # scripts, styles, icons, images: only files of the site (or an empty data: icon)
                assert scheme in ("", "data") and not value.startswith("//"), (page, value)
                if scheme == "data":
                    continue
            elif scheme in ("http", "https", "mailto"):
                continue  # a plain link to another site is fine; it is never loaded
            assert scheme == "", (page, value)
            target, frag = urldefrag(value)
            dest = (page.parent / target).resolve() if target else page
            assert dest.is_file() and dest.is_relative_to(out.resolve()), (page, value)
            if frag:
                assert frag in parsed[dest].ids, (page, value)
            checked += 1
    return checked


@pytest.fixture(scope="module")
def committed_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    written = generate_site(BOARDS, out)
    return out, written


def test_committed_site_has_every_page_and_every_link_resolves(committed_site):
    out, written = committed_site
    assert sorted(p for p in out.rglob("*") if p.is_file()) == written
    pairs = read_records(BOARDS)
    by_task = group_by_task(r for _, r in pairs)
    assert (out / "index.html").is_file()
    for name in ("site.css", "site.js"):
        assert (out / "assets" / name).is_file()
    index = (out / "index.html").read_text()
    for task, records in by_task.items():
        assert f'href="{task}/index.html"' in index
        for page in ("index.html", "compare.html"):
            assert (out / task / page).is_file()
        for model in {r["model"]["name"] for r in records}:
            assert (out / task / "records" / model / "index.html").is_file()
    for path, record in pairs:
        copy_ = out / path.relative_to(BOARDS)
        assert copy_.read_bytes() == path.read_bytes()
        assert read_record(copy_) == record  # a valid record, not just bytes
    assert _check_links(out) > len(pairs)


def test_task_page_rows_plot_and_footnotes(committed_site):
    out, _ = committed_site
    records = [r for _, r in read_records(BOARDS) if r["task"] == "image-country"]
    rows = summarize(records)
    html = (out / "image-country" / "index.html").read_text()
    body = html.split('<table id="board"', 1)[1].split("</table>", 1)[0]
    assert body.count("<tr data-kind=") == len(rows)
    assert "<svg" in html and "<?xml" not in html and "<!DOCTYPE svg" not in html
    assert "<script" not in html.split("<svg", 1)[1].split("</svg>", 1)[0]
    ext = [r for r in rows if r["external_weights"]]
    assert ext and 'id="footnotes"' in html
    for r in ext:
        assert r["model"] in html and r["external_weights"][0] in html
    first = rows[0]
    mu, sd = first["test"][first["primary"]]
    assert f"{mu:.4f} ± {sd:.4f}" in body
    assert 'data-filter="kind"' in html and 'data-filter="hardware"' in html


def test_compare_page_embeds_every_seed(committed_site):
    out, _ = committed_site
    records = [r for _, r in read_records(BOARDS) if r["task"] == "spatial-celltype"]
    html = (out / "spatial-celltype" / "compare.html").read_text()
    raw = re.search(
        r'<script type="application/json" id="compare-data">(.*?)</script>', html, re.S
    ).group(1)
    data = json.loads(raw)
    rows = summarize(records)
    assert len(data["models"]) == len(rows)
    for m, row in zip(data["models"], rows):
        assert [p[0] for p in m["points"]] == row["seeds"]
        vals = [p[1][row["primary"]] for p in m["points"]]
        assert vals == row["per_seed"][row["primary"]]
    assert html.count('<option value="') >= 2 * len(rows)


def test_model_page_shows_every_seed_and_the_chosen_grid_point(committed_site):
    out, _ = committed_site
    recs = [
        r
        for _, r in read_records(BOARDS)
        if (r["task"], r["model"]["name"]) == ("image-country", "fimp-vit")
    ]
    html = (out / "image-country" / "records" / "fimp-vit" / "index.html").read_text()
    tuned = next(r for r in recs if r["seed"] == r["tuning"]["tuned_on_seed"])
    for r in recs:
        assert f'id="seed-{r["seed"]}"' in html and f'href="seed-{r["seed"]}.json"' in html
        assert r["git"]["commit"] in html and r["hardware"] in html
    assert f"grid point {tuned['tuning']['selected']} of {tuned['tuning']['budget']}" in html
    assert "DINOv2 ViT-S/14" in html and "peak memory" in html


def test_two_builds_are_byte_identical(committed_site, tmp_path):
    out, _ = committed_site
    again = tmp_path / "again"
    generate_site(BOARDS, again)
    assert _tree(again) == _tree(out)
    generate_site(BOARDS, again)  # rebuilding in place changes nothing either
    assert _tree(again) == _tree(out)


def test_small_records_folder_draws_the_missing_plot_and_leaves_the_root_alone(
    smoke_records, tmp_path
):
    src, records = smoke_records
    root = tmp_path / "boards"
    shutil.copytree(src, root)
    for p in root.glob("*/results.*"):
        p.unlink()
    before = _tree(root)
    out = tmp_path / "site"
    assert main(["site", "--root", str(root), "--out", str(out)]) == 0
    assert _tree(root) == before  # the plot was drawn in a temp folder, not into the root
    html = (out / "spatial-celltype" / "index.html").read_text()
    assert "<svg" in html and "<?xml" not in html
    for model in ("mlp", "gcn"):
        for seed in range(5):
            assert (out / "spatial-celltype" / "records" / model / f"seed-{seed}.json").is_file()
    assert _check_links(out) > 10
    assert len(records) == 10


def test_model_kinds():
    assert model_kind("gcn", external=False) == "classic GNN"
    assert model_kind("fimp-base-nomsg", external=False) == "ablation"
    assert model_kind("fimp-vit", external=True) == "pretrained weights"
    assert model_kind("fimp-base", external=False) == "FIMP"
    assert model_kind("mlp", external=False) == "no graph"
    assert model_kind("my-gnn", external=False) == "other"


def _one_record() -> dict:
    return copy.deepcopy(read_record(BOARDS / "spatial-celltype/records/mlp/seed-0.json"))


@pytest.mark.parametrize(("field", "value"), [("task", "../x"), ("model", "../../x")])
def test_names_that_leave_out_are_refused_even_past_the_schema(tmp_path, monkeypatch, field, value):
    """``safe_child`` guards every path the site builds, even for a record that bypassed
    the schema check (here by patching ``read_records``)."""
    rec = _one_record()
    if field == "task":
        rec["task"] = value
    else:
        rec["model"]["name"] = value
    root = tmp_path / "boards"
    root.mkdir()
    monkeypatch.setattr(site_mod, "read_records", lambda r: [(root / "r.json", rec)])
    with pytest.raises(RecordError, match="not a safe name"):
        generate_site(root, tmp_path / "top" / "site")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["boards"]


def test_a_symlink_in_out_that_leads_outside_is_refused(tmp_path):
    root = tmp_path / "boards"
    (root / "spatial-celltype" / "records" / "mlp").mkdir(parents=True)
    shutil.copy(
        BOARDS / "spatial-celltype/records/mlp/seed-0.json", root / "spatial-celltype/records/mlp"
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "site"
    out.mkdir()
    os.symlink(outside, out / "spatial-celltype")
    with pytest.raises(RecordError, match="outside"):
        generate_site(root, out)
    assert list(outside.iterdir()) == [] and sorted(p.name for p in out.iterdir()) == [
        "spatial-celltype"
    ]


def test_an_svg_with_a_script_is_not_inlined(tmp_path, capsys):
    root = tmp_path / "boards"
    shutil.copytree(BOARDS / "spatial-celltype", root / "spatial-celltype")
    svg = root / "spatial-celltype" / "results.svg"
    svg.write_text(svg.read_text().replace("</svg>", "<script>alert(1)</script></svg>"))
    with pytest.raises(SiteError, match="script"):
        generate_site(root, tmp_path / "site")
    assert main(["site", "--root", str(root), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.svg" in err[0]
    assert not (tmp_path / "site").exists()


def test_html_from_records_is_escaped(tmp_path):
    root = tmp_path / "boards"
    d = root / "spatial-celltype" / "records" / "mlp"
    d.mkdir(parents=True)
    rec = _one_record()
    rec["hardware"] = '<img src="https://example.org/x.png" onerror="alert(1)">'
    (d / "seed-0.json").write_text(json.dumps(rec))
    out = tmp_path / "site"
    generate_site(root, out)
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert "<img" not in text, page
    assert "&lt;img src=" in (out / "spatial-celltype" / "index.html").read_text()
    _check_links(out)
