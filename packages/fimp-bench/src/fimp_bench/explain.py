"""``fimp-bench explain``: train a FIMP model on a task and save its token-attention heatmaps.

The paper's Figures 4-5 show which genes of a neighbouring cell each gene of a cell attends to.
This module reproduces that read-out for any FIMP model of the bench:

1. train the model on the task exactly as ``fimp-bench run`` does (same preset, tuning grid,
   seed, early stopping; the best-validation trial is kept), or reload a state saved by an earlier
   ``explain`` run (``checkpoint=``);
2. compute the per-edge attention of one layer (:func:`fimp.interpret.attention_maps`) on the
   **test edges** (node-level tasks: edges whose target is a test node; graph-level tasks: every
   edge of the test graphs), with the inputs the model sees at evaluation (masked entries masked);
3. aggregate it by token label (:func:`fimp.interpret.aggregate_by_label`): a target-label x
   source-label matrix, rows = target tokens (genes, time patches, image patches), columns =
   source tokens; every row of a full matrix sums to 1 over the source's real tokens;
4. with node groups (``group_by``, default the cell type ``y`` when the prepared graph has it):
   the same matrix over within-group and across-group edges and their difference;
5. the **same-label attention** of each matrix: the share of a target token's attention that goes
   to the source token with its own label (the neighbour's same gene / time patch / image
   patch), averaged over the attention rows, beside the uniform share ``1 / #labels``. Far above
   uniform: the layer reads the neighbour's corresponding token (aligned tokens); near it: each
   token takes a blurred mix of the neighbour's tokens (printed, and in ``explain.json``);
6. write, per matrix, the full CSV (all labels; rows sum to 1), a top-k CSV (the ``top_k`` labels
   with the most attention mass received, for a readable heatmap; those rows no longer sum to 1)
   and a heatmap as PNG and SVG, plus ``explain.json`` (what was run, row weights, paths).

CSV layout: a header row ``target \\ source, <source labels...>``, then one row per target label
(``label, values...``). Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data

from fimp_bench.errors import BenchConfigError

__all__ = [
    "add_explain_parser",
    "explain",
    "run_explain",
    "same_label_attention",
    "write_label_csv",
]

_STATE_FILE = "model_state.pt"
_SUMMARY_FILE = "explain.json"


# ------------------------------------------------------------------ atomic writes
def _atomic_write(path: Path, write, *, binary: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", newline="" if not binary else None) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_label_csv(path: Path, matrix: Any, row_labels: Sequence[str], col_labels: Sequence[str]):
    """Write a label x label matrix as CSV: header ``target \\ source, cols...``, then one row per
    target label. ``matrix``: [R, C] (tensor or array); NaN is written as ``nan``."""
    values = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix)

    def write(fh) -> None:
        w = csv.writer(fh)
        w.writerow(["target \\ source", *col_labels])
        for label, row in zip(row_labels, values):
            w.writerow([label, *(repr(float(v)) for v in row)])

    _atomic_write(Path(path), write)


def _save_heatmap(
    stem: Path,
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
    diverging: bool,
) -> tuple[Path, Path]:
    """Heatmap (rows = target tokens, columns = source tokens) as ``stem.png`` and ``stem.svg``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    r, c = matrix.shape
    size = (min(4.0 + 0.22 * c, 24.0), min(3.0 + 0.22 * r, 24.0))
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = matrix[np.isfinite(matrix)]
    if diverging:
        lim = float(np.abs(finite).max()) if finite.size else 1.0
        im = ax.imshow(matrix, cmap="RdBu_r", vmin=-lim or -1.0, vmax=lim or 1.0, aspect="auto")
    else:
        im = ax.imshow(matrix, cmap="viridis", vmin=0.0, aspect="auto")
    fontsize = 8 if max(r, c) <= 40 else 5
    ax.set_xticks(range(c), labels=list(col_labels), rotation=90, fontsize=fontsize)
    ax.set_yticks(range(r), labels=list(row_labels), fontsize=fontsize)
    ax.set_xlabel("source token (neighbour j)")
    ax.set_ylabel("target token (node i)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="attention difference" if diverging else "mean attention")
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_name(f"{stem.name}.{ext}")
        _atomic_write(path, lambda fh, ext=ext: fig.savefig(fh, format=ext, dpi=150), binary=True)
        paths.append(path)
    return paths[0], paths[1]


# ------------------------------------------------------------------ model inputs
def _fimp_of(model: nn.Module, name: str):
    import fimp

    inner = model if isinstance(model, fimp.FIMP) else getattr(model, "fimp", None)
    if not isinstance(inner, fimp.FIMP):
        raise BenchConfigError(
            f"model {name!r} has no token attention to explain (it is not a FIMP model); "
            "choose a FIMP model such as fimp-base"
        )
    return inner


def _inputs(model: nn.Module, data: Data) -> tuple[Any, dict[str, Any]]:
    """The FIMP inputs the bench model builds from ``data`` in its forward (evaluation view)."""
    kind = getattr(model, "kind", None)
    x = data.x
    mask = getattr(data, "input_mask", None)
    if kind == "gene":
        return x, {"genes": list(model.genes), "mask": mask}
    if kind == "timeseries":
        n = x.size(0)
        pmask = None if mask is None else mask.view(n, -1, model.patch).any(dim=-1)
        return x, {"coords": data.pos, "mask": pmask}
    if kind == "image":
        return x.view(x.size(0), *model.image_shape), {}
    raise BenchConfigError(
        f"explain does not know how model {type(model).__name__} (token kind {kind!r}) feeds "
        "its FIMP; give it a kind of 'gene', 'timeseries' or 'image' like the bench's FIMP models"
    )


def _group_tensor(graph: Data, group_by: Any) -> torch.Tensor | None:
    if group_by is None:
        return graph.y if isinstance(getattr(graph, "y", None), torch.Tensor) else None
    if isinstance(group_by, str):
        if group_by not in graph:
            raise BenchConfigError(
                f"the prepared graph has no attribute {group_by!r} to group nodes by; available: "
                f"{sorted(graph.keys())}"
            )
        return torch.as_tensor(graph[group_by])
    groups = torch.as_tensor(group_by)
    if groups.shape != (graph.num_nodes,):
        raise BenchConfigError(f"group_by must give one group per node ({graph.num_nodes})")
    return groups


# ------------------------------------------------------------------ training / loading
def _train(prep, spec, *, device, budget: int | None, config: dict[str, Any] | None, progress):
    from fimp_bench.metrics import METRIC_DIRECTIONS
    from fimp_bench.train import deterministic, train_trial

    budget = prep.preset.tuning_budget if budget is None else int(budget)
    if budget < 1:
        raise BenchConfigError(f"budget must be >= 1 trial, got {budget}")
    metric = prep.task.primary_metric
    best = None
    with deterministic(device):
        for i, cfg in enumerate(spec.trials(budget)):
            cfg = {**cfg, **(config or {})}
            desc = f"explain {prep.task.name}/{spec.name}/s{prep.seed} trial {i + 1}/{budget}"
            result = train_trial(prep, spec, cfg, device=device, progress=progress, desc=desc)
            score = result.val.get(metric, float("nan"))
            if best is None or (
                not math.isnan(score)
                and (
                    math.isnan(best.val.get(metric, float("nan")))
                    or score * METRIC_DIRECTIONS[metric]
                    > best.val[metric] * METRIC_DIRECTIONS[metric]
                )
            ):
                best = result
    return best.model, best.config, best.val, best.best_epoch


def _load(prep, spec, checkpoint: Path, *, device, expect: dict[str, Any]):
    checkpoint = Path(checkpoint)
    state_path, meta_path = checkpoint / _STATE_FILE, checkpoint / _SUMMARY_FILE
    if not state_path.is_file() or not meta_path.is_file():
        raise BenchConfigError(
            f"checkpoint {checkpoint} must be a folder written by fimp-bench explain (with "
            f"{_STATE_FILE} and {_SUMMARY_FILE}); run explain once without --checkpoint"
        )
    meta = json.loads(meta_path.read_text())
    wrong = {k: (meta.get(k), v) for k, v in expect.items() if meta.get(k) != v}
    if wrong:
        raise BenchConfigError(
            f"checkpoint {checkpoint} was trained for a different run: "
            + ", ".join(f"{k}={a!r} (asked {b!r})" for k, (a, b) in wrong.items())
        )
    model = spec.build(prep, meta["config"]).to(device)
    state = torch.load(state_path, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model, meta["config"], meta.get("val", {}), meta.get("best_epoch")


# ------------------------------------------------------------------ the read-out
def same_label_attention(lm) -> dict[str, float] | None:
    """``{"mass", "uniform", "ratio"}`` of a ``"mean"`` :class:`fimp.interpret.LabelMatrix`:
    ``mass`` = attention on the source token with the target token's own label, averaged over
    the attention rows (weighted by ``row_weight``; rows whose label no source token has count
    0); ``uniform`` = ``1 / #source labels``; ``ratio`` = mass / uniform. ``None`` for other
    reductions or an empty matrix."""
    if lm.reduce != "mean" or lm.row_weight is None or not lm.col_labels:
        return None
    w = lm.row_weight.to(torch.float64)
    if float(w.sum()) <= 0:
        return None
    col = {c: j for j, c in enumerate(lm.col_labels)}
    diag = torch.tensor(
        [float(lm.matrix[i, col[r]]) if r in col else 0.0 for i, r in enumerate(lm.row_labels)],
        dtype=torch.float64,
    )
    mass = float((diag * w).sum() / w.sum())
    uniform = 1.0 / len(lm.col_labels)
    return {"mass": mass, "uniform": uniform, "ratio": mass / uniform}


def _top_labels(lm, k: int) -> list[str]:
    """The ``k`` source labels with the largest share of all attention (ties: label order)."""
    w = lm.row_weight.to(torch.float64)
    share = (lm.matrix * w[:, None]).sum(0) / w.sum()
    order = sorted(range(len(lm.col_labels)), key=lambda j: (-float(share[j]), j))
    return [lm.col_labels[j] for j in order[:k]]


def _sub(lm, labels: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    rpos = {lab: i for i, lab in enumerate(lm.row_labels)}
    cpos = {lab: i for i, lab in enumerate(lm.col_labels)}
    rows = [lab for lab in labels if lab in rpos]
    cols = [lab for lab in labels if lab in cpos]
    m = lm.matrix.detach().cpu().numpy()
    return m[np.ix_([rpos[r] for r in rows], [cpos[c] for c in cols])], rows, cols


def _maps(fimp_model, model, graphs, edge_masks, *, layer, edge_chunk_size) -> Iterator[Any]:
    from fimp.interpret import iter_attention_maps

    for graph, emask in zip(graphs, edge_masks):
        x, kwargs = _inputs(model, graph)
        yield from iter_attention_maps(
            fimp_model,
            x,
            edge_index=graph.edge_index,
            layer=layer,
            edge_mask=emask,
            edge_chunk_size=edge_chunk_size,
            **kwargs,
        )


def explain(
    task: str,
    model: str = "fimp-base",
    *,
    seed: int = 0,
    preset: str = "quick",
    out: Path | str,
    layer: int = -1,
    group_by: str | Sequence[Any] | torch.Tensor | None = None,
    top_k: int = 30,
    device: str = "cpu",
    budget: int | None = None,
    config: dict[str, Any] | None = None,
    checkpoint: Path | str | None = None,
    head: str | int = "mean",
    pairs: Sequence[tuple[Any, Any]] = (),
    edge_chunk_size: int | str | None = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``model`` on ``task`` and save label x label attention heatmaps of its test edges.

    Args:
        task: a task name (``spatial-expression``, ``spatial-celltype``, ...).
        model: a FIMP model of the bench registry (``fimp-base``, FM variants).
        seed, preset: as for ``fimp-bench run`` (the prepared data and training are identical).
        out: output folder (created).
        layer: which FIMPConv layer's attention (negative counts from the end).
        group_by: node groups for within- vs across-group edges: None = the prepared graph's ``y``
            when it has one (cell types of ``spatial-celltype``), a graph attribute name, or [N]
            groups. Node-level tasks only.
        top_k: labels shown in the heatmaps (those receiving the most attention; 0 = all).
        device: ``cpu``, ``cuda`` or ``auto``.
        budget: tuning trials (default: the preset's ``tuning_budget``, as ``run``).
        config: overrides merged into every trial's configuration (e.g. a smaller ``dim``).
        checkpoint: a folder written by an earlier ``explain`` of the same task / model / seed /
            preset: its saved state is loaded instead of training.
        head: ``"mean"`` over heads or one head index.
        pairs: (a, b) group pairs: also the matrix over test edges with target in group a and
            source in group b, and its difference from all test edges (``pair_a_b``,
            ``pair_a_b_minus_all``).
        edge_chunk_size: edges per attention chunk; ``"auto"`` (default) keeps one chunk's
            attention near 64 MiB, so memory stays flat as the graph grows.
        progress: show training progress bars.

    Returns:
        A JSON-able dict: what was run (task, model, seed, preset, layer, config, val metrics,
        number of test edges) and ``files``, a mapping ``name -> path`` of every file written
        (``all_full_csv``, ``all_csv``, ``all_png``, ``all_svg``, ``state``, ``summary`` and, with
        groups, the same for ``within``, ``across``, ``within_minus_across`` and each pair).
    """
    import fimp.interpret as fi
    from fimp_bench.models import get_model
    from fimp_bench.tasks import get_preset, get_task
    from fimp_bench.train import resolve_device

    if not isinstance(top_k, int) or top_k < 0:
        raise BenchConfigError(f"top_k must be a non-negative int (0 = all labels), got {top_k!r}")
    out = Path(out)
    dev = resolve_device(device)
    task_obj = get_task(task)
    spec = get_model(model)
    prep = task_obj.prepare(seed=seed, preset=get_preset(preset))
    run = {"task": task, "model": model, "seed": seed, "preset": preset}
    # check everything that can be checked before training
    probe_cfg = {**spec.trials(1)[0], **(config or {})}
    num_layers = len(_fimp_of(spec.build(prep, probe_cfg), model).convs)
    if not isinstance(layer, int) or not -num_layers <= layer < num_layers:
        raise BenchConfigError(
            f"layer must be in [{-num_layers}, {num_layers}) for this {num_layers}-layer model, "
            f"got {layer!r}"
        )
    if prep.level == "node":
        graph = prep.graphs[0].to(dev)
        test_edges = graph.test_mask[graph.edge_index[1]]
        graphs, edge_masks = [graph], [test_edges]
        groups = _group_tensor(graph, group_by)
    else:
        if group_by is not None:
            raise BenchConfigError("group_by applies to node-level tasks only")
        graphs = [prep.graphs[i].to(dev) for i in prep.test_idx]
        edge_masks, groups = [None] * len(graphs), None
    if pairs and groups is None:
        raise BenchConfigError("pairs need node groups: pass group_by (e.g. 'y')")

    if checkpoint is not None:
        net, cfg, val, best_epoch = _load(prep, spec, Path(checkpoint), device=dev, expect=run)
    else:
        net, cfg, val, best_epoch = _train(
            prep, spec, device=dev, budget=budget, config=config, progress=progress
        )
    net.eval()
    fimp_model = _fimp_of(net, model)
    num_layers = len(fimp_model.convs)
    if not -num_layers <= layer < num_layers:
        raise BenchConfigError(
            f"layer must be in [{-num_layers}, {num_layers}) for the trained {num_layers}-layer "
            f"model, got {layer}"
        )
    layer = layer % num_layers

    files: dict[str, str] = {}
    state_path = out / _STATE_FILE
    _atomic_write(state_path, lambda fh: torch.save(net.state_dict(), fh), binary=True)
    files["state"] = str(state_path)

    def maps_of(selection: torch.Tensor | None = None) -> Iterator[Any]:
        masks = edge_masks if selection is None else [selection]
        return _maps(fimp_model, net, graphs, masks, layer=layer, edge_chunk_size=edge_chunk_size)

    summary: dict[str, Any] = {
        **run,
        "layer": layer,
        "num_layers": num_layers,
        "head": head,
        "config": cfg,
        "val": val,
        "best_epoch": best_epoch,
        "edges": "test edges (target is a test node)"
        if prep.level == "node"
        else "all edges of the test graphs",
        "csv_layout": "rows = target tokens, columns = source tokens; full CSVs: rows sum to 1",
        "matrices": {},
    }
    results = {"all": fi.aggregate_by_label(maps_of(), head=head)}
    if groups is not None:
        within = fi.edges_within(graphs[0].cpu(), groups.cpu()).to(dev)
        for name, sel in (("within", within & edge_masks[0]), ("across", ~within & edge_masks[0])):
            if bool(sel.any()):
                results[name] = fi.aggregate_by_label(maps_of(sel), head=head)
        if "within" in results and "across" in results:
            results["within_minus_across"] = fi.difference(results["within"], results["across"])
        for a, b in pairs:
            sel = fi.edges_between(graphs[0].cpu(), groups.cpu(), a, b).to(dev) & edge_masks[0]
            if not bool(sel.any()):
                raise BenchConfigError(
                    f"no test edge has a target in group {a!r} and a source in group {b!r}; "
                    f"groups present: {sorted(set(groups.tolist()))}"
                )
            name = f"pair_{a}_{b}"
            results[name] = fi.aggregate_by_label(maps_of(sel), head=head)
            results[f"{name}_minus_all"] = fi.difference(results[name], results["all"])
    shown = _top_labels(results["all"], top_k or len(results["all"].col_labels))
    label_kind = prep.token_info.get("kind", "token")
    for name, lm in results.items():
        full_csv = out / f"attention_{name}_full.csv"
        write_label_csv(full_csv, lm.matrix, lm.row_labels, lm.col_labels)
        m, rows, cols = _sub(lm, shown)
        top_csv = out / f"attention_{name}_top{len(shown)}.csv"
        write_label_csv(top_csv, m, rows, cols)
        diverging = lm.reduce == "difference"
        title = (
            f"{task} / {model} (seed {seed}), layer {layer + 1} of {num_layers}\n"
            f"{name.replace('_', ' ')} test edges ({lm.num_edges}); "
            f"top {len(shown)} of {len(lm.col_labels)} {label_kind} labels"
        )
        png, svg = _save_heatmap(
            out / f"attention_{name}", m, rows, cols, title=title, diverging=diverging
        )
        files.update(
            {
                f"{name}_full_csv": str(full_csv),
                f"{name}_csv": str(top_csv),
                f"{name}_png": str(png),
                f"{name}_svg": str(svg),
            }
        )
        summary["matrices"][name] = {
            "num_edges": lm.num_edges,
            "labels": len(lm.row_labels),
            "row_weight": None if lm.row_weight is None else lm.row_weight.tolist(),
            "same_label_attention": same_label_attention(lm),
        }
    summary["top_labels"] = shown
    summary_path = out / _SUMMARY_FILE
    files["summary"] = str(summary_path)
    summary["files"] = files
    _atomic_write(summary_path, lambda fh: json.dump(summary, fh, indent=2, default=str))
    return summary


# ------------------------------------------------------------------ CLI
def add_explain_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``explain`` sub-command to the ``fimp-bench`` parser's ``subparsers``."""
    p = subparsers.add_parser(
        "explain",
        help="train a FIMP model and save token-attention heatmaps (PNG/SVG) and CSVs",
        description=(
            "Train a FIMP model on a task (as `run` does) and save label x label attention "
            "heatmaps of its test edges (rows = target tokens, columns = source tokens)."
        ),
    )
    p.add_argument("--task", required=True, help="task name, e.g. spatial-celltype")
    p.add_argument("--model", default="fimp-base", help="a FIMP model (default fimp-base)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="quick", choices=("quick", "full", "smoke"))
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default explain/<task>/<model>/seed-<n>)",
    )
    p.add_argument("--layer", type=int, default=-1, help="FIMPConv layer (default -1, the last)")
    p.add_argument("--top-k", type=int, default=30, help="labels shown per heatmap (0 = all)")
    p.add_argument("--group-by", default=None, help="graph attribute with node groups (default y)")
    p.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="A:B",
        help="also the matrix over edges from group B (source) to group A (target); repeatable",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--budget", type=int, default=None, help="tuning trials (default: preset's)")
    p.add_argument("--checkpoint", type=Path, default=None, help="folder of an earlier explain")
    p.set_defaults(func=run_explain, command="explain")
    return p


def run_explain(args: argparse.Namespace) -> int:
    """Run ``explain`` from parsed CLI arguments; prints the files written. Returns 0."""
    from fimp_bench.models import get_model
    from fimp_bench.records import check_out_dir
    from fimp_bench.tasks import get_task

    get_task(args.task), get_model(args.model)  # unknown names fail before any work
    out = args.out or Path("explain") / args.task / args.model / f"seed-{args.seed}"
    check_out_dir(out)  # before training: a bad --out must not cost minutes
    result = explain(
        args.task,
        args.model,
        seed=args.seed,
        preset=args.preset,
        out=out,
        layer=args.layer,
        group_by=args.group_by,
        pairs=[_parse_pair(p) for p in args.pair],
        top_k=args.top_k,
        device=args.device,
        budget=args.budget,
        checkpoint=args.checkpoint,
        progress=True,
    )
    for name, path in result["files"].items():
        print(f"{name}: {path}")
    same = result["matrices"]["all"]["same_label_attention"]
    if same is not None:
        print(
            f"same-label attention (test edges, layer {result['layer']}): "
            f"{same['mass']:.3f} of each target token's attention goes to the source token with "
            f"its own label (uniform {same['uniform']:.3f}, {same['ratio']:.1f}x)"
        )
    return 0


def _parse_pair(text: str) -> tuple[Any, Any]:
    parts = text.split(":")
    if len(parts) != 2 or not all(parts):
        raise BenchConfigError(f"--pair takes TARGET_GROUP:SOURCE_GROUP, e.g. 3:5; got {text!r}")
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in parts)  # type: ignore[return-value]
