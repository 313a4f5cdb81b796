"""The API reference site (docs/api, built by ci/scripts/build_docs.sh with -W -n): every public
name of design §3 (and of the packages' ``__all__``) has an object with its signature and
docstring, the CLI page holds every subcommand's real ``--help``, the math renders with a MathJax
served from _static, nothing is loaded from the network, every internal link resolves, and the
README example, the errors page and the tutorials are included from their sources. The three
tutorial scripts run offline on the embedded data (smoke preset)."""

from __future__ import annotations

import argparse
import html
import importlib
import inspect
import os
import posixpath
import re
import subprocess
import sys
from pathlib import Path

import pytest

# a skip here fails the full tox env (FIMP_STRICT_SKIPS=1, see the repository's conftest.py)
pytest.importorskip("sphinx")
pytest.importorskip("furo")
pytest.importorskip("myst_parser")
pytest.importorskip("sphinx-mathjax-offline")

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "api"
TUTORIALS = ("spatial", "fmri", "image")

#: The public names of design §3 (the contract), plus the methods it names.
DESIGN_NAMES = [
    "fimp.nn.CrossAttention",
    "fimp.nn.CrossAttention.forward",
    "fimp.nn.FIMPConv",
    "fimp.nn.FIMPConv.forward",
    "fimp.nn.FIMPConv.reset_parameters",
    "fimp.models.FIMP",
    "fimp.create_model",
    "fimp.list_models",
    "fimp.register_model",
    "fimp.tokenizers.GeneTokenizer",
    "fimp.tokenizers.TimeSeriesPatchTokenizer",
    "fimp.tokenizers.ImagePatchTokenizer",
    "fimp.pretrained.load_timm_vit",
    "fimp.pretrained.load_scgpt",
    "fimp.pretrained.load_brainlm",
    "fimp.pretrained.load_genept",
    "fimp.pretrained.load_bert",
    "fimp.embed",
    "fimp.interpret.attention_maps",
    "fimp_data.list_datasets",
    "fimp_data.load",
    "fimp_data.read_h5ad",
    "fimp_data.read_parcel_timeseries",
    "fimp_data.read_nifti",
    "fimp_data.read_image_folder",
    "fimp_data.knn_graph",
    "fimp_data.radius_graph",
    "fimp_data.delaunay_graph",
    "fimp_data.random_split",
    "fimp_data.spatial_block_split",
    "fimp_data.group_split",
    "fimp_bench.train.run_benchmark",
]

#: Modules whose whole ``__all__`` must be on the site (submodules listed there are pages' sections).
ALL_OF = [
    "fimp.nn",
    "fimp.tokenizers",
    "fimp.models",
    "fimp.pretrained",
    "fimp.interpret",
    "fimp.errors",
    "fimp_data",
    "fimp_data.errors",
    "fimp_bench.tasks",
    "fimp_bench.models",
    "fimp_bench.train",
    "fimp_bench.records",
    "fimp_bench.metrics",
    "fimp_bench.leaderboard",
    "fimp_bench.validate",
    "fimp_bench.explain",
    "fimp_bench.analysis",
    "fimp_bench.distributed",
    "fimp_bench.cli",
    "fimp_bench.errors",
]

_TAG = re.compile(r"<[^>]+>")


