"""The training loop: seeds, tuning grid, early stopping, DDP, zero-shot probes, records.

One explicit loop, no framework. Per (task, model, seed): for each configuration of the model's
tuning grid (the preset's ``tuning_budget``, the same for every model) the model is initialised
from the seed, trained with AdamW up to ``max_epochs`` with early stopping on the task's primary
validation metric (``patience`` epochs, never before ``min_epochs``; there is no learning-rate
schedule, so a trial that stops early does not depend on ``max_epochs``), and the
best-validation checkpoint is kept. The trial with the best validation metric is evaluated on
the test split. Reconstruction tasks re-draw the masks of the training entries every epoch
(:class:`~fimp_bench.tasks.TrainingMasks`). Node-level tasks train full-batch (all training nodes in one step) in one process; under DDP each rank trains on k-hop subgraphs of its
share of the training nodes (see :mod:`fimp_bench.distributed`), which gives the same gradient.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import k_hop_subgraph
from tqdm.auto import tqdm

from fimp_bench.distributed import DistContext
from fimp_bench.errors import BenchConfigError
from fimp_bench.metrics import METRIC_DIRECTIONS, classification_metrics, reconstruction_metrics
from fimp_bench.models.registry import ModelSpec
from fimp_bench.tasks.base import PreparedTask

__all__ = [
    "TrialResult",
    "count_parameters",
    "evaluate",
    "resolve_device",
    "run_benchmark",
    "seed_everything",
    "train_trial",
]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - third-party code draws from it
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cpu``; ``cuda`` (error if unavailable)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchConfigError("--device cuda was requested but torch sees no CUDA device; use cpu")
    if device not in ("cpu", "cuda"):
        raise BenchConfigError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


@contextlib.contextmanager
def deterministic(device: torch.device):
    """``torch.use_deterministic_algorithms(True)`` on CPU for the duration; restores the flag."""
    old = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, frozen)`` = sums of ``p.numel()`` over parameters with/without grad."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return int(trainable), int(frozen)


def _better(a: float, b: float | None, metric: str) -> bool:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return not math.isnan(a)
    return a * METRIC_DIRECTIONS[metric] > b * METRIC_DIRECTIONS[metric]


def _precision(device: torch.device, bf16: bool) -> str:
    """What a run computes in, as its record states it: ``--bf16`` autocasts on CUDA only (on
    this project's CPU bf16 was ~3x slower, benchmarks/bench_step_variants.py)."""
    return "bf16 autocast" if bf16 and device.type == "cuda" else "fp32"


def _autocast(device: torch.device, bf16: bool):
    if _precision(device, bf16) == "bf16 autocast":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _forward(model, data, device, bf16) -> dict[str, torch.Tensor]:
    with _autocast(device, bf16):
        out = model(data)
    return {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}


def _loss_sum(prep: PreparedTask, out: torch.Tensor, data, rows: torch.Tensor | None):
    """Sum of the per-entry (reconstruction) or per-node (classification) loss over ``rows``
    (all nodes when None), and the number of terms."""
    if prep.objective == "reconstruction":
        mask = data.input_mask if rows is None else data.input_mask & rows[:, None]
        diff = (out - data.target)[mask]
        return (diff * diff).sum(), diff.numel()
    logits, y = (out, data.y) if rows is None else (out[rows], data.y[rows])
    return torch.nn.functional.cross_entropy(logits, y, reduction="sum"), y.numel()


@torch.no_grad()
def evaluate(
    prep: PreparedTask,
    model: torch.nn.Module,
    split: str,
    *,
    device: torch.device,
    bf16: bool = False,
) -> dict[str, float]:
    """Metrics of ``model`` on ``split`` (``val`` or ``test``), the task's evaluator output."""
    model.eval()
    if prep.level == "node":
        g = prep.graphs[0].to(device)
        out = _forward(model, g, device, bf16)["out"]
        rows = getattr(g, f"{split}_mask")
        if prep.objective == "reconstruction":
            return reconstruction_metrics(out[rows], g.target[rows], g.input_mask[rows])
        return classification_metrics(out[rows], g.y[rows])
    idx = prep.val_idx if split == "val" else prep.test_idx
    preds, targets, masks = [], [], []
    for start in range(0, len(idx), prep.preset.batch_size):
        batch = Batch.from_data_list(
            [prep.graphs[i] for i in idx[start : start + prep.preset.batch_size]]
        )
        batch = batch.to(device)
        preds.append(_forward(model, batch, device, bf16)["out"].cpu())
        targets.append(batch.target.cpu())
        masks.append(batch.input_mask.cpu())
    return reconstruction_metrics(torch.cat(preds), torch.cat(targets), torch.cat(masks))


@dataclass
class TrialResult:
    """One trained configuration."""

    config: dict[str, Any]
    model: torch.nn.Module
    best_epoch: int
    val: dict[str, float]
    epochs_run: int
    history: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)

    def curve(self) -> dict[str, list[float]]:
        """The learning curve for the record: validation primary metric and mean training loss
        per epoch (rounded to 6 significant digits; non-finite values become None)."""

        def clean(v: float) -> float | None:
            return float(f"{v:.6g}") if math.isfinite(v) else None

        return {
            "val": [clean(v) for v in self.history],
            "train_loss": [clean(v) for v in self.train_loss],
        }


