"""Task specification: what a task fixes (data, tokens, masking, split, metrics, presets)."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch_geometric.data import Data

from fimp_bench import _data
from fimp_bench.errors import BenchConfigError, UnknownNameError

__all__ = [
    "FILL_STRATEGIES",
    "PRESETS",
    "PreparedTask",
    "Preset",
    "Task",
    "TrainingMasks",
    "fill_masked",
    "fill_statistics",
]

FILL_STRATEGIES = ("mean", "noise", "interpolate")


@dataclass(frozen=True)
class Preset:
    """Training budget of a preset.

    Attributes:
        name: ``quick`` (default; embedded data, 2-core CPU), ``full`` (paper scale, GPU) or
            ``smoke`` (a tiny subset, 2 epochs: used by ``validate`` and the CI scripts).
        max_epochs: epochs per trial; ``patience``: early-stopping patience in epochs on the
            validation metric; ``tuning_budget``: number of grid points tried per model and seed
            (the same for every model); ``seeds``: default seeds; ``min_epochs``: early stopping
            cannot stop before this many epochs (models that start on a plateau, such as the
            token models, are not cut off by validation noise in their first epochs);
            ``batch_size``: graphs per step for graph-level tasks; ``overrides``: the values a
            user replaced for one run (``fimp-bench run --max-epochs / --tuning-budget``, see
            :func:`get_preset`), as ``(field, value)`` pairs; recorded in every record's
            ``task_info.training.overrides`` and shown in the leaderboards' epochs column.
    """

    name: str
    max_epochs: int
    patience: int
    tuning_budget: int
    seeds: tuple[int, ...]
    batch_size: int = 8
    min_epochs: int = 0
    overrides: tuple[tuple[str, int], ...] = ()


#: Name -> :class:`Preset` (``quick``, ``full``, ``smoke``).
PRESETS: dict[str, Preset] = {
    # quick: every model gets the same 4 configurations of its own search space (chosen on the
    # first seed by the validation metric), up to 300 epochs each (one full-batch step per
    # epoch for node-level tasks) with early stopping after 20 stale epochs, never before epoch
    # 150, keeping the best-validation epoch. Records carry each trial's learning curve, so
    # convergence can be checked (leaderboards/ANALYSIS.md plots them). min_epochs 150, not 50:
    # the token models start on a validation plateau (R^2 ~ 0, or the majority class) and leave
    # it after a seed-dependent number of steps; the 50-300 leaderboards' trials left it
    # (half-way to their best validation) at epoch 65-73 on fmri-reconstruction, 35-90 on
    # image-country and 96-152 on fmri-reconstruction-fsa4, and trials still on it at epoch 70
    # were stopped there (fimp-base: 3 of 4 seed-0 trials on spatial-celltype; with the floor
    # at 150 they leave it. fimp-base's fmri-reconstruction seeds 0 and 3 stay at R^2 ~ 0 even
    # then: they overfit, train loss falling, and a later stop does not help them). The
    # baselines' best epochs were 2-85 under the 50 floor; a later floor costs them time, not
    # score (the best-validation epoch is kept). max_epochs 300, not 100: with 100, trials of
    # most models still improved at the cap. There is no learning-rate schedule, so a trial that
    # stops early is the same under either cap; early stopping keeps the cost adaptive.
    "quick": Preset(
        "quick", max_epochs=300, patience=20, tuning_budget=4, seeds=(0, 1, 2, 3, 4), min_epochs=150
    ),
    "full": Preset(
        "full", max_epochs=300, patience=30, tuning_budget=8, seeds=tuple(range(10)), min_epochs=150
    ),
    "smoke": Preset("smoke", max_epochs=2, patience=2, tuning_budget=1, seeds=(0,), batch_size=4),
}


#: Preset fields a user may override for one run.
OVERRIDABLE = ("max_epochs", "tuning_budget")


def get_preset(name: str, **overrides: int | None) -> Preset:
    """The :class:`Preset` called ``name`` (``quick``, ``full`` or ``smoke``).

    ``overrides`` replace fields for one run (``max_epochs``, ``tuning_budget``; ``None`` =
    keep the preset's), e.g. a short end-to-end check of the full preset on a small machine.
    The preset keeps its name and data (``full`` still reads the paper-scale dataset and panel)
    and lists the overrides in ``overrides``; ``min_epochs`` is capped at ``max_epochs``.
    """
    if name not in PRESETS:
        raise UnknownNameError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(OVERRIDABLE))
    if unknown:
        raise BenchConfigError(
            f"preset fields {unknown} cannot be overridden; overridable: {', '.join(OVERRIDABLE)}"
        )
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BenchConfigError(f"{key} must be a positive integer, got {value!r}")
    preset = PRESETS[name]
    if not given:
        return preset
    changed = dataclasses.replace(preset, **given, overrides=tuple(sorted(given.items())))
    return dataclasses.replace(changed, min_epochs=min(changed.min_epochs, changed.max_epochs))


@dataclass(frozen=True)
class TrainingMasks:
    """Fresh masks for the training entries of a reconstruction task, drawn every epoch.

    A reconstruction task's fixed mask hides the same entries of a training node in every epoch,
    so a model can memorise the hidden values of each training node (the quick leaderboards'
    baselines reached their best validation R^2 at epochs 3-15 while the training loss kept
    falling). Masked-modelling practice (BERT, scGPT, BrainLM) draws a new mask every step:
    the model then learns to predict hidden entries from visible ones instead. Here the trainer
    calls :meth:`redraw` once per epoch with an RNG seeded by ``(seed, epoch, graph)``, the same
    on every DDP rank, so runs stay deterministic. Only training rows change: validation and test
    rows keep their fixed masks and filled inputs (what their neighbours read, as in evaluation).

    Attributes:
        draw: ``(rows, rng) -> bool [rows, F]``: the task's mask for ``rows`` nodes (the same
            ratio and unit as its fixed mask: entries for genes, 20-sample patches for fMRI).
        fill: the fill strategy of the run (``mean`` / ``noise`` / ``interpolate``).
        stats: ``(mean [F], std [F])`` from ``fill_statistics`` on the training rows under
            their fixed masks (the statistics the fixed inputs were filled with).
        time_axis_len: samples per node for ``interpolate``.
    """

    draw: Callable[[int, np.random.Generator], np.ndarray]
    fill: str
    stats: tuple[np.ndarray, np.ndarray]
    time_axis_len: int | None = None

    #: How the records describe this protocol (``task_info.training_masks``).
    DESCRIPTION: ClassVar[str] = (
        "training entries: a new random mask (same ratio) every epoch; validation/test entries: "
        "the fixed mask of the seed"
    )

    def redraw(self, graph: Data, rows: torch.Tensor | None, rng: np.random.Generator) -> Data:
        """A shallow copy of ``graph`` whose ``rows`` (bool [N]; ``None`` = every node) have a
        new ``input_mask`` and ``x`` (``target`` with the new masked entries filled)."""
        target = graph.target.numpy()
        mask = graph.input_mask.numpy().copy()
        x = graph.x.numpy().copy()
        idx = np.arange(target.shape[0]) if rows is None else np.flatnonzero(rows.cpu().numpy())
        new = self.draw(idx.size, rng)
        mask[idx] = new
        x[idx] = fill_masked(
            target[idx],
            new,
            strategy=self.fill,
            stats=self.stats,
            rng=rng,
            time_axis_len=self.time_axis_len,
        )
        out = copy.copy(graph)
        out.x = torch.from_numpy(x)
        out.input_mask = torch.from_numpy(mask)
        return out


@dataclass
class PreparedTask:
    """Everything the trainer needs for one (task, seed, preset).

    ``graphs`` holds one :class:`~torch_geometric.data.Data` for node-level tasks and many for
    graph-level tasks. Every graph carries:

    - ``x`` ``[N, F]`` float32: the flattened node features with masked entries filled
      (``fill`` strategy) -- what every model reads;
    - ``edge_index`` ``[2, E]``;
    - reconstruction tasks: ``target`` ``[N, F]`` (original values), ``input_mask`` ``[N, F]``
      bool (True = entry hidden from the model and scored);
    - classification / probe tasks: ``y`` ``[N]`` long;
    - node-level tasks: ``train_mask``, ``val_mask``, ``test_mask`` ``[N]`` bool.

    Graph-level splits are index lists into ``graphs`` (``train_idx``, ``val_idx``,
    ``test_idx``). ``token_shape`` = ``(L, p)``: ``x.view(N, L, p)`` is the token layout that
    token models read (genes: ``(F, 1)``; time patches: ``(F/20, 20)``; images: pixels as
    ``(C*H*W, 1)`` with ``token_info["image_shape"]``).

    ``train_masks`` (reconstruction tasks): how the trainer re-draws the masks of the training
    entries every epoch (:class:`TrainingMasks`); the validation and test entries keep the fixed
    masks in ``graphs``, which is also what every evaluation reads.
    """

    task: Task
    preset: Preset
    seed: int
    graphs: list[Data]
    in_dim: int
    out_dim: int
    token_shape: tuple[int, int]
    token_info: dict[str, Any]
    info: dict[str, Any]
    num_classes: int | None = None
    train_idx: list[int] = field(default_factory=list)
    val_idx: list[int] = field(default_factory=list)
    test_idx: list[int] = field(default_factory=list)
    train_masks: TrainingMasks | None = None

    @property
    def level(self) -> str:
        return self.task.level

    @property
    def objective(self) -> str:
        return self.task.objective


class Task(ABC):
    """Base class of a benchmark task. Subclasses set the class attributes and ``prepare``."""

    name: str = ""
    family: str = ""
    version: str = "1"
    level: Literal["node", "graph"] = "node"
    objective: Literal["reconstruction", "classification", "probe"] = "classification"
    default_dataset: ClassVar[dict[str, str]] = {}
    metrics: tuple[str, ...] = ()
    primary_metric: str = ""
    description: str = ""
    default_models: tuple[str, ...] = (
        "mlp",
        "gcn",
        "gat",
        "graphsage",
        "gin",
        "graph-transformer",
        "gps",
        "fimp-base",
    )
    #: ablations (leaderboards/ANALYSIS.md) are the paper's plain layer, no cross-node messages,
    #: one token per node, and GNNs fed the mean of the learned tokens. Run them with
    #: ``--model default,ablations`` (the committed leaderboards do).
    ablation_models: tuple[str, ...] = (
        "fimp-base-plain",
        "fimp-base-nomsg",
        "fimp-base-pooled",
        "gcn-tokenmean",
        "graphsage-tokenmean",
        "graph-transformer-tokenmean",
    )
    fill_strategies: tuple[str, ...] = ("mean",)
    #: The graph a probe task computes its frozen embeddings on. ``"split"``: the training
    #: nodes' on the subgraph of the training nodes, the test nodes' on that of the test nodes,
    #: so no message crosses between the parts and a test embedding holds nothing of a training
    #: node. ``"full"``: every node's on the whole graph (the paper's protocol; a test node
    #: averages its training neighbours' features, which the probe was fitted on).
    probe_graph: Literal["split", "full"] = "split"

    def dataset_for(self, preset: str, dataset: str | None = None) -> str:
        """The dataset name used by ``preset`` (``dataset`` overrides it)."""
        return dataset or self.default_dataset.get(preset) or self.default_dataset["quick"]

    def load_data(
        self,
        preset: Preset,
        dataset: str | None = None,
        data: Data | list[Data] | None = None,
        *,
        root: str | None = None,
        download: bool = True,
    ) -> tuple[Data | list[Data], str]:
        """``(data, name)``: the preset's dataset (``dataset`` overrides it), loaded through
        fimp_data (``root`` and ``download`` as in ``fimp_bench._data.load_dataset``), or the
        ``data`` a caller passed, named by its ``dataset`` attribute."""
        name = self.dataset_for(preset.name, dataset)
        if data is None:
            return _data.load_dataset(name, root=root, download=download), name
        first = data[0] if isinstance(data, list) and data else data
        return data, str(getattr(first, "dataset", None) or "user-data")

    @abstractmethod
    def prepare(
        self,
        *,
        seed: int,
        preset: Preset,
        dataset: str | None = None,
        data: Data | list[Data] | None = None,
        fill: str = "mean",
    ) -> PreparedTask:
        """Load (or take ``data``), tokenize, mask, fill and split for ``seed``."""

    def spec(self) -> dict[str, Any]:
        """A JSON-able description of the task (shown by ``fimp-bench list tasks``)."""
        return {
            "task": self.name,
            "family": self.family,
            "version": self.version,
            "level": self.level,
            "objective": self.objective,
            "datasets": dict(self.default_dataset),
            "metrics": list(self.metrics),
            "primary_metric": self.primary_metric,
            "description": self.description,
        }

    def check_fill(self, fill: str) -> None:
        if fill not in self.fill_strategies:
            raise BenchConfigError(
                f"fill strategy {fill!r} is not available for task {self.name!r}; "
                f"choose one of {', '.join(self.fill_strategies)}"
            )


def fill_statistics(
    reference: np.ndarray, reference_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std ``([F], [F])`` of the observed (unmasked) entries of
    ``reference`` ``[M, F]`` (the training nodes); a feature masked in every row gets 0 and 1."""
    observed = np.where(reference_mask, np.nan, reference).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(observed, axis=0), nan=0.0)
        std = np.nan_to_num(np.nanstd(observed, axis=0), nan=1.0)
    return mean, std


