"""Leaderboards generated from records, never hand-edited.

For every ``<root>/<task>/records/<model>/seed-<n>.json``: ``<root>/<task>/README.md`` (table),
``results.csv``, ``results.png`` and ``results.svg`` (plot), ``<root>/README.md`` (index) and
``<root>/ANALYSIS.md`` with ``<root>/analysis/`` (paired per-seed tests and learning curves, see
:mod:`fimp_bench.analysis`).
Each cell is mean +- standard deviation over seeds with ``ddof=1`` (the sample standard deviation);
N = number of seeds. Rows whose model uses external pretrained weights or data carry a dagger in
the model name (OGB-style) and a footnote naming the weights. ``check`` regenerates everything in
a temporary folder and compares byte for byte with what is there.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fimp_bench.errors import LeaderboardCheckError
from fimp_bench.metrics import METRIC_DIRECTIONS
from fimp_bench.records import atomic_write_text, read_records, safe_child, save_figure

__all__ = ["check", "generate", "group_by_task", "summarize"]

_METRIC_NAMES = {"mse": "MSE", "r2": "R^2", "accuracy": "accuracy", "macro_f1": "macro-F1"}
EXTERNAL_MARK = "†"


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


def _fmt(v: float, digits: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _protocol(record: dict[str, Any]) -> str:
    """``epochs min-max, patience p`` from the record's training protocol (or ``zero-shot``)."""
    if record["mode"] == "zero-shot":
        return "no training"
    t = record.get("task_info", {}).get("training")
    if not t:
        return "not recorded"
    if t["min_epochs"] >= t["max_epochs"]:
        text = f"{t['max_epochs']} ep, no early stop"
    else:
        text = f"{t['min_epochs']}-{t['max_epochs']} ep, patience {t['patience']}"
    if t.get("overrides"):  # fimp-bench run --max-epochs / --tuning-budget
        text += (
            " (preset overridden: "
            + ", ".join(f"{k}={v}" for k, v in sorted(t["overrides"].items()))
            + ")"
        )
    return text


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, preset, mode, fill, dataset) of one task's records, best primary metric
    first. Records of one model on two datasets (``fimp-bench run --dataset``) are two rows, never
    averaged together; the table then gets a dataset column."""
    from fimp_bench.tasks import TASKS

    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        key = (r["model"]["name"], r["preset"], r["mode"], r["fill"], r["dataset"]["name"])
        groups[key].append(r)
    task_name = records[0]["task"]
    task = TASKS.get(task_name)
    metrics = list(task.metrics) if task else sorted(records[0]["metrics"]["test"])
    primary = task.primary_metric if task else metrics[0]
    rows = []
    for (model, preset, mode, fill, _dataset), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        ext = rs[0]["model"]["external_weights"]
        row: dict[str, Any] = {
            "model": model + (f" {EXTERNAL_MARK}" if ext else ""),
            "name": model,
            "registry_key": rs[0]["model"]["registry_key"],
            "preset": preset,
            "mode": mode,
            "fill": fill,
            "n_seeds": len(rs),
            "seeds": [r["seed"] for r in rs],
            "params_trainable": rs[0]["params"]["trainable"],
            "params_frozen": rs[0]["params"]["frozen"],
            "hardware": "; ".join(sorted({r["hardware"] for r in rs})),
            "implementation": rs[0]["model"]["implementation"],
            "external_weights": [f"{w['name']} (sha256 {w['sha256'][:12]})" for w in ext],
            "task_version": rs[0]["task_version"],
            "dataset": rs[0]["dataset"]["name"],
            "wall_time_s": float(np.mean([r["wall_time_s"] for r in rs])),
            "protocol": _protocol(rs[0]),
            "test": {},
            "per_seed": {},
        }
        for m in metrics:
            vals = [r["metrics"]["test"][m] for r in rs if m in r["metrics"]["test"]]
            row["test"][m] = _mean_std(vals) if vals else (float("nan"), float("nan"))
            row["per_seed"][m] = vals
        rows.append(row)
    sign = METRIC_DIRECTIONS.get(primary, 1)
    rows.sort(
        key=lambda r: (
            -sign * np.nan_to_num(r["test"][primary][0], nan=-np.inf * sign),
            r["model"],
            r["dataset"],
        )
    )
    for i, row in enumerate(rows):
        row["rank"] = i + 1
        row["primary"] = primary
        row["metrics"] = metrics
    return rows


def group_by_task(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by task, registered tasks first (registry order), then the others by name;
    the order of every generated index (leaderboards, analysis, site)."""
    from fimp_bench.tasks import TASKS

    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    order = [t for t in TASKS if t in by_task] + sorted(t for t in by_task if t not in TASKS)
    return {t: by_task[t] for t in order}