def _epoch_rng(prep: PreparedTask, epoch: int, graph: int = 0) -> np.random.Generator:
    """The RNG of one epoch's training masks of one graph: a function of (seed, epoch, graph)
    only, so every DDP rank draws the same masks and a re-run draws them again."""
    return np.random.default_rng([prep.seed, epoch, graph])


def _training_graph(prep: PreparedTask, i: int, epoch: int, rows: torch.Tensor | None):
    """Graph ``i`` as one training epoch sees it: with fresh masks on ``rows`` (every node when
    None) where the task re-draws training masks (:class:`~fimp_bench.tasks.TrainingMasks`)."""
    g = prep.graphs[i]
    if prep.train_masks is None:
        return g
    return prep.train_masks.redraw(g, rows, _epoch_rng(prep, epoch, i))


def _node_batches(prep: PreparedTask, epoch: int, ctx: DistContext, hops: int, device):
    """This rank's training batches of one epoch: the whole graph with a row selector in one
    process; k-hop subgraphs around the rank's seeds under DDP."""
    g = _training_graph(prep, 0, epoch, prep.graphs[0].train_mask)
    if not ctx.enabled:
        yield g.to(device), g.train_mask.to(device)
        return
    seeds = torch.nonzero(g.train_mask).flatten()
    gen = torch.Generator().manual_seed(prep.seed * 100_003 + epoch)
    seeds = seeds[torch.randperm(seeds.numel(), generator=gen)]
    local = seeds[ctx.rank :: ctx.world]
    subset, ei, mapping, _ = k_hop_subgraph(
        local, hops + 1, g.edge_index, relabel_nodes=True, num_nodes=g.num_nodes
    )
    sub = Data(edge_index=ei, num_nodes=subset.numel())
    for key in ("x", "y", "target", "input_mask", "pos"):
        if getattr(g, key, None) is not None:
            sub[key] = g[key][subset]
    rows = torch.zeros(subset.numel(), dtype=torch.bool)
    rows[mapping] = True
    yield sub.to(device), rows.to(device)