def _text(fragment: str) -> str:
    return html.unescape(_TAG.sub("", fragment))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    res = subprocess.run(
        ["bash", str(ROOT / "ci" / "scripts" / "build_docs.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert res.returncode == 0, f"sphinx -W -n failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    return out


@pytest.fixture(scope="module")
def inventory(site) -> dict[str, str]:
    """Object name -> page#anchor, from the site's objects.inv."""
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as fh:
        inv = InventoryFile.load(fh, "", posixpath.join)
    return {
        name: item.uri if hasattr(item, "uri") else item[2]
        for kind, items in inv.items()
        if kind.startswith("py:")
        for name, item in items.items()
    }


def _resolve(name: str):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def _public_names() -> list[str]:
    names = set(DESIGN_NAMES)
    for mod in ALL_OF:
        module = importlib.import_module(mod)
        public = getattr(module, "__all__", None)
        if public is None:  # no __all__ (the errors modules): what the module defines itself
            public = [
                n
                for n, v in vars(module).items()
                if not n.startswith("_") and getattr(v, "__module__", None) == mod
            ]
        names.update(f"{mod}.{a}" for a in public if not inspect.ismodule(getattr(module, a)))
    return sorted(names)


def _entry(site: Path, uri: str) -> tuple[str, str]:
    """(signature text, the following description text) of the object at ``uri``."""
    page, anchor = uri.split("#")
    doc = (site / page).read_text()
    start = doc.index(f'id="{anchor}"')
    dt_end = doc.index("</dt>", start)
    return _text(doc[start:dt_end]), _text(doc[dt_end : dt_end + 4000])


@pytest.mark.parametrize("name", _public_names())
def test_public_name_has_an_object_with_signature_and_docstring(site, inventory, name):
    assert name in inventory, f"{name} is not documented in docs/api (no objects.inv entry)"
    signature, description = _entry(site, inventory[name])
    obj = _resolve(name)
    doc = inspect.getdoc(obj) if callable(obj) or inspect.isclass(obj) else None
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj):
        assert obj.__doc__, f"{name} has no docstring"
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            params = {}
        for p in params:
            if p not in ("self", "cls"):
                assert p in signature, f"{name}: parameter {p!r} missing from {signature!r}"
    if doc:
        summary = re.sub(r":[a-z]+(?::[a-z]+)?:`~?", "`", doc.splitlines()[0])  # :func:`x` -> x
        words = re.findall(r"[A-Za-z]{4,}", summary)[:3]
        flat = " ".join(description.split())
        for w in words:
            assert w in flat, f"{name}: docstring word {w!r} not in its description"


def _help_texts() -> dict[str, str]:
    from fimp_bench.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        texts = {"": parser.format_help()}
        texts.update({n: p.format_help() for n, p in sub.choices.items()})
    finally:
        if old is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = old
    return texts


def test_cli_page_holds_every_subcommand_help(site):
    page = (site / "cli.html").read_text()
    blocks = [_text(b) for b in re.findall(r"<pre>(.*?)</pre>", page, flags=re.S)]
    texts = _help_texts()
    assert {"run", "list", "leaderboard", "validate", "explain"} <= set(texts)
    for name, text in texts.items():
        assert any(text.strip() == b.strip() for b in blocks), f"`fimp-bench {name} --help` differs"
        if name:
            assert f'id="fimp-bench-{name}"' in page
    assert "spatial-expression" in page and "fimp-base" in page  # list tasks / list models


def test_math_renders_with_the_local_mathjax(site):
    page = (site / "reference" / "fimp.html").read_text()
    assert 'class="math' in page and r"\mathrm{AGGREGATE}" in page  # FIMPConv's equation
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page)
    assert scripts, "no MathJax script on a page with math"
    for src in scripts:
        assert not re.match(r"(https?:)?//", src), src
        path = (site / "reference" / src.split("?")[0]).resolve()
        assert path.is_file() and path.is_relative_to(site / "_static"), path
    fonts = site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert any(fonts.glob("*.woff")), "MathJax's CHTML fonts are not served locally"


_EXTERNAL = re.compile(r"^\s*(https?:)?//", re.I)
_RESOURCE = re.compile(
    r"<(script|img|iframe|source|audio|video|embed|track)\b[^>]*?\s(?:src|data)=\"([^\"]*)\"", re.I
)
_LINK = re.compile(r"<link\b[^>]*>", re.I)


def test_no_resource_is_loaded_from_the_network(site):
    bad = []
    for page in site.rglob("*.html"):
        doc = page.read_text()
        bad += [(page.name, m[1]) for m in _RESOURCE.findall(doc) if _EXTERNAL.match(m[1])]
        for tag in _LINK.findall(doc):
            href = re.search(r'href="([^"]*)"', tag)
            if href and _EXTERNAL.match(href[1]):
                bad.append((page.name, href[1]))
        bad += [(page.name, u) for u in re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]+)", doc)]
    for css in site.rglob("*.css"):
        text = css.read_text(errors="replace")
        bad += [
            (css.name, u)
            for u in re.findall(r"@import\s+(?:url\()?['\"]?((?:https?:)?//\S+)", text)
        ]
        bad += [(css.name, u) for u in re.findall(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]+)", text)]
    assert not bad, f"external resources: {bad[:20]}"


