"""``ANALYSIS.md``: does cross-node token attention help, and when? Generated from the records.

For every task (in :data:`fimp_bench.tasks.TASKS` order) and every (preset, fill) of it that has
``fimp-base`` records, one table compares ``fimp-base`` with the best classic GNN (chosen by its
test mean: the most favourable baseline), ``mlp`` and the ablations present (:data:`ROLES`),
paired across seeds: the same seed gives both models the same split and masking, so each seed
gives one difference. Learning curves (validation primary metric per epoch of each seed's
selected tuning trial, ``tuning["trials"][tuning["selected"]]["curve"]["val"]``) go to
``analysis/<task>-curves.png`` and ``.svg``; a summary of every section opens the page ("At a
glance"), its forest plot goes to ``analysis/summary.png`` and ``.svg``. Like every leaderboard
file these are written by :func:`fimp_bench.leaderboard.generate` and compared by
:func:`fimp_bench.leaderboard.check`.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from fimp_bench.leaderboard import _METRIC_NAMES, EXTERNAL_MARK, _fmt, _mean_std
from fimp_bench.metrics import METRIC_DIRECTIONS
from fimp_bench.records import atomic_write_text, safe_child, save_figure

__all__ = ["CLASSIC_GNNS", "REFERENCE", "ROLES", "analysis_page", "paired", "write_analysis"]

#: The reference row every other row is compared with.
REFERENCE = "fimp-base"

#: Candidates for the "best classic GNN" row (the one with the best test mean is shown).
CLASSIC_GNNS: tuple[str, ...] = ("gcn", "gat", "graphsage", "gin", "graph-transformer", "gps")

#: Model name -> its role in the comparison (table order after the best GNN).
ROLES: dict[str, str] = {
    "mlp": "no graph: an MLP on each node's raw vector",
    "fimp-base": "FIMP: tokens per node, cross-node token attention (reference)",
    "fimp-base-plain": (
        "ablation: the paper's plain layer W(H+M), post-norm, no residual/FFN/self-attention branch"
    ),
    "fimp-base-nomsg": (
        "ablation: no cross-node messages (each node attends only to its own tokens, self-loop "
        "only)"
    ),
    "fimp-base-pooled": (
        "ablation: one mean-pooled token per node (cross-attention degenerates to one key)"
    ),
    "fimp-base-mimetic": (
        "variant: fimp-base with mimetic q/k initialisation (W_K = W_Q at init), same search space"
    ),
    "gcn-tokenmean": "ablation: GCN fed the mean of the learned tokens instead of the raw vector",
    "graphsage-tokenmean": (
        "ablation: GraphSAGE fed the mean of the learned tokens instead of the raw vector"
    ),
    "graph-transformer-tokenmean": (
        "ablation: graph transformer fed the mean of the learned tokens instead of the raw vector"
    ),
}
#: Role of the best-GNN row in the table (the page's role list says among which models).
_BEST_GNN_ROLE = "best classic GNN (chosen by test mean: the most favourable baseline)"
#: Models drawn in the learning-curve figure besides the best classic GNN.
_CURVE_MODELS = tuple(m for m in ROLES if m != "mlp")

_ALPHA = 0.05
_PAGE = "ANALYSIS.md"
_FOLDER = "analysis"
_SUMMARY = "summary"
# the same rc settings as leaderboard._plot: fixed SVG ids, text as text, one font
_RC = {"svg.hashsalt": "fimp-bench", "svg.fonttype": "none", "font.family": "DejaVu Sans"}


def _p(p: float) -> str:
    return "n/a" if p is None or math.isnan(p) else f"{p:.3g}"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def paired(values: dict[int, float], ref: dict[int, float], sign: int) -> dict[str, Any]:
    """Paired comparison of one model (``values``: seed -> test metric) with the reference.

    Over the seeds both have: ``diff`` = mean of ``sign * (value - ref)`` (positive = better
    than the reference when ``sign`` is the metric's direction), ``t_p`` = two-sided
    ``scipy.stats.ttest_rel`` p-value (NaN below 2 shared seeds), ``w_p`` = two-sided
    ``scipy.stats.wilcoxon`` p-value (NaN below 5 shared seeds or when every difference is 0).
    """
    from scipy.stats import ttest_rel, wilcoxon

    shared = sorted(set(values) & set(ref))
    a = np.asarray([values[s] for s in shared], dtype=np.float64)
    b = np.asarray([ref[s] for s in shared], dtype=np.float64)
    out = {"seeds": shared, "n": len(shared), "diff": float("nan"), "t_p": float("nan")}
    out["w_p"] = float("nan")
    if shared:
        out["diff"] = float(np.mean(sign * (a - b)))
    with warnings.catch_warnings():  # zero variance, ties, zeros: scipy warns, the p-value stands
        warnings.simplefilter("ignore")
        if len(shared) >= 2:
            out["t_p"] = float(ttest_rel(a, b).pvalue)
        if len(shared) >= 5 and np.any(a != b):
            out["w_p"] = float(wilcoxon(a, b).pvalue)
    return out


def _ci95(values: dict[int, float], ref: dict[int, float], sign: int) -> tuple[float, float]:
    """Two-sided 95% confidence interval of the paired mean difference ``sign * (value - ref)``
    over the shared seeds (Student t, ddof=1); ``(nan, nan)`` below 2 shared seeds."""
    from scipy.stats import t as student_t

    shared = sorted(set(values) & set(ref))
    if len(shared) < 2:
        return float("nan"), float("nan")
    d = np.asarray([sign * (values[s] - ref[s]) for s in shared], dtype=np.float64)
    half = float(student_t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return float(d.mean() - half), float(d.mean() + half)


def _curve(record: dict[str, Any]) -> list[float] | None:
    """The validation curve of the record's selected trial, or None (older record, or malformed)."""
    tuning = record.get("tuning")
    if not isinstance(tuning, dict):
        return None
    trials, sel = tuning.get("trials"), tuning.get("selected")
    if not isinstance(trials, list) or not isinstance(sel, int) or isinstance(sel, bool):
        return None
    if not 0 <= sel < len(trials) or not isinstance(trials[sel], dict):
        return None
    curve = trials[sel].get("curve")
    val = curve.get("val") if isinstance(curve, dict) else None
    # ``None`` marks an epoch whose value was not finite (``fimp_bench.train``): a gap, kept
    if not isinstance(val, list) or not all(v is None or _number(v) for v in val):
        return None
    if not any(v is not None for v in val):
        return None
    return [float("nan") if v is None else float(v) for v in val]


def _trial_runs(record: dict[str, Any]) -> tuple[int | None, list[int]]:
    """The record's epoch cap (``task_info.training.max_epochs``) and the epochs each of its
    trials ran (``tuning["trials"][i]["epochs_run"]``: every tuning trial on the tuned seed, the
    selected one on the others); ``(None, [])`` for zero-shot or older records."""
    training = record.get("task_info", {}).get("training")
    cap = training.get("max_epochs") if isinstance(training, dict) else None
    tuning = record.get("tuning")
    trials = tuning.get("trials") if isinstance(tuning, dict) else None
    if record.get("mode") == "zero-shot" or not _number(cap) or not isinstance(trials, list):
        return None, []
    runs = [t.get("epochs_run") for t in trials if isinstance(t, dict)]
    return int(cap), [int(e) for e in runs if _number(e)]


def _at_cap(m: dict[str, Any]) -> str:
    """``k/T at E`` for a model's row: k of its T trials ran to the epoch cap E."""
    if not m["trials"]:
        return "—"
    hit = sum(e >= cap for e, cap in m["trials"])
    caps = "/".join(str(c) for c in sorted(m["caps"]))
    return f"{hit}/{len(m['trials'])} at {caps}"


def _sections(task: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One section per (preset, fill, mode) of one task's records that has ``fimp-base`` rows."""
    from fimp_bench.tasks import TASKS

    t = TASKS.get(task)
    primary = t.primary_metric if t else sorted(records[0]["metrics"]["test"])[0]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["preset"], r["fill"], r["mode"])].append(r)
    sections = []
    for (preset, fill, mode), rs in sorted(groups.items()):
        models: dict[str, dict[str, Any]] = {}
        for r in rs:  # records come sorted by path; a duplicate (model, seed) keeps the first
            name = r["model"]["name"]
            m = models.setdefault(
                name, {"values": {}, "curves": {}, "external": False, "caps": set(), "trials": []}
            )
            m["external"] = m["external"] or bool(r["model"]["external_weights"])
            v = r["metrics"]["test"].get(primary)
            if r["seed"] in m["values"] or not _number(v):
                continue
            m["values"][r["seed"]] = float(v)
            cap, runs = _trial_runs(r)
            if cap is not None:
                m["caps"].add(cap)
                m["trials"] += [(e, cap) for e in runs]
            curve = _curve(r)
            if curve is not None:
                m["curves"][r["seed"]] = curve
        if REFERENCE not in models or not models[REFERENCE]["values"]:
            continue
        sign = METRIC_DIRECTIONS.get(primary, 1)
        gnns = [g for g in CLASSIC_GNNS if models.get(g, {}).get("values")]
        best = (
            max(
                gnns,
                key=lambda g: (sign * np.mean(list(models[g]["values"].values())), -gnns.index(g)),
            )
            if gnns
            else None
        )
        info = next(
            (
                r["task_info"]
                for r in rs
                if r["model"]["name"] == REFERENCE and isinstance(r.get("task_info"), dict)
            ),
            {},
        )
        sections.append(
            {
                "nodes": info.get("num_nodes") if _number(info.get("num_nodes")) else None,
                "graphs": info.get("num_graphs") if _number(info.get("num_graphs")) else None,
                "preset": preset,
                "fill": fill,
                "mode": mode,
                "primary": primary,
                "sign": sign,
                "models": models,
                "best_gnn": best,
                "order": ([best] if best else [])
                + [m for m in ROLES if models.get(m, {}).get("values")],
            }
        )
    return sections


