"""Submission validation (``fimp-bench validate PATH``).

A submission is a folder laid out like ``leaderboards/``: ``<task>/records/<model>/seed-<n>.json``
plus the model's code registered in the bench (built-in or through the ``fimp_bench.models``
entry-point group). Every problem is reported, each with its kind and file:

- ``empty``: no record files found;
- ``json`` / ``schema``: a file is not JSON or does not match the record schema;
- ``location``: the file's path disagrees with the task / model / seed inside it;
- ``unknown-task``: the record's task is not a bench task;
- ``unregistered-model``: the record's model (registry key) is not registered;
- ``distinct-seeds``: two records of one (task, model) carry the same seed;
- ``seed-count``: fewer than ``min_seeds`` distinct seeds for a (task, model);
- ``duplicate``: a (task, model, seed) already exists in the leaderboards being submitted to;
- ``task-version``: the records of one task carry different task versions (a task's protocol
  changed between them: a table compares one version; re-run the older records);
- ``smoke``: the re-run of one seed on the tiny ``smoke`` preset with the submitted config failed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fimp_bench.records import schema_problems

__all__ = ["Problem", "ValidationReport", "validate_submission"]


@dataclass(frozen=True)
class Problem:
    """One problem: ``kind`` (see the module docstring), the file or group, and the message."""

    kind: str
    where: str
    message: str


@dataclass
class ValidationReport:
    """All problems found, and what passed."""

    problems: list[Problem] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def render(self) -> str:
        lines = [f"ok: {p}" for p in self.passed]
        lines += [f"PROBLEM [{p.kind}] {p.where}: {p.message}" for p in self.problems]
        verdict = "submission is valid" if self.ok else f"{len(self.problems)} problem(s) found"
        return "\n".join([*lines, verdict])


def _smoke(record: dict[str, Any]) -> str | None:
    """Re-run ``record``'s (task, model, seed) with its config on the smoke preset; an error
    message or None."""
    import torch

    from fimp_bench.models import get_model
    from fimp_bench.models.registry import ModelSpec
    from fimp_bench.tasks import get_preset, get_task
    from fimp_bench.train import run_seed

    try:
        task = get_task(record["task"])
        spec = get_model(record["model"]["registry_key"])
        tuned = ModelSpec(**{**spec.__dict__, "defaults": dict(record["config"]), "grid": ({},)})
        prep = task.prepare(
            seed=int(record["seed"]),
            preset=get_preset("smoke"),
            fill=(record["fill"] if record["fill"] in task.fill_strategies else "mean"),
        )
        result = run_seed(prep, tuned, device=torch.device("cpu"), progress=False, budget=1)
    except Exception as e:  # report any failure of the submitted code as a problem
        return f"{type(e).__name__}: {e}"
    bad = [k for k, v in result.test.items() if not math.isfinite(v)]
    if bad:
        return f"non-finite test metrics {bad} on the smoke preset"
    return None


def validate_submission(
    path: str | Path,
    *,
    min_seeds: int = 5,
    smoke: bool = True,
    existing: str | Path | None = None,
) -> ValidationReport:
    """Check a submission folder; returns a :class:`ValidationReport` (``.ok``, ``.problems``)."""
    from fimp_bench.models import list_models
    from fimp_bench.tasks import TASKS

    root = Path(path)
    report = ValidationReport()
    files = sorted(root.glob("*/records/*/*.json"))
    if not files:
        report.problems.append(
            Problem(
                "empty",
                str(root),
                "no records found; expected <task>/records/<model>/seed-<n>.json",
            )
        )
        return report
    registered = set(list_models())
    groups: dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    for f in files:
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            report.problems.append(
                Problem("json", str(f), f"not UTF-8 text (byte {e.start}: {e.reason})")
            )
            continue
        except json.JSONDecodeError as e:
            report.problems.append(Problem("json", str(f), f"not valid JSON: {e}"))
            continue
        except OSError as e:
            report.problems.append(Problem("json", str(f), f"cannot be read: {e.strerror or e}"))
            continue
        probs = schema_problems(rec)
        if probs:
            report.problems.append(
                Problem("schema", str(f), "; ".join(probs[:8]) + (" ..." if len(probs) > 8 else ""))
            )
            continue
        task, model, seed = rec["task"], rec["model"]["name"], rec["seed"]
        expected = Path(task) / "records" / model / f"seed-{seed}.json"
        if f.relative_to(root) != expected:
            report.problems.append(
                Problem(
                    "location",
                    str(f),
                    f"record says {task}/{model}/seed {seed}; move it to {expected}",
                )
            )
        if task not in TASKS:
            report.problems.append(
                Problem(
                    "unknown-task",
                    str(f),
                    f"task {task!r} is not a bench task ({', '.join(TASKS)})",
                )
            )
        if rec["model"]["registry_key"] not in registered:
            report.problems.append(
                Problem(
                    "unregistered-model",
                    str(f),
                    f"model {rec['model']['registry_key']!r} is not registered; register it through "
                    "the 'fimp_bench.models' entry-point group (see CONTRIBUTING.md)",
                )
            )
        groups[(task, model)].append((f, rec))
    existing_keys: set[tuple[str, str, int]] = set()
    existing_versions: dict[str, set[str]] = defaultdict(set)
    if existing is not None and Path(existing).resolve() != root.resolve():
        for f in Path(existing).glob("*/records/*/*.json"):
            try:
                r = json.loads(f.read_text(encoding="utf-8"))
                existing_keys.add((r["task"], r["model"]["name"], int(r["seed"])))
                existing_versions[r["task"]].add(str(r["task_version"]))
            except (OSError, ValueError, KeyError, TypeError):  # ValueError: JSON and UTF-8 errors
                continue
    versions: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for (task, model), items in groups.items():
        for _, r in items:
            if model not in versions[task][r["task_version"]]:
                versions[task][r["task_version"]].append(model)
    for task, by_version in sorted(versions.items()):
        others = sorted(existing_versions.get(task, set()) - set(by_version))
        if others:
            report.problems.append(
                Problem(
                    "task-version",
                    task,
                    f"the leaderboards hold task version(s) {', '.join(others)}, this submission "
                    f"{', '.join(sorted(by_version))}; a leaderboard compares one version",
                )
            )
        if len(by_version) > 1:
            parts = "; ".join(
                f"{v}: {', '.join(sorted(ms))}" for v, ms in sorted(by_version.items())
            )
            report.problems.append(
                Problem(
                    "task-version",
                    task,
                    f"records of several task versions ({parts}); a leaderboard compares one "
                    "version: re-run the older records with the current bench",
                )
            )
    for (task, model), items in sorted(groups.items()):
        where = f"{task}/{model}"
        seeds = [r["seed"] for _, r in items]
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            report.problems.append(
                Problem("distinct-seeds", where, f"seed(s) {dup} appear in more than one record")
            )
        if len(set(seeds)) < min_seeds:
            report.problems.append(
                Problem(
                    "seed-count",
                    where,
                    f"{len(set(seeds))} distinct seed(s); at least {min_seeds} required",
                )
            )
        for s in sorted(set(seeds)):
            if (task, model, s) in existing_keys:
                report.problems.append(
                    Problem(
                        "duplicate",
                        where,
                        f"seed {s} is already in the leaderboards; use new seeds or a new model name",
                    )
                )
        if smoke and task in TASKS and items[0][1]["model"]["registry_key"] in registered:
            first = min(items, key=lambda it: it[1]["seed"])[1]
            err = _smoke(first)
            if err:
                report.problems.append(
                    Problem("smoke", where, f"smoke re-run of seed {first['seed']} failed: {err}")
                )
            else:
                report.passed.append(f"{where}: smoke re-run of seed {first['seed']}")
        report.passed.append(f"{where}: {len(items)} record(s), seeds {sorted(set(seeds))}")
    return report
