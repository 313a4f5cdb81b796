"""Sphinx extension: the ``fimp-bench`` help texts, generated from the real argparse parser.

``.. fimp-bench-help::`` renders ``fimp-bench --help`` and then one section per subcommand (id
``fimp-bench-<name>``) with that subcommand's ``--help`` text, taken from
:func:`fimp_bench.cli.build_parser` at build time, so the page cannot drift from the code: a new
subcommand gets its section without editing the page. ``.. fimp-bench-output:: list tasks``
renders what that command prints.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os

from docutils import nodes
from docutils.parsers.rst import Directive

WIDTH = "100"  # argparse wraps at $COLUMNS - 2: fixed, so the page is the same on every machine


@contextlib.contextmanager
def _fixed_terminal():
    old = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
    os.environ.update(COLUMNS=WIDTH, NO_COLOR="1")
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Name -> parser of each subcommand, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def help_texts() -> dict[str, str]:
    """``{"": fimp-bench --help, "run": fimp-bench run --help, ...}`` at the fixed width."""
    from fimp_bench.cli import build_parser

    with _fixed_terminal():
        parser = build_parser()
        texts = {"": parser.format_help()}
        texts.update({name: sub.format_help() for name, sub in subcommands(parser).items()})
    return texts


def _literal(text: str) -> nodes.literal_block:
    block = nodes.literal_block(text, text)
    block["language"] = "text"
    return block


class FimpBenchHelp(Directive):
    has_content = False

    def run(self) -> list[nodes.Node]:
        texts = help_texts()
        out: list[nodes.Node] = [_literal(texts.pop(""))]
        for name, text in texts.items():
            sid = f"fimp-bench-{name}"
            section = nodes.section(ids=[sid], names=[sid])
            section += nodes.title(text="", children=[nodes.literal(text=f"fimp-bench {name}")])
            section += _literal(text)
            self.state.document.note_implicit_target(section, section)
            out.append(section)
        return out


class FimpBenchOutput(Directive):
    """What ``fimp-bench <arguments>`` prints (e.g. ``list tasks``)."""

    required_arguments = 1
    final_argument_whitespace = True

    def run(self) -> list[nodes.Node]:
        from fimp_bench.cli import main

        buf = io.StringIO()
        with _fixed_terminal(), contextlib.redirect_stdout(buf):
            status = main(self.arguments[0].split())
        if status:
            raise self.error(f"fimp-bench {self.arguments[0]} exited with status {status}")
        return [_literal(buf.getvalue())]


def setup(app):
    app.add_directive("fimp-bench-help", FimpBenchHelp)
    app.add_directive("fimp-bench-output", FimpBenchOutput)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