def _verdict(diff: float, p: float) -> str:
    """``better`` / ``worse`` / ``not distinguishable`` at p < 0.05 for a difference seen from
    fimp-base (positive = fimp-base better)."""
    if not math.isnan(p) and p < _ALPHA and diff > 0:
        return "better"
    if not math.isnan(p) and p < _ALPHA and diff < 0:
        return "worse"
    return "not distinguishable"


def _glance(task: str, s: dict[str, Any]) -> dict[str, Any]:
    """One section's summary, every difference seen from the first-named model (positive =
    better): fimp-base vs the best GNN, fimp-base vs its no-message ablation, and that ablation
    vs the MLP; each ``(diff, ci_low, ci_high, t_p)`` or ``None`` where a row is missing."""
    models, sign = s["models"], s["sign"]

    def versus(a: str | None, b: str) -> tuple[float, float, float, float] | None:
        va, vb = models.get(a, {}).get("values"), models.get(b, {}).get("values")
        if not va or not vb:
            return None
        c = paired(va, vb, sign)
        return (c["diff"], *_ci95(va, vb, sign), c["t_p"])

    return {
        "task": task,
        "section": s,
        "vs_gnn": versus(REFERENCE, s["best_gnn"]) if s["best_gnn"] else None,
        "messages": versus(REFERENCE, "fimp-base-nomsg"),
        "tokens": versus("fimp-base-nomsg", "mlp"),
    }


