"""docs/errors.md lists every typed error of the three packages, under the right base class,
and the interrupt exit status it documents is what the CLI returns."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "errors.md"
MODULES = {
    "fimp": [
        "fimp.errors",
        "fimp.interpret",
        "fimp.tokenizers.timeseries",
        "fimp.tokenizers.gene",
        "fimp.pretrained.genept",
    ],
    "fimp_data": ["fimp_data.errors"],
    "fimp_bench": ["fimp_bench.errors"],
}
BASES = {"fimp": "FIMPError", "fimp_data": "FIMPDataError", "fimp_bench": "BenchError"}


def _sections() -> dict[str, str]:
    text = DOC.read_text()
    parts = re.split(r"^## `(\w+)`.*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.parametrize("package", sorted(MODULES))
def test_every_error_class_is_documented_with_its_parent(package):
    section = _sections()[package]
    rows = dict(re.findall(r"^\| `(\w+)` \| `(\w+)` \|", section, flags=re.M))
    base = getattr(importlib.import_module(MODULES[package][0]), BASES[package])
    found = {}
    for mod in MODULES[package]:
        for name, cls in inspect.getmembers(importlib.import_module(mod), inspect.isclass):
            if issubclass(cls, base) and cls.__module__ == mod and not name.startswith("_"):
                found[name] = cls
    assert set(found) == set(rows), f"docs/errors.md ({package}) and the code disagree"
    for name, cls in found.items():
        parents = {b.__name__ for b in cls.__mro__[1:]}
        assert rows[name] in parents, f"{name}: documented as a {rows[name]}, is {parents}"


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import fimp_bench.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["list"].set_defaults(func=interrupted)
    assert cli.main(["list", "tasks"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0]
