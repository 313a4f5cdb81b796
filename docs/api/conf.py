"""Sphinx configuration of the FIMP API reference (``ci/scripts/build_docs.sh OUT`` builds it).

Offline by construction: no intersphinx (no network at build time), MathJax served from
``_static/mathjax`` (the ``sphinx-mathjax-offline`` package bundles MathJax 3), the furo theme
with system fonts only. The three packages are imported from this checkout's ``src`` folders, so
the pages describe the code next to them (signatures and type hints as Python sees them).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for pkg in ("fimp-core", "fimp-data", "fimp-bench"):
    sys.path.insert(0, str(ROOT / "packages" / pkg / "src"))
sys.path.insert(0, str(HERE / "_ext"))

project = "FIMP"
author = "FIMP contributors"
copyright = "FIMP contributors"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # sets mathjax_path to its bundled copy, copied into _static/
    "myst_parser",
    "fimp_cli_help",  # _ext/: the fimp-bench --help texts from the real argparse parser
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "tutorials/*.py"]
templates_path: list[str] = []

# -- autodoc ----------------------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # show `heads=4`, not the evaluated default object
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = False  # torch.nn.Module's docstrings are not ours
autoclass_content = "class"
autosummary_generate = False
add_module_names = False
python_display_short_literal_types = True

# -- napoleon: the docstrings are Google style (Args:, Returns:, Raises:, Attributes:) ---------
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_custom_sections = [("Shapes", "notes_style")]

# -- MyST (Markdown pages: tutorials, the README example, docs/errors.md) ------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# -- nitpicky: every reference to FIMP's own objects must resolve. Third-party types (torch,
# numpy, PyG, ...) have no inventory offline (intersphinx would need the network), so only those
# are ignored, by package prefix.
nitpicky = True
_THIRD_PARTY = (
    r"torch|nn|F|np|numpy|pd|pandas|scipy|sklearn|anndata|torch_geometric|Data|Tensor|"
    r"pathlib|Path|os|pickle|argparse|collections|typing|dataclasses|enum|abc|io|json|datetime|"
    r"matplotlib|timm|onnx|safetensors|huggingface_hub|transformers|nibabel|PIL|yaml"
)
nitpick_ignore_regex = [
    (r"py:.*", rf"(?:{_THIRD_PARTY})(?:\..*)?"),
]
nitpick_ignore = [("py:class", "fimp.models.registry.F")]  # a TypeVar of register_model

# -- HTML -----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = "FIMP API reference"
html_static_path: list[str] = []
html_last_updated_fmt = None
html_show_sourcelink = False
html_copy_source = False
html_show_sphinx = False  # no "made with" footer links to external sites
html_show_search_summary = False  # summaries fetch() each hit page: refused from file://
html_theme_options = {
    "navigation_with_keys": True,
}


# -- references: the docstrings name sibling objects by their short name (``:class:`RecordError```
# in fimp_bench.records means fimp_bench.errors.RecordError). A short name that is not in the
# current module is looked up among all documented objects; it resolves only when exactly one has
# that name (two give Sphinx's "more than one target" warning, which fails the build).


def _resolve_short_name(app, env, node, contnode):
    if node.get("refdomain") != "py" or node.get("refspecific"):
        return None
    node["refspecific"] = True
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], node["reftarget"], node, contnode
    )


def setup(app):
    app.connect("missing-reference", _resolve_short_name)