def _readme(task_name: str, rows: list[dict[str, Any]]) -> str:
    from fimp_bench.tasks import TASKS

    task = TASKS.get(task_name)
    metrics = rows[0]["metrics"]
    lines = [f"# Leaderboard: {task_name}", ""]
    lines.append("<!-- generated by `fimp-bench leaderboard` from records/; do not edit -->")
    lines.append("")
    if task:
        lines += [task.description, ""]
    presets = sorted({r["preset"] for r in rows})
    datasets = sorted({r["dataset"] for r in rows})
    lines.append(
        f"Dataset: {', '.join(datasets)}. Task version: "
        f"{', '.join(sorted({r['task_version'] for r in rows}))}. Presets: {', '.join(presets)}."
    )
    lines.append("")
    if "quick" in presets:
        lines.append(
            "**Quick-preset rows are CPU numbers on the small embedded dataset** (2-core CPU, short "
            "training, tuning grid searched on the first seed): they check that the pipeline works "
            "and rank models on small data; they are not paper-scale results (run `--preset full`)."
        )
        lines.append("")
    lines.append(
        "Cells: test-split mean ± standard deviation over N seeds (sample std, ddof=1). "
        "#params = trainable / frozen (`sum(p.numel())`). Epochs: the training budget; every model "
        "keeps its best-validation epoch ('min-max ep, patience p': early stopping on the "
        "validation metric after min epochs; 'not recorded': a record written before the "
        "protocol was stored). Sorted by "
        f"{_METRIC_NAMES.get(rows[0]['primary'], rows[0]['primary'])}."
    )
    lines.append("")
    several = len(datasets) > 1
    head = ["rank", "model", *(["dataset"] if several else [])]
    head += [*(_METRIC_NAMES.get(m, m) for m in metrics), "N", "#params", "mode"]
    head += ["fill", "preset", "epochs", "mean wall time / seed", "hardware"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        cells = [str(r["rank"]), f"`{r['model']}`", *([r["dataset"]] if several else [])]
        for m in metrics:
            mu, sd = r["test"][m]
            cells.append(f"{_fmt(mu)} ± {_fmt(sd)}")
        cells += [
            str(r["n_seeds"]),
            f"{r['params_trainable']:,} / {r['params_frozen']:,}",
            r["mode"],
            r["fill"],
            r["preset"],
            r["protocol"],
            f"{r['wall_time_s']:.1f} s",
            r["hardware"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    ext = [r for r in rows if r["external_weights"]]
    if ext:
        lines.append(f"{EXTERNAL_MARK} uses external pretrained weights or data:")
        lines.append("")
        for r in ext:
            lines.append(f"- `{r['model']}`: {', '.join(r['external_weights'])}")
        lines.append("")
    if task:
        have = {r["name"] for r in rows}
        absent = [m for m in task.default_models if m not in have]
        if absent:
            names = ", ".join(f"`{m}`" for m in absent)
            lines.append(
                f"**Not on this board:** default model(s) of {task_name} without records here: "
                f"{names}. Add them with `fimp-bench run --task {task_name} --model "
                f"{','.join(absent)}` (see `leaderboards/CONTRIBUTING.md`)."
            )
            lines.append("")
    lines.append(
        "Per-seed records: [`records/`](records/). Plot: [`results.png`](results.png) "
        "([SVG](results.svg)). Table as CSV: [`results.csv`](results.csv)."
    )
    lines.append("")
    lines.append("![results](results.png)")
    lines.append("")
    return "\n".join(lines)


def _csv(rows: list[dict[str, Any]]) -> str:
    metrics = rows[0]["metrics"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["rank", "model", "registry_key", "dataset", "preset", "mode", "fill", "n_seeds"]
    head += ["seeds"]
    for m in metrics:
        head += [f"{m}_mean", f"{m}_std"]
    head += ["params_trainable", "params_frozen", "implementation", "external_weights", "hardware"]
    w.writerow(head)
    for r in rows:
        line = [r["rank"], r["model"], r["registry_key"], r["dataset"], r["preset"], r["mode"]]
        line += [r["fill"]]
        line += [r["n_seeds"], " ".join(map(str, r["seeds"]))]
        for m in metrics:
            mu, sd = r["test"][m]
            line += [f"{mu:.6g}", "" if math.isnan(sd) else f"{sd:.6g}"]
        line += [r["params_trainable"], r["params_frozen"], r["implementation"]]
        line += ["; ".join(r["external_weights"]), r["hardware"]]
        w.writerow(line)
    return buf.getvalue()


def _plot(task_name: str, rows: list[dict[str, Any]], png: Path, svg: Path) -> None:
    """Per-seed points and mean ± std of the primary test metric per model (Agg, deterministic)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    primary = rows[0]["primary"]
    rc = {"svg.hashsalt": "fimp-bench", "svg.fonttype": "none", "font.family": "DejaVu Sans"}
    with plt.rc_context(rc):
        fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.4))
        several = len({r["dataset"] for r in rows}) > 1
        labels = [
            f"{r['model']} ({r['preset']}" + (f", {r['dataset']})" if several else ")")
            for r in rows
        ][::-1]
        for y, r in enumerate(rows[::-1]):
            vals = r["per_seed"][primary]
            mu, sd = r["test"][primary]
            ax.scatter(vals, [y] * len(vals), s=14, color="0.55", zorder=2)
            ax.errorbar(
                [mu],
                [y],
                xerr=[0 if math.isnan(sd) else sd],
                fmt="o",
                color="C0",
                capsize=3,
                zorder=3,
            )
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels)
        direction = "higher" if METRIC_DIRECTIONS.get(primary, 1) > 0 else "lower"
        ax.set_xlabel(
            f"test {_METRIC_NAMES.get(primary, primary)} ({direction} is better; "
            "mean ± std, ddof=1; grey = seeds)"
        )
        ax.set_title(task_name)
        ax.grid(axis="x", color="0.9")
        fig.tight_layout()
        save_figure(fig, png, svg)
        plt.close(fig)


def _index(summaries: dict[str, list[dict[str, Any]]]) -> str:
    from fimp_bench.tasks import TASKS

    lines = ["# FIMP benchmark leaderboards", ""]
    lines.append("<!-- generated by `fimp-bench leaderboard` from */records/; do not edit -->")
    lines.append("")
    lines.append(
        "Generated from the per-seed records by `fimp-bench leaderboard`; `fimp-bench leaderboard "
        "--check` fails if anything here differs from what the records give. Quick-preset rows are "
        "CPU numbers on the small embedded datasets, not paper-scale results. How to add a model: "
        "[CONTRIBUTING.md](CONTRIBUTING.md)."
    )
    lines.append("")
    lines.append(
        "Does cross-node token attention help, and when? fimp-base vs the best GNN and the "
        "ablations, paired per-seed tests and learning curves: [ANALYSIS.md](ANALYSIS.md)."
    )
    lines.append("")
    lines.append(
        "| family | task | task version | primary metric | best model (test, mean ± std) | models "
        "| seeds per model | training |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, rows in summaries.items():
        t = TASKS.get(name)
        best = rows[0]
        mu, sd = best["test"][best["primary"]]
        seeds = sorted({r["n_seeds"] for r in rows})
        # the records' own protocols: a task run under an older preset says so here
        protocols = "; ".join(sorted({f"{r['preset']}: {r['protocol']}" for r in rows}))
        # records made under an older protocol of the task say so (the bench's version after)
        versions = ", ".join(sorted({r["task_version"] for r in rows}))
        if t is not None and versions != t.version:
            versions += f" (bench: {t.version})"
        lines.append(
            f"| {t.family if t else '?'} | [{name}]({name}/README.md) | {versions} | "
            f"{_METRIC_NAMES.get(best['primary'], best['primary'])} | `{best['model']}` "
            f"{_fmt(mu)} ± {_fmt(sd)} | {len(rows)} | {', '.join(map(str, seeds))} | "
            f"{protocols} |"
        )
    lines.append("")
    return "\n".join(lines)


def generate(records_root: str | Path, out_root: str | Path | None = None) -> list[Path]:
    """Regenerate every task's README/CSV/PNG/SVG and the index from the records under
    ``records_root`` into ``out_root`` (default: the same folder). Returns the written paths."""
    records_root = Path(records_root)
    out_root = Path(out_root) if out_root is not None else records_root
    by_task = group_by_task(r for _, r in read_records(records_root))
    order = list(by_task)
    summaries = {t: summarize(by_task[t]) for t in order}
    written = []
    for t, rows in summaries.items():
        d = safe_child(out_root, t)  # records are schema-checked; this guards the path itself
        atomic_write_text(d / "README.md", _readme(t, rows))
        atomic_write_text(d / "results.csv", _csv(rows))
        _plot(t, rows, d / "results.png", d / "results.svg")
        written += [d / "README.md", d / "results.csv", d / "results.png", d / "results.svg"]
    if summaries:
        atomic_write_text(out_root / "README.md", _index(summaries))
        written.append(out_root / "README.md")
        from fimp_bench.analysis import write_analysis

        written += write_analysis(out_root, by_task, order)
    return written


def _svg_matplotlib_version(svg: bytes) -> str | None:
    m = re.search(rb"Matplotlib v([0-9][^,<\s]*)", svg)
    return m.group(1).decode() if m else None


def check(root: str | Path) -> list[str]:
    """Regenerate from ``root``'s records in a temp folder; raise
    :class:`LeaderboardCheckError` (with a diff summary) on any difference from ``root``.

    Tables (README.md, results.csv) are compared byte for byte always. Plots are compared byte
    for byte when the committed SVG was drawn by the matplotlib version installed here (its
    version is in the SVG's metadata); otherwise pixels legitimately differ between matplotlib
    releases, and the plots are only checked to exist (returned as a warning).
    """
    import matplotlib

    root = Path(root)
    if not any(root.glob("*/records/*/*.json")):
        raise LeaderboardCheckError(
            f"{root}: no records found (expected <task>/records/<model>/seed-<n>.json), so "
            "there is nothing to check; pass the leaderboards folder as --root"
        )
    warnings_: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(root, tmp)
        problems = []
        for path in fresh:
            rel = path.relative_to(tmp)
            old = root / rel
            if not old.exists():
                problems.append(f"{rel}: missing (run `fimp-bench leaderboard`)")
                continue
            a, b = old.read_bytes(), path.read_bytes()
            if a == b:
                continue
            if rel.suffix in (".png", ".svg"):
                svg_version = (
                    _svg_matplotlib_version(old.with_suffix(".svg").read_bytes())
                    if (old.with_suffix(".svg").exists())
                    else None
                )
                if svg_version and svg_version != matplotlib.__version__:
                    warnings_.append(
                        f"{rel}: drawn with matplotlib {svg_version}, here {matplotlib.__version__}: "
                        "plot bytes not compared"
                    )
                    continue
            if rel.suffix in (".md", ".csv", ".svg"):
                diff = list(
                    difflib.unified_diff(
                        a.decode(errors="replace").splitlines(),
                        b.decode(errors="replace").splitlines(),
                        f"committed/{rel}",
                        f"regenerated/{rel}",
                        lineterm="",
                        n=0,
                    )
                )
                problems.append(f"{rel}: differs\n" + "\n".join(diff[:20]))
            else:
                problems.append(f"{rel}: differs ({len(a)} vs {len(b)} bytes)")
        expected = {p.relative_to(tmp) for p in fresh}
        analysis = sorted(root.glob("ANALYSIS.md")) + sorted(
            p for p in root.glob("analysis/*") if not p.name.startswith(".")
        )
        for p in sorted(root.glob("*/results.*")) + sorted(root.glob("*/README.md")) + analysis:
            rel = p.relative_to(root)
            if rel not in expected:
                problems.append(f"{rel}: has no records behind it (delete it or add records)")
    if problems:
        raise LeaderboardCheckError(
            f"{len(problems)} leaderboard file(s) differ from the records; run `fimp-bench "
            "leaderboard` and commit the result:\n" + "\n".join(problems)
        )
    return warnings_
