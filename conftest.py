"""Repository-wide pytest hooks.

In the full tox environment every optional dependency is installed, so a skipped test there can only
hide a missing feature: with FIMP_STRICT_SKIPS=1 a skip is reported as a failure. (The fimp-core-only
environment legitimately skips tests of the optional extras: timm, onnx, safetensors.)
Also registers the ``browser`` marker (tests that drive a real browser).
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("FIMP_STRICT_SKIPS") == "1"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "browser: drives a real browser (Playwright + the system Chromium); the `site` tox env "
        'runs these (`-m browser`), the `full` env the rest (`-m "not browser"`)',
    )


def _fail_skip(report) -> None:
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in the full environment (FIMP_STRICT_SKIPS=1): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip(outcome.get_result())
