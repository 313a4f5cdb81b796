"""Typed errors raised by fimp_bench. Every message names the problem and how to fix it."""

from __future__ import annotations


class BenchError(Exception):
    """Base class of every error fimp_bench raises on purpose."""


class UnknownNameError(BenchError, KeyError):
    """A task, family, model or dataset name is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BenchConfigError(BenchError, ValueError):
    """An option, preset or model configuration is invalid."""


class RecordError(BenchError, ValueError):
    """A result record does not match the record schema."""


class SubmissionError(BenchError, ValueError):
    """A submission failed validation (the message lists every problem found)."""


class LeaderboardCheckError(BenchError, RuntimeError):
    """Regenerated leaderboards differ from the committed ones."""


class SiteError(BenchError, ValueError):
    """``fimp-bench site``: the records cannot be published as a site (no records, two records
    for the same page, a plot SVG that holds scripts or external references)."""