def _glance_cell(c: tuple[float, float, float, float] | None, ci: bool) -> str:
    if c is None or math.isnan(c[0]):
        return "—"
    diff, lo, hi, p = c
    interval = f" [{lo:+.3f}, {hi:+.3f}]" if ci and not math.isnan(lo) else ""
    return f"{diff:+.4f}{interval}" if ci else f"{diff:+.4f} (p {_p(p)})"


def _glance_label(g: dict[str, Any], repeated: set[str]) -> str:
    s = g["section"]
    return f"{g['task']} ({s['preset']}, {s['fill']})" if g["task"] in repeated else g["task"]


def _nodes_cell(s: dict[str, Any]) -> str:
    """Nodes per graph, and the number of graphs where there are several (``task_info``)."""
    if s["nodes"] is None:
        return "—"
    graphs = s["graphs"]
    return f"{int(s['nodes']):,}" + (f" × {int(graphs)} graphs" if graphs and graphs > 1 else "")


def _glance_md(rows: list[dict[str, Any]], figure: bool) -> list[str]:
    lines = ["## At a glance", ""]
    lines.append(
        "One row per task section below. Every difference here is seen from the first-named "
        "model: **positive = fimp-base (or fimp-base-nomsg in the last column) better**, in the "
        "task's primary metric (R^2 or accuracy). *fimp-base − best GNN*: paired mean over the "
        "shared seeds with its 95% confidence interval (Student t) and the paired t-test; the "
        "verdict uses p<0.05. *messages*: fimp-base − `fimp-base-nomsg`, what cross-node "
        "messages add to the same token model. *tokens alone*: `fimp-base-nomsg` − `mlp`, two "
        "models that see no graph: the token encoder against an MLP on the raw vector; negative "
        "means the per-node token model is the weaker encoder on this data. — : a row is missing."
    )
    lines.append("")
    head = ["task", "nodes per graph", "best classic GNN", "fimp-base − best GNN [95% CI]"]
    head += ["t-test p", "verdict", "messages: fimp-base − nomsg", "tokens alone: nomsg − mlp"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    tasks = [g["task"] for g in rows]
    repeated = {t for t in tasks if tasks.count(t) > 1}
    for g in rows:
        s, vs = g["section"], g["vs_gnn"]
        p = float("nan") if vs is None else vs[3]
        cells = [
            _glance_label(g, repeated) + (" (zero-shot)" if s["mode"] == "zero-shot" else ""),
            _nodes_cell(s),
            f"`{s['best_gnn']}`" if s["best_gnn"] else "—",
            _glance_cell(vs, ci=True),
            _p(p),
            "—" if vs is None else _verdict(vs[0], p),
            _glance_cell(g["messages"], ci=False),
            _glance_cell(g["tokens"], ci=False),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if figure:
        rel = f"{_FOLDER}/{_SUMMARY}"
        lines.append(
            "Figure: the two differences from fimp-base with their 95% confidence intervals "
            f"(tasks mix R^2 and accuracy on one axis): [`{rel}.png`]({rel}.png) "
            f"([SVG]({rel}.svg))."
        )
        lines.append("")
        lines.append(f"![fimp-base against the best classic GNN and without messages]({rel}.png)")
        lines.append("")
    return lines


def _plot_glance(rows: list[dict[str, Any]], png: Path, svg: Path) -> None:
    """Forest plot: per section, fimp-base − best GNN and fimp-base − nomsg with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tasks = [g["task"] for g in rows]
    repeated = {t for t in tasks if tasks.count(t) > 1}
    series = (("vs_gnn", "fimp-base − best classic GNN", "C0", "o", -0.15),)
    series += (("messages", "fimp-base − fimp-base-nomsg (messages)", "C1", "s", 0.15),)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(rows) + 1.6))
        for key, label, color, marker, dy in series:
            ys, xs, lo, hi = [], [], [], []
            for i, g in enumerate(rows):
                c = g[key]
                if c is None or math.isnan(c[0]):
                    continue
                ys.append(i + dy)
                xs.append(c[0])
                lo.append(c[0] - c[1] if not math.isnan(c[1]) else 0.0)
                hi.append(c[2] - c[0] if not math.isnan(c[2]) else 0.0)
            if xs:
                ax.errorbar(
                    xs, ys, xerr=[lo, hi], fmt=marker, color=color, capsize=3, lw=1.2, label=label
                )
        ax.axvline(0.0, color="0.4", lw=1)
        ax.set_yticks(range(len(rows)), [_glance_label(g, repeated) for g in rows])
        ax.invert_yaxis()
        ax.set_xlabel("difference in the primary metric (positive = fimp-base better), 95% CI")
        ax.grid(axis="x", color="0.9")
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        save_figure(fig, png, svg)
        plt.close(fig)


def _section_md(s: dict[str, Any]) -> list[str]:
    primary, sign, models = s["primary"], s["sign"], s["models"]
    mname = _METRIC_NAMES.get(primary, primary)
    direction = "higher" if sign > 0 else "lower"
    ref = models[REFERENCE]["values"]
    lines = [f"### preset `{s['preset']}`, fill `{s['fill']}`, {s['mode']}", ""]
    lines.append(f"Primary metric: test {mname} ({direction} is better).")
    lines.append("")
    head = ["model", "role", f"test {mname} (mean ± std)", "N", "Δ vs fimp-base"]
    head += ["paired t-test p", "Wilcoxon p", "shared seeds", "trials at epoch cap"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    comparisons = {}
    for name in s["order"]:
        m = models[name]
        vals = [m["values"][k] for k in sorted(m["values"])]
        mu, sd = _mean_std(vals)
        if name == s["best_gnn"]:
            role = _BEST_GNN_ROLE
        else:
            role = ROLES[name]
        label = f"`{name}{f' {EXTERNAL_MARK}' if m['external'] else ''}`"
        cells = [label, role, f"{_fmt(mu)} ± {_fmt(sd)}", str(len(vals))]
        if name == REFERENCE:
            cells += ["(reference)", "—", "—", "—"]
        else:
            c = paired(m["values"], ref, sign)
            comparisons[name] = c
            diff = "n/a" if math.isnan(c["diff"]) else f"{c['diff']:+.4f}"
            cells += [diff, _p(c["t_p"]), _p(c["w_p"]), str(c["n"])]
        cells.append(_at_cap(m))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    best = s["best_gnn"]
    if best is None:
        lines.append("fimp-base vs best GNN: no classic GNN records in this section.")
    else:
        c = comparisons[best]
        # the table's Δ is best GNN minus fimp-base; seen from fimp-base the sign flips
        verdict = _verdict(-c["diff"], c["t_p"])
        diff = "n/a" if math.isnan(c["diff"]) else f"{-c['diff']:+.4f}"
        lines.append(
            f"**fimp-base vs best GNN (`{best}`): {verdict} at p<0.05** (paired t-test p = "
            f"{_p(c['t_p'])} over {c['n']} shared seeds; fimp-base minus `{best}`, signed so "
            f"positive = fimp-base better: {diff})."
        )
    lines.append("")
    return lines


def _curve_stats(curves: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, std (ddof=1; NaN below two values) and count over the seeds still running at each
    epoch; NaN entries (non-finite epochs) are left out of that epoch's statistics."""
    n = max(len(c) for c in curves)
    mean, std, count = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    for e in range(n):
        vals = np.asarray([c[e] for c in curves if len(c) > e], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        count[e] = vals.size
        if vals.size:
            mean[e] = vals.mean()
        if vals.size > 1:
            std[e] = vals.std(ddof=1)
    return mean, std, count


def _plotted(s: dict[str, Any]) -> list[str]:
    """Models of a section drawn in the curve figure (best GNN, fimp-base, ablations present)."""
    return [m for m in s["order"] if m == s["best_gnn"] or m in _CURVE_MODELS]


def _plot_curves(task: str, sections: list[dict[str, Any]], png: Path, svg: Path) -> None:
    """Validation primary metric per epoch, mean over seeds ± std (shaded); Agg, deterministic."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with plt.rc_context(_RC):
        fig, axes = plt.subplots(
            1, len(sections), figsize=(6.4 * len(sections), 4.2), squeeze=False
        )
        for ax, s in zip(axes[0], sections):
            for name in _plotted(s):
                curves = [
                    s["models"][name]["curves"][k] for k in sorted(s["models"][name]["curves"])
                ]
                if not curves:
                    continue
                mean, std, _ = _curve_stats(curves)
                x = np.arange(mean.size)
                # a fixed colour per role: best GNN C0, then ROLES order
                color = f"C{0 if name == s['best_gnn'] else 1 + _CURVE_MODELS.index(name)}"
                ax.plot(x, mean, color=color, lw=1.5, label=f"{name} ({len(curves)} seeds)")
                ok = ~np.isnan(std)
                ax.fill_between(x, mean - std, mean + std, where=ok, color=color, alpha=0.2, lw=0)
            direction = "higher" if s["sign"] > 0 else "lower"
            mname = _METRIC_NAMES.get(s["primary"], s["primary"])
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"validation {mname} ({direction} is better)")
            ax.set_title(f"{task} ({s['preset']}, fill {s['fill']})")
            ax.grid(color="0.9")
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        save_figure(fig, png, svg)
        plt.close(fig)


def _curves_md(task: str, sections: list[dict[str, Any]], figure: bool) -> list[str]:
    lines = ["### Learning curves", ""]
    trained = [s for s in sections if s["mode"] != "zero-shot"]
    if not trained:
        return [*lines, "Zero-shot task: nothing is trained, so there are no learning curves.", ""]
    if not figure:
        return [
            *lines,
            "No learning curves: none of these records stores per-epoch curves (records "
            "written before curves were recorded).",
            "",
        ]
    lines.append(
        "Validation primary metric per epoch of each seed's selected tuning trial, for the best "
        "classic GNN, fimp-base and the ablations present. Line: mean over seeds; shaded: ± std "
        "(ddof=1). Early stopping ends seeds at different epochs: at each epoch the mean and std "
        "are over the seeds still training (no padding), so the tail of a curve may rest on fewer "
        "seeds; an epoch whose value was not finite (stored as null) is left out of that epoch."
    )
    lines.append("")
    for s in trained:
        missing = []
        for name in _plotted(s):
            m = s["models"][name]
            lacking = sorted(set(m["values"]) - set(m["curves"]))
            if lacking:
                missing.append(f"`{name}` seed(s) {', '.join(map(str, lacking))}")
        if missing:
            lines.append(
                f"Left out of the {s['preset']}/{s['fill']} curves (records without curves, "
                f"written before curves were recorded): {'; '.join(missing)}."
            )
            lines.append("")
    rel = f"{_FOLDER}/{task}-curves"
    lines.append(f"Figure: [`{rel}.png`]({rel}.png) ([SVG]({rel}.svg)).")
    lines.append("")
    lines.append(f"![{task} learning curves]({rel}.png)")
    lines.append("")
    return lines


def analysis_page(
    by_task: dict[str, list[dict[str, Any]]], order: list[str]
) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """The page's text and, per task, the sections whose curves go into a figure."""
    text, figures, _ = _page(by_task, order)
    return text, figures


def _page(
    by_task: dict[str, list[dict[str, Any]]], order: list[str]
) -> tuple[str, dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """:func:`analysis_page` plus the at-a-glance rows (one per section, for the summary plot)."""
    all_sections = {task: _sections(task, by_task[task]) for task in order}
    glance = [_glance(task, s) for task in order for s in all_sections[task]]
    lines = ["<!-- generated by fimp-bench leaderboard from */records/; do not edit -->", ""]
    lines += ["# Does cross-node token attention help, and when?", ""]
    lines.append(
        "Per task, `fimp-base` (tokens per node, cross-node token attention) is compared with the "
        "best classic GNN, with `mlp` (no graph) and with ablations that remove one ingredient "
        "at a time. The best classic GNN is the one with the highest **test** mean of the "
        "primary metric: a choice made on test, so it is the most favourable baseline. The "
        "comparison is **paired across seeds**: the same seed gives both models the same split "
        "and masking, so each seed both models ran gives one difference. Δ vs fimp-base = mean "
        "over the shared seeds of (model − fimp-base), signed so that **positive = better than "
        "fimp-base** (for lower-is-better metrics such as MSE the sign is flipped). p-values are "
        "two-sided: paired t-test (`scipy.stats.ttest_rel`) and Wilcoxon signed-rank "
        "(`scipy.stats.wilcoxon`, only with at least 5 shared seeds and not every difference "
        "zero; else n/a; with 5 seeds its exact p-value cannot go below 0.0625); no correction "
        "for multiple comparisons. The verdict line under each table uses the t-test at "
        "p<0.05. Cells: test mean ± standard deviation over N seeds (ddof=1). One section per "
        "preset and fill (the pairing holds within one); quick-preset rows are CPU numbers on "
        "the small embedded datasets, not paper-scale results. Generated from the records by "
        "`fimp-bench leaderboard` and checked by `fimp-bench leaderboard --check`; per-task "
        "tables: [README.md](README.md). *Trials at epoch cap*: of every trial behind a row "
        "(the tuning trials on the tuned seed, the selected configuration on the others), how "
        "many ran to the preset's epoch cap instead of being stopped by early stopping, i.e. "
        "were still improving on validation within their last `patience` epochs: rows with "
        "many such trials are not converged by that criterion and may be under-trained. Records "
        "written under an older preset carry their own cap (shown after *at*)."
    )
    lines.append("")
    lines.append("Roles:")
    lines.append("")
    lines.append(
        "- best classic GNN: the one of "
        + ", ".join(f"`{g}`" for g in CLASSIC_GNNS)
        + " with the highest test mean in that section (a choice on test: the most favourable "
        "baseline)"
    )
    for name, role in ROLES.items():
        lines.append(f"- `{name}`: {role}")
    lines.append("")
    if glance:
        lines += _glance_md(glance, _glance_plotted(glance))
    figures: dict[str, list[dict[str, Any]]] = {}
    for task in order:
        lines += [f"## {task}", ""]
        sections = all_sections[task]
        if not sections:
            lines += [f"No `{REFERENCE}` records for this task: nothing to compare.", ""]
            continue
        for s in sections:
            lines += _section_md(s)
        plotted = [
            s
            for s in sections
            if s["mode"] != "zero-shot" and any(s["models"][m]["curves"] for m in _plotted(s))
        ]
        if plotted:
            figures[task] = plotted
        lines += _curves_md(task, sections, bool(plotted))
    return "\n".join(lines), figures, glance


def _glance_plotted(rows: list[dict[str, Any]]) -> bool:
    """Whether the summary figure has anything to draw (a finite difference in some row)."""
    return any(
        g[k] is not None and not math.isnan(g[k][0]) for g in rows for k in ("vs_gnn", "messages")
    )


def write_analysis(
    out_root: str | Path, by_task: dict[str, list[dict[str, Any]]], order: list[str]
) -> list[Path]:
    """Write ``ANALYSIS.md`` and ``analysis/<task>-curves.{png,svg}`` under ``out_root``; return
    the written paths. ``by_task``: each task's records; ``order``: the tasks in page order."""
    out_root = Path(out_root)
    text, figures, glance = _page(by_task, order)
    written = []
    if _glance_plotted(glance):
        d = safe_child(out_root, _FOLDER)
        png, svg = d / f"{_SUMMARY}.png", d / f"{_SUMMARY}.svg"
        _plot_glance(glance, png, svg)
        written += [png, svg]
    for task, sections in figures.items():
        d = safe_child(out_root, _FOLDER)
        png, svg = d / f"{task}-curves.png", d / f"{task}-curves.svg"
        _plot_curves(task, sections, png, svg)
        written += [png, svg]
    atomic_write_text(out_root / _PAGE, text)
    return [out_root / _PAGE, *written]