def fill_masked(
    x: np.ndarray,
    mask: np.ndarray,
    *,
    strategy: str,
    reference: np.ndarray | None = None,
    reference_mask: np.ndarray | None = None,
    rng: np.random.Generator,
    time_axis_len: int | None = None,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Fill the masked entries of ``x`` for models that read one vector per node.

    Args:
        x: ``[N, F]`` values; ``mask``: ``[N, F]`` bool, True = masked (to fill).
        strategy: ``mean`` (per-feature mean of the observed entries of ``reference``, i.e. the
            training nodes), ``noise`` (Gaussian with that per-feature mean and std), or
            ``interpolate`` (linear interpolation in time between the node's nearest observed
            samples; ``time_axis_len`` = samples per node, features are time-ordered).
        reference, reference_mask: ``[M, F]`` training values and their masks (statistics source).
        stats: the ``(mean, std)`` of :func:`fill_statistics`, instead of ``reference``.

    Returns:
        ``[N, F]`` float32 copy with masked entries replaced.
    """
    out = x.astype(np.float32, copy=True)
    if stats is None:
        if reference is None or reference_mask is None:
            raise BenchConfigError("fill_masked needs reference and reference_mask, or stats")
        stats = fill_statistics(reference, reference_mask)
    mean, std = stats
    if strategy == "mean":
        out[mask] = np.broadcast_to(mean, x.shape)[mask]
    elif strategy == "noise":
        noise = rng.standard_normal(x.shape) * std + mean
        out[mask] = noise[mask]
    elif strategy == "interpolate":
        if time_axis_len is None:
            raise BenchConfigError("fill='interpolate' needs time-ordered features (fMRI tasks)")
        t = np.arange(x.shape[1])
        for i in np.flatnonzero(mask.any(axis=1)):
            keep = ~mask[i]
            if keep.sum() == 0:
                out[i] = mean
                continue
            out[i, mask[i]] = np.interp(t[mask[i]], t[keep], x[i, keep])
    else:
        raise BenchConfigError(
            f"unknown fill strategy {strategy!r}; choose one of {', '.join(FILL_STRATEGIES)}"
        )
    return out


def as_long(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.long)