def _graph_batches(prep: PreparedTask, epoch: int, ctx: DistContext, device):
    sampler = torch.utils.data.DistributedSampler(
        prep.train_idx, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=prep.seed
    )
    sampler.set_epoch(epoch)
    order = [prep.train_idx[i] for i in sampler]
    per_rank = max(1, prep.preset.batch_size // ctx.world)
    for start in range(0, len(order), per_rank):
        graphs = [_training_graph(prep, i, epoch, None) for i in order[start : start + per_rank]]
        yield Batch.from_data_list(graphs).to(device), None


def train_trial(
    prep: PreparedTask,
    spec: ModelSpec,
    config: dict[str, Any],
    *,
    device: torch.device,
    bf16: bool = False,
    ctx: DistContext | None = None,
    progress: bool = True,
    desc: str = "",
) -> TrialResult:
    """Train ``spec`` with ``config`` on ``prep`` (seeded from ``prep.seed``), early-stopping on
    the task's primary validation metric; returns the best-validation model.

    With ``progress=False`` (``--no-progress``) no bar is drawn; instead one line per finished
    trial goes to stderr (best validation score and epoch, epochs run, seconds), so a batch job's
    log shows where a long run stands."""
    ctx = ctx or DistContext()
    t0 = time.perf_counter()
    seed_everything(prep.seed)
    model = spec.build(prep, config).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise BenchConfigError(
            f"model {spec.name!r} has no trainable parameters for a trained task"
        )
    ddp = (
        torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        if ctx.enabled
        else model
    )
    opt = torch.optim.AdamW(
        params, lr=float(config["lr"]), weight_decay=float(config.get("weight_decay", 0.0))
    )
    metric = prep.task.primary_metric
    best, best_state, best_epoch, best_val, stale = None, None, -1, {}, 0
    history: list[float] = []
    train_loss: list[float] = []
    hops = spec.num_hops(config)
    bar = tqdm(
        range(prep.preset.max_epochs),
        desc=desc or spec.name,
        leave=False,
        disable=not (progress and ctx.is_main),
        unit="ep",
    )
    epoch = 0
    for epoch in bar:
        ddp.train()
        batches = (
            _node_batches(prep, epoch, ctx, hops, device)
            if prep.level == "node"
            else _graph_batches(prep, epoch, ctx, device)
        )
        epoch_loss, epoch_terms = 0.0, 0
        for data, rows in batches:
            opt.zero_grad(set_to_none=True)
            out = _forward(ddp, data, device, bf16)["out"]
            loss_sum, count = _loss_sum(prep, out, data, rows)
            total = ctx.all_reduce_sum(torch.tensor(float(count), device=device))
            loss = loss_sum / total.clamp_min(1.0) * ctx.world
            loss.backward()
            opt.step()
            epoch_loss += float(loss_sum.detach())
            epoch_terms += count
        train_loss.append(epoch_loss / max(epoch_terms, 1))
        val = evaluate(prep, model, "val", device=device, bf16=bf16)
        history.append(val[metric])
        bar.set_postfix({metric: f"{val[metric]:.4f}"})
        if _better(val[metric], best, metric):
            best, best_epoch, best_val, stale = val[metric], epoch, val, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= prep.preset.patience and epoch + 1 >= prep.preset.min_epochs:
                break
    bar.close()
    if not progress and ctx.is_main:
        score = "none (no finite value)" if best is None else f"{best:.4f}"
        print(
            f"fimp-bench: {desc or spec.name}: best val {metric} {score} at epoch "
            f"{best_epoch + 1} of {epoch + 1} run ({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrialResult(config, model, best_epoch, best_val, epoch + 1, history, train_loss)


@torch.no_grad()
def probe_embeddings(
    prep: PreparedTask, model: torch.nn.Module, device: torch.device
) -> np.ndarray:
    """Frozen node embeddings [N, d] of a node-level probe task, on the graph the task's
    ``probe_graph`` names: ``"split"`` runs ``model`` once on the subgraph of the training nodes
    and once on that of the test nodes (no message between the two; other nodes' rows stay 0),
    ``"full"`` once on the whole graph."""
    g = prep.graphs[0].to(device)
    if prep.task.probe_graph == "full":
        return model(g)["embedding"].float().cpu().numpy()
    emb = None
    for part in (g.train_mask, g.test_mask):
        out = model(g.subgraph(part))["embedding"].float().cpu().numpy()
        if emb is None:
            emb = np.zeros((g.num_nodes, out.shape[1]), dtype=out.dtype)
        emb[part.cpu().numpy()] = out
    return emb


def probe(prep: PreparedTask, spec: ModelSpec, config: dict[str, Any], *, device: torch.device):
    """Zero-shot: frozen embeddings of the seed-initialised (or pretrained) model
    (:func:`probe_embeddings`) -> StandardScaler + LogisticRegression fitted on the training
    nodes, scored on the test nodes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    seed_everything(prep.seed)
    model = spec.build(prep, config).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    emb = probe_embeddings(prep, model, device)
    g = prep.graphs[0]
    y = g.y.cpu().numpy()
    tr, te = g.train_mask.cpu().numpy(), g.test_mask.cpu().numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=prep.seed))
    clf.fit(emb[tr], y[tr])
    return model, classification_metrics(clf.predict(emb[te]), y[te])


@dataclass
class SeedResult:
    """The outcome of one (task, model, seed): what goes into the record."""

    config: dict[str, Any]
    trials: list[dict[str, Any]]
    val: dict[str, float]
    test: dict[str, float]
    best_epoch: int | None
    params_trainable: int
    params_frozen: int
    wall_time_s: float
    peak_memory: dict[str, Any]
    mode: str


def run_seed(
    prep: PreparedTask,
    spec: ModelSpec,
    *,
    device: torch.device,
    bf16: bool = False,
    ctx: DistContext | None = None,
    progress: bool = True,
    budget: int | None = None,
) -> SeedResult:
    """Tune (grid of ``budget`` points), train and test one model on one prepared task/seed."""
    ctx = ctx or DistContext()
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    budget = prep.preset.tuning_budget if budget is None else budget
    with deterministic(device):
        if prep.objective == "probe":
            config = spec.trials(1)[0]
            model, test = probe(prep, spec, config, device=device)
            trials = [{"config": config, "val": {}}]
            val, best_epoch, mode = {}, None, "zero-shot"
        else:
            metric = prep.task.primary_metric
            results = []
            for i, cfg in enumerate(spec.trials(budget)):
                desc = f"{prep.task.name}/{spec.name}/s{prep.seed} trial {i + 1}/{budget}"
                results.append(
                    train_trial(
                        prep,
                        spec,
                        cfg,
                        device=device,
                        bf16=bf16,
                        ctx=ctx,
                        progress=progress,
                        desc=desc,
                    )
                )
            best_i = 0
            for i, r in enumerate(results):
                if _better(r.val[metric], results[best_i].val[metric], metric) and i != best_i:
                    best_i = i
            chosen = results[best_i]
            model, config, val, best_epoch = (
                chosen.model,
                chosen.config,
                chosen.val,
                chosen.best_epoch,
            )
            test = evaluate(prep, model, "test", device=device, bf16=bf16)
            trials = [
                {
                    "config": r.config,
                    "val": r.val,
                    "best_epoch": r.best_epoch,
                    "epochs_run": r.epochs_run,
                    "curve": r.curve(),
                }
                for r in results
            ]
            mode = "trained"
    trainable, frozen = count_parameters(model)
    if mode == "zero-shot":
        trainable, frozen = 0, trainable + frozen
    if device.type == "cuda":
        peak = {
            "bytes": int(torch.cuda.max_memory_allocated(device)),
            "method": "torch.cuda.max_memory_allocated (GPU tensors, this run)",
        }
    else:
        peak = {
            "bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
            "method": "ru_maxrss (peak resident set size of the whole process so far, CPU)",
        }
    return SeedResult(
        config=config,
        trials=trials,
        val=val,
        test=test,
        best_epoch=best_epoch,
        params_trainable=trainable,
        params_frozen=frozen,
        wall_time_s=time.perf_counter() - t0,
        peak_memory=peak,
        mode=mode,
    )


def build_record(
    prep: PreparedTask,
    spec: ModelSpec,
    result: SeedResult,
    *,
    device: torch.device,
    tuning: dict[str, Any],
    world_size: int = 1,
    bf16: bool = False,
) -> dict[str, Any]:
    """The schema-valid record of one (task, model, seed); ``task_info.training.precision`` says
    whether it ran in fp32 or under bf16 autocast, ``task_info.training.allocator`` how the
    process's malloc was set (:mod:`fimp_bench._allocator`; wall times depend on it)."""
    from fimp_bench._allocator import allocator_setting
    from fimp_bench.records import SCHEMA_VERSION, environment_info, hardware_string

    env = environment_info()
    return {
        "schema_version": SCHEMA_VERSION,
        "task": prep.task.name,
        "task_version": prep.task.version,
        "dataset": {"name": prep.info["dataset"], "sha256": prep.info["dataset_sha256"]},
        "split_id": prep.info["split_id"],
        "model": {
            "name": spec.name,
            "registry_key": spec.name,
            "source": spec.source,
            "implementation": spec.implementation,
            "external_weights": [dict(w) for w in spec.external_weights],
        },
        "seed": int(prep.seed),
        "preset": prep.preset.name,
        "mode": result.mode,
        "fill": prep.info.get("fill", "none"),
        "config": result.config,
        "tuning": tuning,
        "metrics": {"val": result.val, "test": result.test},
        "best_epoch": result.best_epoch,
        "params": {"trainable": result.params_trainable, "frozen": result.params_frozen},
        "wall_time_s": round(result.wall_time_s, 3),
        "peak_memory": result.peak_memory,
        "hardware": hardware_string(device),
        "device": device.type,
        "world_size": int(world_size),
        "versions": env["versions"],
        "git": env["git"],
        "date": env["date"],
        "task_info": {
            **{k: v for k, v in prep.info.items() if k not in ("dataset_sha256",)},
            "training": {
                "max_epochs": prep.preset.max_epochs,
                "min_epochs": prep.preset.min_epochs,
                "patience": prep.preset.patience,
                "batch_size": prep.preset.batch_size,
                "optimizer": "AdamW",
                "precision": _precision(device, bf16),
                "allocator": allocator_setting(),
                **({"overrides": dict(prep.preset.overrides)} if prep.preset.overrides else {}),
            },
        },
    }


def expand_model_names(task, models: list[str] | None) -> list[str]:
    """Model names for ``task``: ``None`` = its default models; the aliases ``default`` and
    ``ablations`` expand to the task's default / ablation models (duplicates dropped)."""
    out: list[str] = []
    for name in models or ["default"]:
        group = {"default": task.default_models, "ablations": task.ablation_models}.get(name)
        for n in group if group is not None else (name,):
            if n not in out:
                out.append(n)
    return out


def run_hash(prep: PreparedTask, spec: ModelSpec, *, bf16: bool = False) -> str:
    """sha256 (16 hex) of everything that decides a (task, model, seed) run besides the seed:
    task + version, dataset + checksum, split id, preset budget, fill, the model's defaults and
    the grid points its budget takes, bf16. Stored in the record (``run_hash``) so that a
    restarted ``fimp-bench run`` can skip runs already done with the same configuration."""
    import hashlib
    import json

    p = prep.preset
    payload = {
        "task": prep.task.name,
        "task_version": prep.task.version,
        "dataset": [prep.info["dataset"], prep.info["dataset_sha256"]],
        "split_id": prep.info["split_id"],
        "preset": [p.name, p.max_epochs, p.min_epochs, p.patience, p.tuning_budget, p.batch_size],
        "fill": prep.info.get("fill", "none"),
        "model": spec.name,
        "defaults": spec.defaults,
        "grid": list(spec.grid[: max(1, p.tuning_budget)]),
        "bf16": bool(bf16),
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _existing_record(
    path, expected_hash: str, force: bool, rerun_changed: bool = False
) -> dict[str, Any] | None:
    """The record already at ``path`` if it was made by the same configuration (unless
    ``force``); a record from another configuration is never overwritten silently: an error,
    or, with ``rerun_changed``, ``None`` after saying on stderr that it will be replaced."""

    from fimp_bench.errors import RecordError
    from fimp_bench.records import read_record

    if not path.exists():
        return None
    try:
        old = read_record(path)
    except RecordError:
        if force:
            return None
        raise
    if force:
        return None
    if old.get("run_hash") != expected_hash:
        if rerun_changed:
            print(
                f"fimp-bench: {path}: made by a different configuration (run_hash "
                f"{old.get('run_hash')!r}, task version {old.get('task_version')!r}); re-running "
                "it and replacing the record (--rerun-changed)",
                file=sys.stderr,
            )
            return None
        raise BenchConfigError(
            f"{path} holds a record from a different configuration (run_hash "
            f"{old.get('run_hash')!r}, this run {expected_hash!r}); use another --out, pass "
            "--rerun-changed to re-run the runs whose configuration changed, or --force to "
            "re-run every run"
        )
    return old


def run_benchmark(
    tasks: list,
    models: list[str] | None,
    seeds: list[int],
    *,
    preset: str = "quick",
    dataset: str | None = None,
    device: str = "auto",
    fill: str = "mean",
    bf16: bool = False,
    out: str | None = None,
    progress: bool = True,
    ctx: DistContext | None = None,
    data=None,
    data_root: str | None = None,
    download: bool = True,
    overrides: dict[str, int | None] | None = None,
    force: bool = False,
    rerun_changed: bool = False,
) -> list[dict[str, Any]]:
    """Run every (task, model, seed); write records under ``out`` (rank 0 only); return them.

    The tuning grid (``tuning_budget`` points) is searched on the first seed of ``seeds``; the
    selected configuration is then trained on every other seed (recorded in ``tuning``).
    ``models=None`` runs each task's default models. Each task's dataset is loaded once (from
    ``data_root`` if given; missing registered files downloaded unless ``download=False``) and
    shared by its seeds. ``overrides`` (``max_epochs``, ``tuning_budget``) replace preset fields
    for this run (see :func:`fimp_bench.tasks.get_preset`); the records list them.

    Resume: a (task, model, seed) whose record already exists under ``out`` with the same
    :func:`run_hash` is skipped (said on stderr) and its record reused (also its tuning choice
    for the later seeds); ``force=True`` re-runs it. A record from another configuration (a
    changed config, task version, dataset, ...) is never overwritten silently:
    :class:`BenchConfigError`, unless ``force`` or ``rerun_changed`` (re-run only those, skip the
    unchanged ones, and say which on stderr).
    """

    from fimp_bench.models import get_model
    from fimp_bench.records import write_record
    from fimp_bench.tasks import get_preset

    ctx = ctx or DistContext()
    dev = resolve_device(device)
    pre = get_preset(preset, **(overrides or {}))
    records: list[dict[str, Any]] = []
    for task in tasks:
        names = expand_model_names(task, models)
        specs = [get_model(n) for n in names]
        task_data = data
        if task_data is None:
            task_data, _ = task.load_data(pre, dataset, root=data_root, download=download)
        chosen: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        seed_bar = tqdm(
            seeds, desc=f"{task.name} seeds", disable=not (progress and ctx.is_main), unit="seed"
        )
        for seed in seed_bar:
            prep = task.prepare(seed=seed, preset=pre, dataset=dataset, data=task_data, fill=fill)
            for spec in specs:
                seed_bar.set_postfix(model=spec.name)
                rhash = run_hash(prep, spec, bf16=bf16)
                if out is not None:
                    from fimp_bench.records import record_path

                    path = record_path(out, task.name, spec.name, seed)
                    old = _existing_record(path, rhash, force, rerun_changed)
                    if old is not None:
                        if ctx.is_main:
                            print(
                                f"fimp-bench: {task.name}/{spec.name}/seed {seed}: record exists "
                                "with the same configuration, skipped (--force re-runs it)",
                                file=sys.stderr,
                            )
                        if spec.name not in chosen and prep.objective != "probe":
                            chosen[spec.name] = (old["config"], old["tuning"])
                        records.append(old)
                        continue
                if spec.name in chosen and prep.objective != "probe":
                    cfg, tuning = chosen[spec.name]
                    tuned = ModelSpec(**{**spec.__dict__, "defaults": cfg, "grid": ({},)})
                    result = run_seed(
                        prep, tuned, device=dev, bf16=bf16, ctx=ctx, progress=progress, budget=1
                    )
                    tuning = {**tuning, "trials": result.trials, "selected": 0}
                else:
                    result = run_seed(prep, spec, device=dev, bf16=bf16, ctx=ctx, progress=progress)
                    vals = [t["val"].get(task.primary_metric) for t in result.trials]
                    selected = next(
                        (i for i, t in enumerate(result.trials) if t["config"] == result.config), 0
                    )
                    tuning = {
                        "budget": len(result.trials)
                        if prep.objective == "probe"
                        else prep.preset.tuning_budget,
                        "selection_metric": f"val {task.primary_metric}",
                        "tuned_on_seed": int(seed),
                        "grid_val": vals,
                        "trials": result.trials,
                        "selected": selected,
                    }
                    chosen[spec.name] = (result.config, tuning)
                record = build_record(
                    prep, spec, result, device=dev, tuning=tuning, world_size=ctx.world, bf16=bf16
                )
                record["run_hash"] = rhash
                records.append(record)
                if out is not None and ctx.is_main:
                    write_record(record, out)
        seed_bar.close()
    return records