def test_every_internal_link_resolves(site):
    ids: dict[Path, set[str]] = {}
    missing = []
    for page in site.rglob("*.html"):
        doc = page.read_text()
        for ref in re.findall(r'(?:href|src)="([^"]*)"', doc):
            ref = html.unescape(ref)
            if not ref or _EXTERNAL.match(ref) or re.match(r"^[a-z]+:", ref):
                continue
            target, _, fragment = ref.partition("#")
            target = target.split("?")[0]
            path = (page.parent / target).resolve() if target else page
            if not path.exists():
                missing.append((str(page.relative_to(site)), ref))
                continue
            if fragment and path.suffix == ".html":
                if path not in ids:
                    ids[path] = set(re.findall(r'\sid="([^"]*)"', path.read_text()))
                if fragment not in ids[path]:
                    missing.append((str(page.relative_to(site)), ref))
    assert not missing, f"{len(missing)} broken internal links, e.g. {missing[:10]}"


def test_readme_example_page_is_the_readme_snippet(site):
    readme = (ROOT / "README.md").read_text()
    m = re.search(
        r"<!-- example:start -->\s*```python\n(.*?)```\s*<!-- example:end -->", readme, re.S
    )
    assert m, "README.md must hold the example between example:start/end markers"
    page = (site / "example.html").read_text()
    blocks = [_text(b) for b in re.findall(r"<pre>(.*?)</pre>", page, flags=re.S)]
    assert any(m.group(1).strip() == b.strip() for b in blocks)
    # and the README example itself runs in fimp-core's tests
    test = ROOT / "packages" / "fimp-core" / "tests" / "test_models_fimp.py"
    assert "def test_readme_training_example_runs_and_learns" in test.read_text()


def test_errors_page_includes_docs_errors(site):
    classes = re.findall(r"^\| `(\w+)` \|", (ROOT / "docs" / "errors.md").read_text(), re.M)
    page = _text((site / "errors.html").read_text())
    assert len(classes) > 20
    for name in classes:
        assert name in page, name


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_page_includes_its_script(site, name):
    code = (DOCS / "tutorials" / f"{name}.py").read_text()
    code = code[code.index("import sys") :]
    page = (site / "tutorials" / f"{name}.html").read_text()
    blocks = [_text(b) for b in re.findall(r"<pre>(.*?)</pre>", page, flags=re.S)]
    assert any(code.strip() == b.strip() for b in blocks), f"tutorials/{name}.html lacks {name}.py"


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_script_runs_offline(tmp_path, name):
    res = subprocess.run(
        [sys.executable, str(DOCS / "tutorials" / f"{name}.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "test " in res.stdout and "records under" in res.stdout
    family = {"spatial": 2, "fmri": 1, "image": 3}[name]
    tasks = {p.parent.parent.parent.name for p in tmp_path.glob("*/records/*/seed-0.json")}
    assert len(tasks) == family, (tasks, res.stdout[-2000:])
    models = {p.parent.name for p in tmp_path.glob("*/records/*/seed-0.json")}
    assert models == {"mlp", "gcn", "fimp-base"}
