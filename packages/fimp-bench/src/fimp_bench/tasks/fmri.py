"""fMRI masked-signal reconstruction (BrainLM-style tokens), split by subject.

Each subject's parcel series ``[R, T]`` is cut into windows of ``window`` TRs (``stride`` apart);
each window is z-scored per region and becomes one graph (node = region, the dataset's kNN graph
on region centres). A region's window is ``window / 20`` tokens of 20 samples (BrainLM patches).
20% of each region's patches are masked; models predict the masked samples. MSE and
R^2 = 1 - SS_res/SS_tot over all masked samples of the test subjects' windows pooled.
Region centres ``pos`` are standardised per axis (mean 0, std 1 over regions) before they reach
a tokenizer (raw atlas/voxel units in the hundreds would swamp the signal term).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch_geometric.data import Data

from fimp_bench import _data
from fimp_bench.errors import BenchConfigError
from fimp_bench.tasks._common import require, to_numpy
from fimp_bench.tasks.base import (
    PreparedTask,
    Preset,
    Task,
    TrainingMasks,
    fill_masked,
    fill_statistics,
)

__all__ = ["FMRIReconstruction", "FMRIReconstructionFsa4"]

PATCH = 20
#: (window, stride, max subjects, max windows per subject) per preset.
_WINDOWS = {
    "quick": (200, 200, None, None),
    "full": (200, 100, None, None),
    "smoke": (40, 40, 5, 2),
}
_VAL, _TEST = 0.2, 0.2


def _patch_mask(rows: int, n_patch: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """bool ``[rows, n_patch * PATCH]``: ``round(ratio * n_patch)`` (at least 1) random
    20-sample patches of every row masked."""
    k = max(1, round(ratio * n_patch))
    order = np.argsort(rng.random((rows, n_patch)), axis=1, kind="stable")
    pmask = np.zeros((rows, n_patch), dtype=bool)
    np.put_along_axis(pmask, order[:, :k], True, axis=1)
    return np.repeat(pmask, PATCH, axis=1)


def _zscore(w: np.ndarray) -> np.ndarray:
    mu = w.mean(axis=1, keepdims=True)
    sd = w.std(axis=1, keepdims=True)
    return (w - mu) / np.where(sd > 0, sd, 1.0)


class FMRIReconstruction(Task):
    name = "fmri-reconstruction"
    family = "fmri"
    version = "1.1"
    level = "graph"
    objective = "reconstruction"
    metrics = ("mse", "r2")
    primary_metric = "r2"
    fill_strategies = ("mean", "noise", "interpolate")
    mask_ratio = 0.2
    default_dataset: ClassVar[dict[str, str]] = {
        "quick": "fmri-hcp",
        "smoke": "fmri-hcp",
        "full": "fmri-ukb",
    }
    description = (
        "Masked BOLD reconstruction: windows of 200 TRs, z-scored per region, 20-sample patches "
        "(BrainLM tokens), 20% of each region's patches masked; MSE and R^2 over all masked "
        "samples of the test subjects. Split by subject (fimp_data.group_split). Validation and "
        "test windows keep the seed's mask; training windows get a new mask every epoch (v1.1)."
    )

    def prepare(
        self,
        *,
        seed: int,
        preset: Preset,
        dataset: str | None = None,
        data: list[Data] | None = None,
        fill: str = "mean",
    ) -> PreparedTask:
        self.check_fill(fill)
        data, name = self.load_data(preset, dataset, data)
        if not isinstance(data, list) or not data:
            raise BenchConfigError(
                f"task {self.name!r} needs a graph-level dataset (a non-empty list of Data, one "
                "per subject); got " + type(data).__name__
            )
        sha = _data.dataset_sha256(data)
        window, stride, max_subjects, max_windows = _WINDOWS[preset.name]
        subjects = data[:max_subjects] if max_subjects else data
        for d in subjects:
            require(d, ("x", "edge_index"), self.name)
        split = _data.split_nodes("group", list(subjects), seed=seed, val=_VAL, test=_TEST)
        rng = np.random.default_rng(seed)
        windows: list[tuple[int, np.ndarray, np.ndarray, Data]] = []
        for s, d in enumerate(subjects):
            series = to_numpy(d.x).astype(np.float64)
            t_len = series.shape[1]
            if t_len < window:
                raise BenchConfigError(
                    f"subject {s} has {t_len} time points; the {preset.name} preset needs at "
                    f"least {window}"
                )
            starts = list(range(0, t_len - window + 1, stride))[:max_windows]
            for start in starts:
                w = _zscore(series[:, start : start + window]).astype(np.float32)
                mask = _patch_mask(w.shape[0], window // PATCH, self.mask_ratio, rng)
                windows.append((s, w, mask, d))
        train_subj = set(split.train.tolist())
        stats = fill_statistics(
            np.concatenate([w for s, w, _, _ in windows if s in train_subj]),
            np.concatenate([m for s, _, m, _ in windows if s in train_subj]),
        )
        graphs, tr, va, te = [], [], [], []
        n_patch, ratio = window // PATCH, self.mask_ratio
        val_subj, test_subj = set(split.val.tolist()), set(split.test.tolist())
        for i, (s, w, mask, d) in enumerate(windows):
            x = fill_masked(w, mask, strategy=fill, stats=stats, rng=rng, time_axis_len=window)
            pos = None
            if getattr(d, "pos", None) is not None:  # region centres, standardised per axis
                p = d.pos.double()
                pos = ((p - p.mean(0)) / p.std(0).clamp_min(1e-12)).float()
            graphs.append(
                Data(
                    x=torch.from_numpy(x),
                    target=torch.from_numpy(w),
                    input_mask=torch.from_numpy(mask),
                    edge_index=d.edge_index,
                    pos=pos,
                    subject=torch.tensor([s]),
                )
            )
            (
                tr if s in train_subj else va if s in val_subj else te if s in test_subj else []
            ).append(i)
        return PreparedTask(
            task=self,
            preset=preset,
            seed=seed,
            graphs=graphs,
            in_dim=window,
            out_dim=window,
            token_shape=(window // PATCH, PATCH),
            token_info={"kind": "timeseries", "patch_size": PATCH, "window": window},
            info={
                "dataset": name,
                "dataset_sha256": sha,
                "split_id": split.split_id,
                "fill": fill,
                "mask_ratio": self.mask_ratio,
                "training_masks": TrainingMasks.DESCRIPTION,
                "num_graphs": len(graphs),
                "num_nodes": int(subjects[0].x.size(0)),
                "num_features": window,
                "window": window,
                "stride": stride,
                "inputs": {
                    "vector_models": f"one vector per region: its {window}-sample window "
                    f"(z-scored), masked samples filled ({fill})",
                    "token_models": f"{window // PATCH} patches of {PATCH} samples per region "
                    "(masked patches get the mask token) + region xyz + time encoding",
                    "parity": "same samples; the token models also see the region's xyz "
                    "(standardised atlas centre), the vector models do not",
                },
            },
            train_idx=tr,
            val_idx=va,
            test_idx=te,
            train_masks=TrainingMasks(
                draw=lambda rows, r: _patch_mask(rows, n_patch, ratio, r),
                fill=fill,
                stats=stats,
                time_axis_len=window,
            ),
        )


class FMRIReconstructionFsa4(FMRIReconstruction):
    """The same task on ``fmri-fsa4``: one resting-state run on the fsaverage4 cortical mesh
    (4,687 vertices, 27,844 mesh edges), cut into 3 time segments that the subject split sends
    to train / validation / test (one 200-TR window each). Family ``fmri-large``."""

    name = "fmri-reconstruction-fsa4"
    family = "fmri-large"
    version = "1.1"
    default_dataset: ClassVar[dict[str, str]] = {
        "quick": "fmri-fsa4",
        "smoke": "fmri-fsa4",
        "full": "fmri-fsa4",
    }
    description = FMRIReconstruction.description + (
        " On fmri-fsa4: 4,687 cortical vertices of one run, graph = the mesh; the 3 time "
        "segments of the run take the place of subjects."
    )
