"""A static leaderboard website generated from the records, never hand-edited.

From ``<root>/<task>/records/<model>/seed-<n>.json`` (the same records, summaries and plots as
:mod:`fimp_bench.leaderboard`), :func:`generate_site` writes under ``out``:

- ``index.html``: one row per task (family, description, primary metric, models, best model);
- ``<task>/index.html``: the task's table (mean ± std over N seeds per metric, ddof=1) that sorts
  on a click on a header and filters by model kind, mode, preset, hardware and free text; the
  task's plot (``results.svg``, inlined) and a footnote per model with external weights (†);
- ``<task>/compare.html``: two models of the task chosen from two lists, one point per common
  seed (model A's test metric against model B's) and the line y = x; the per-seed values are
  embedded in the page as JSON;
- ``<task>/records/<model>/index.html``: every seed's record (metrics, config, the chosen tuning
  point, versions, git commit, hardware, wall time, memory) beside a copy of each record JSON,
  ``<task>/records/<model>/seed-<n>.json``;
- ``assets/site.css`` and ``assets/site.js`` (the table and scatter code, no library).

Static files only: the pages work from ``file://`` and from any static server and load nothing
from the network (no CDN, no web font; a Content-Security-Policy says so to the browser). The
output is deterministic (same records, same bytes; no timestamps), every file is written
atomically, and every path made from a record's names goes through
:func:`fimp_bench.records.safe_child`. HTML is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from fimp_bench.errors import BenchConfigError, SiteError
from fimp_bench.leaderboard import (
    _METRIC_NAMES,
    EXTERNAL_MARK,
    _fmt,
    _plot,
    group_by_task,
    summarize,
)
from fimp_bench.metrics import METRIC_DIRECTIONS
from fimp_bench.records import atomic_write_text, read_records, safe_child

__all__ = ["ASSETS", "generate_site", "model_kind"]

#: Files copied verbatim from the package's ``templates/site/assets/`` to ``<out>/assets/``.
ASSETS: tuple[str, ...] = ("site.css", "site.js")

#: Top-level names of the site itself, so not usable as task names.
_RESERVED = ("api", "assets", "index.html")  # api/: the API reference (ci/scripts/build_site.sh)

#: Models without a graph (one vector per node, or the majority class).
_NO_GRAPH = ("mlp", "majority")

#: Anything in a plot SVG that would run code or load a file when the page is viewed.
_UNSAFE_SVG = re.compile(
    r"<\s*(script|foreignObject|iframe|object|embed)\b|\son[a-z]+\s*=|@import"
    r"|(href|src)\s*=\s*[\"'](?!#|data:image/)|url\(\s*[\"']?(?!#)",
    re.IGNORECASE,
)


def model_kind(registry_key: str, *, external: bool) -> str:
    """The model's kind, for the task page's filter: ``ablation``, ``classic GNN``,
    ``pretrained weights``, ``FIMP``, ``no graph`` or ``other``."""
    from fimp_bench.analysis import CLASSIC_GNNS, ROLES

    if ROLES.get(registry_key, "").startswith("ablation"):
        return "ablation"
    if registry_key in CLASSIC_GNNS:
        return "classic GNN"
    if external:
        return "pretrained weights"
    if registry_key.startswith("fimp"):
        return "FIMP"
    if registry_key in _NO_GRAPH:
        return "no graph"
    return "other"


def _num(v: float) -> str:
    """A sort key for ``data-sort`` (``""`` for NaN: such cells sort last)."""
    return "" if v != v else repr(float(v))


def _metric_label(m: str) -> str:
    arrow = "↑" if METRIC_DIRECTIONS.get(m, 1) > 0 else "↓"
    return f"{_METRIC_NAMES.get(m, m)} {arrow}"


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("fimp_bench", "templates/site"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _inline_svg(text: str, source: str) -> str:
    """The ``<svg>`` element of a plot file, without XML prolog, doctype and metadata; a
    :class:`SiteError` if it holds anything that would run or load when viewed."""
    start = text.find("<svg")
    if start < 0:
        raise SiteError(f"{source}: not an SVG file; regenerate it with `fimp-bench leaderboard`")
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", text[start:], flags=re.DOTALL)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)
    bad = _UNSAFE_SVG.search(svg)
    if bad:
        raise SiteError(
            f"{source}: the plot holds {bad.group(0).strip()!r} (a script or an external "
            "reference), refusing to inline it; regenerate it with `fimp-bench leaderboard`"
        )
    return svg.strip()


def _plot_svg(root: Path, task: str, rows: list[dict[str, Any]]) -> str:
    """The task's ``results.svg`` from ``root``, or drawn by the leaderboard's plot code."""
    path = safe_child(root, task, "results.svg")
    if path.is_file():
        return _inline_svg(path.read_text(encoding="utf-8"), str(path))
    with tempfile.TemporaryDirectory() as tmp:
        png, svg = Path(tmp) / "results.png", Path(tmp) / "results.svg"
        _plot(task, rows, png, svg)
        return _inline_svg(svg.read_text(encoding="utf-8"), f"{task} plot")


def _varying_keys(trials: list[dict[str, Any]]) -> list[str]:
    """Top-level config keys whose value differs between trials (the grid's axes)."""
    configs = [t.get("config", {}) for t in trials if isinstance(t, dict)]
    keys = sorted({k for c in configs for k in c})
    dumped = [{k: json.dumps(c.get(k), sort_keys=True) for k in keys} for c in configs]
    return [k for k in keys if len({d[k] for d in dumped}) > 1]


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _trial_rows(tuning: dict[str, Any], selected: int | None) -> list[dict[str, Any]]:
    """One row per grid point of a grid search: its varying settings, val metric, epochs."""
    trials = [t for t in tuning["trials"] if isinstance(t, dict)]
    metric = tuning.get("selection_metric", "").removeprefix("val ")
    axes = _varying_keys(trials)
    rows = []
    for i, t in enumerate(trials):
        val = t.get("val")
        val = val.get(metric) if isinstance(val, dict) else val
        rows.append(
            {
                "index": i,
                "chosen": i == selected,
                "grid": ", ".join(f"{k}={_short(t.get('config', {}).get(k))}" for k in axes)
                or "(single point)",
                "val": _fmt(val) if isinstance(val, int | float) else "n/a",
                "best_epoch": t.get("best_epoch", "n/a"),
                "epochs_run": t.get("epochs_run", "n/a"),
            }
        )
    return rows


def _record_view(
    record: dict[str, Any], metrics: list[str], tuned: dict[str, Any] | None
) -> dict[str, Any]:
    """What the model page shows of one record. ``tuned``: the record of the seed whose grid
    search chose this record's configuration (the record itself, or None if it is missing)."""
    tuning = record["tuning"]
    selected = tuning["selected"]
    tuned_on = tuning.get("tuned_on_seed", record["seed"])
    own = tuned_on == record["seed"]
    if own:
        grid_point: int | None = selected
        grid = _trial_rows(tuning, selected)
    elif tuned is not None:
        grid_point = tuned["tuning"]["selected"]
        grid = _trial_rows(tuned["tuning"], grid_point)
    else:  # only the grid's val values are in this record
        grid_point = None
        grid = [
            {
                "index": i,
                "chosen": False,
                "grid": "(in the record of seed " + str(tuned_on) + ")",
                "val": _fmt(v) if isinstance(v, int | float) else "n/a",
                "best_epoch": "n/a",
                "epochs_run": "n/a",
            }
            for i, v in enumerate(tuning.get("grid_val", []))
        ]
    test, val = record["metrics"]["test"], record["metrics"]["val"]
    peak = record["peak_memory"]
    git = record["git"]
    return {
        "seed": record["seed"],
        "json": f"seed-{record['seed']}.json",
        "preset": record["preset"],
        "mode": record["mode"],
        "fill": record["fill"],
        "test": [_fmt(test[m]) if m in test else "n/a" for m in metrics],
        "test_all": [(k, _fmt(v)) for k, v in sorted(test.items())],
        "val_all": [(k, _fmt(v)) for k, v in sorted(val.items())],
        "best_epoch": "n/a" if record["best_epoch"] is None else record["best_epoch"],
        "wall": f"{record['wall_time_s']:.1f} s",
        "memory": f"{peak['bytes'] / 2**20:,.0f} MiB",
        "memory_method": peak["method"],
        "hardware": record["hardware"],
        "device": record.get("device", "not recorded"),
        "world_size": record.get("world_size", 1),
        "commit": git["commit"],
        "commit_short": git["commit"][:12],
        "dirty": {True: "dirty", False: "clean", None: "unknown"}[git["dirty"]],
        "date": record["date"],
        "task_version": record["task_version"],
        "dataset": record["dataset"]["name"],
        "dataset_sha": record["dataset"]["sha256"],
        "split_id": record["split_id"],
        "params": f"{record['params']['trainable']:,} / {record['params']['frozen']:,}",
        "versions": sorted(record["versions"].items()),
        "external": [
            {k: _short(w[k]) for k in ("name", "sha256", "source", "file") if k in w}
            for w in record["model"]["external_weights"]
        ],
        "tuning": {
            "budget": tuning["budget"],
            "grid_point": "n/a" if grid_point is None else grid_point,
            "own": own,
            "metric": tuning.get("selection_metric", "not recorded"),
            "tuned_on_seed": tuned_on,
            "tuned_href": f"#seed-{tuned_on}" if tuned is not None else None,
            "grid": grid,
        },
        "config": json.dumps(record["config"], indent=2, sort_keys=True),
    }


def _tuned_record(
    record: dict[str, Any], same_model: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The record (of the same model, preset, mode and fill) whose grid search chose
    ``record``'s configuration: the seed named by ``tuning.tuned_on_seed``."""
    seed = record["tuning"].get("tuned_on_seed", record["seed"])
    key = (record["preset"], record["mode"], record["fill"])
    return next(
        (r for r in same_model if r["seed"] == seed and (r["preset"], r["mode"], r["fill"]) == key),
        None,
    )


def _task_pages(
    env: Any,
    root: Path,
    out: Path,
    task: str,
    records: list[dict[str, Any]],
    rows: list[dict[str, Any]],
) -> dict[Path, str]:
    """Pages of one task; ``rows`` = ``summarize(records)``."""
    from fimp_bench.tasks import TASKS

    spec = TASKS.get(task)
    metrics, primary = rows[0]["metrics"], rows[0]["primary"]
    names = Counter(r["name"] for r in rows)
    by_key = {
        (r["model"]["name"], r["preset"], r["mode"], r["fill"], r["seed"]): r for r in records
    }
    table, compare = [], []
    for r in rows:
        label = r["model"]
        if names[r["name"]] > 1:
            label += f" ({r['preset']}, {r['mode']}, fill {r['fill']})"
        table.append(
            {
                "rank": r["rank"],
                "label": label,
                "href": f"records/{r['name']}/index.html",
                "kind": model_kind(r["registry_key"], external=bool(r["external_weights"])),
                "mode": r["mode"],
                "preset": r["preset"],
                "fill": r["fill"],
                "hardware": r["hardware"],
                "n_seeds": r["n_seeds"],
                "params": f"{r['params_trainable']:,} / {r['params_frozen']:,}",
                "params_sort": r["params_trainable"],
                "cells": [
                    {
                        "text": f"{_fmt(r['test'][m][0])} ± {_fmt(r['test'][m][1])}",
                        "sort": _num(r["test"][m][0]),
                    }
                    for m in metrics
                ],
                "protocol": r["protocol"],
                "wall": f"{r['wall_time_s']:.1f} s",
                "wall_sort": _num(r["wall_time_s"]),
            }
        )
        points = []
        for seed in r["seeds"]:
            test = by_key[(r["name"], r["preset"], r["mode"], r["fill"], seed)]["metrics"]["test"]
            points.append([seed, {m: test[m] for m in metrics if m in test}])
        compare.append({"id": str(r["rank"]), "label": label, "points": points})
    ref = next((c for c, r in zip(compare, rows) if r["name"] == "fimp-base"), compare[0])
    other = next((c for c in compare if c is not ref), ref)
    filters = [
        (key, title, sorted({row[key] for row in table}))
        for key, title in (
            ("kind", "model kind"),
            ("mode", "mode"),
            ("preset", "preset"),
            ("hardware", "hardware"),
        )
    ]
    common = {
        "task": task,
        "family": spec.family if spec else "",
        "description": spec.description if spec else "",
        "metrics": [(m, _metric_label(m)) for m in metrics],
        "primary_label": _metric_label(primary),
    }
    external = [(r["model"], r["external_weights"]) for r in rows if r["external_weights"]]
    pages = {
        safe_child(out, task, "index.html"): env.get_template("task.html.j2").render(
            base="../",
            rows=table,
            filters=filters,
            external=external,
            mark=EXTERNAL_MARK,
            plot=_plot_svg(root, task, rows),
            n_models=len(names),
            presets=sorted({r["preset"] for r in rows}),
            datasets=sorted({r["dataset"] for r in rows}),
            versions=sorted({r["task_version"] for r in rows}),
            **common,
        ),
        safe_child(out, task, "compare.html"): env.get_template("compare.html.j2").render(
            base="../",
            models=compare,
            default_a=ref["id"],
            default_b=other["id"],
            primary=primary,
            data={
                "models": compare,
                "labels": {m: _METRIC_NAMES.get(m, m) for m in metrics},
                "directions": {m: METRIC_DIRECTIONS.get(m, 1) for m in metrics},
            },
            **common,
        ),
    }
    for name in sorted(names):
        recs = sorted(
            (r for r in records if r["model"]["name"] == name),
            key=lambda r: (r["preset"], r["mode"], r["fill"], r["seed"]),
        )
        pages[safe_child(out, task, "records", name, "index.html")] = env.get_template(
            "model.html.j2"
        ).render(
            base="../../../",
            model=name,
            label=next(r["model"] for r in rows if r["name"] == name),
            registry_key=recs[0]["model"]["registry_key"],
            implementation=recs[0]["model"]["implementation"],
            source=recs[0]["model"].get("source", ""),
            seeds=[_record_view(r, metrics, _tuned_record(r, recs)) for r in recs],
            **common,
        )
    return pages


def _index_row(task: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The index row of one task from its ``summarize`` rows."""
    from fimp_bench.tasks import TASKS

    spec = TASKS.get(task)
    best = rows[0]
    mu, sd = best["test"][best["primary"]]
    return {
        "task": task,
        "family": spec.family if spec else "",
        "description": spec.description if spec else "",
        "metric": _metric_label(best["primary"]),
        "n_models": len({r["name"] for r in rows}),
        "seeds": ", ".join(map(str, sorted({r["n_seeds"] for r in rows}))),
        "best": best["model"],
        "best_href": f"{task}/records/{best['name']}/index.html",
        "best_score": f"{_fmt(mu)} ± {_fmt(sd)}",
        "best_sort": _num(mu),
    }


def generate_site(root: str | Path, out: str | Path) -> list[Path]:
    """Write the leaderboard site for the records under ``root`` into ``out``; returns the
    written paths (sorted). Everything is computed before the first file is written.

    Raises :class:`SiteError` when ``root`` holds no records, when two records would become the
    same page, or when a plot SVG holds a script or an external reference;
    :class:`BenchConfigError` when ``out`` is ``root`` itself; :class:`RecordError` for a bad
    record (from :func:`fimp_bench.records.read_records`) or an unsafe name."""
    root, out = Path(root), Path(out)
    if out.resolve() == root.resolve():
        raise BenchConfigError(
            f"--out {str(out)!r} is the records folder; pass another folder, e.g. site/"
        )
    pairs = read_records(root)
    if not pairs:
        raise SiteError(
            f"{root}: no records found (expected <task>/records/<model>/seed-<n>.json); pass the "
            "leaderboards folder as --root"
        )
    sources: dict[Path, Path] = {}
    for path, r in pairs:
        if r["task"] in _RESERVED:
            raise SiteError(
                f"{path}: task name {r['task']!r} is reserved by the site (its "
                f"{', '.join(_RESERVED)}); rename the task"
            )
        dest = safe_child(out, r["task"], "records", r["model"]["name"], f"seed-{r['seed']}.json")
        if dest in sources:
            raise SiteError(
                f"{sources[dest]} and {path} are both task {r['task']!r}, model "
                f"{r['model']['name']!r}, seed {r['seed']}; keep one of them"
            )
        sources[dest] = path
    env = _environment()
    by_task = group_by_task(r for _, r in pairs)
    rows_by_task = {task: summarize(records) for task, records in by_task.items()}
    files: dict[Path, str] = {}
    for task, records in by_task.items():
        files.update(_task_pages(env, root, out, task, records, rows_by_task[task]))
    files[out / "index.html"] = env.get_template("index.html.j2").render(
        base="", tasks=[_index_row(t, rs) for t, rs in rows_by_task.items()], mark=EXTERNAL_MARK
    )
    for dest, src in sources.items():
        with open(src, encoding="utf-8", newline="") as f:
            files[dest] = f.read()
    assets = resources.files("fimp_bench").joinpath("templates", "site", "assets")
    for name in ASSETS:
        files[out / "assets" / name] = assets.joinpath(name).read_text(encoding="utf-8")
    for path in sorted(files):
        atomic_write_text(path, files[path])
    return sorted(files)
