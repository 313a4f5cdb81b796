"""Spatial transcriptomics tasks: masked gene-expression reconstruction and cell-type labels.

Node = spot/cell, graph = the dataset's spatial neighbour graph (fimp_data's registry recipe),
tokens = one per gene of the panel (top-variance genes of the training nodes after log1p), value +
gene id. Split = ``fimp_data.spatial_block_split`` (about 60/20/20 of the spots, in whole blocks).
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import numpy as np
import torch
from torch_geometric.data import Data

from fimp_bench import _data
from fimp_bench.tasks._common import (
    class_labels,
    load_node_data,
    mask_entries,
    node_graph,
    node_info,
    sparse_csr,
    to_numpy,
)
from fimp_bench.tasks.base import (
    PreparedTask,
    Preset,
    Task,
    TrainingMasks,
    fill_masked,
    fill_statistics,
)

__all__ = ["SpatialCellType", "SpatialExpression"]

#: Panel size (tokens per node) and node cap per preset.
_PANEL = {"quick": 32, "full": 256, "smoke": 12}
_MAX_NODES = {"quick": None, "full": None, "smoke": 120}
_VAL, _TEST = 0.2, 0.2


#: Bytes of one float64 block of training rows x genes while computing gene variances.
_VAR_BLOCK_BYTES = 16 << 20


def _column_blocks(n_cols: int, width: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``n_cols`` columns, ``width`` at a time; no block is a
    single column unless there is only one (a one-column block would be summed pairwise by
    numpy, not row by row like the others, and its variance could differ in the last bit)."""
    width = max(2, width)
    edges = [*range(0, n_cols, width), n_cols]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    return list(itertools.pairwise(edges))


def _expression(data: Data, train: np.ndarray, n_genes: int) -> tuple[np.ndarray, list[str]]:
    """log1p values of the ``n_genes`` highest-variance genes (variance on training nodes),
    standardised with training-node mean and std. Returns ``([N, G] float32, gene names)``.

    ``data.x`` may be dense or sparse (fimp_data gives a sparse COO tensor for a sparse
    ``.h5ad``): the variances are computed on blocks of genes of the training rows and only the
    selected panel columns are densified, so a sparse matrix is never dense whole (Slide-seqV2:
    41,786 x 4,000). Dense and sparse input give bit-identical results: both go through the
    same float64 blocks in the same order (log1p(0) = 0 keeps zeros zero).
    """
    csr = sparse_csr(data.x)
    dense = to_numpy(data.x) if csr is None else None
    values = csr.data if csr is not None else dense
    if values.size and values.min() < 0:
        raise ValueError("expression values must be non-negative before log1p")
    n_features = int(data.x.shape[1])
    train = np.asarray(train, dtype=np.int64)
    # training rows, column-sliceable: CSC for sparse input, a float32 copy for dense input
    rows = csr[train].tocsc() if csr is not None else dense[train]
    width = _VAR_BLOCK_BYTES // (8 * max(1, train.size))
    var = np.empty(n_features, dtype=np.float64)
    for start, stop in _column_blocks(n_features, width):
        block = rows[:, start:stop]
        block = block.toarray() if csr is not None else block
        var[start:stop] = np.log1p(block.astype(np.float64)).var(axis=0)
    del rows
    genes = np.sort(np.argsort(-var, kind="stable")[:n_genes])
    panel = csr[:, genes].toarray() if csr is not None else dense[:, genes]
    x = panel.astype(np.float64)
    del panel
    np.log1p(x, out=x)  # in place: the same values as out of place, half the memory
    mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
    x -= mu
    x /= np.where(sd > 0, sd, 1.0)
    names = list(getattr(data, "feature_names", None) or [f"gene{i}" for i in range(n_features)])
    return x.astype(np.float32), [str(names[g]) for g in genes]


def _inputs(n_genes: int, fill: str | None) -> dict[str, str]:
    """What each kind of model reads (information parity, stated in every record)."""
    hidden = f"; masked entries filled ({fill})" if fill else ""
    return {
        "vector_models": f"one vector per spot: the {n_genes} panel genes (log1p, standardised)"
        + hidden,
        "token_models": f"{n_genes} tokens per spot, one per panel gene (gene id + value"
        + ("; masked entries get the mask embedding)" if fill else ")"),
        "parity": "same genes and values (the token models add only the gene identity)",
    }


class _SpatialBase(Task):
    family = "spatial"
    level = "node"
    default_dataset: ClassVar[dict[str, str]] = {
        "quick": "spatial-cscc",
        "smoke": "spatial-cscc",
        "full": "spatial-slideseqv2",
    }

    def _load(
        self, preset: Preset, dataset: str | None, data: Data | None, keys: tuple[str, ...]
    ) -> tuple[Data, str, str]:
        return load_node_data(self, preset, dataset, data, keys, _MAX_NODES.get(preset.name))

    def _split(self, data: Data, seed: int, sha: str) -> _data.SplitIndices:
        return _data.split_nodes("spatial_block", data, seed=seed, val=_VAL, test=_TEST)


class SpatialExpression(_SpatialBase):
    name = "spatial-expression"
    version = "1.1"
    objective = "reconstruction"
    metrics = ("mse", "r2")
    primary_metric = "r2"
    fill_strategies = ("mean", "noise")
    mask_ratio = 0.15
    description = (
        "Masked gene-expression reconstruction: 15% of the (spot, gene) entries of every spot are "
        "hidden; models predict them. MSE and R^2 = 1 - SS_res/SS_tot over all masked entries "
        "of the test spots pooled. Values: log1p, standardised per gene on training spots. "
        "Validation and test spots keep the seed's mask; training spots get a new mask every "
        "epoch (v1.1)."
    )

    def prepare(
        self,
        *,
        seed: int,
        preset: Preset,
        dataset: str | None = None,
        data: Data | None = None,
        fill: str = "mean",
    ) -> PreparedTask:
        self.check_fill(fill)
        data, name, sha = self._load(preset, dataset, data, ("x", "pos", "edge_index"))
        split = self._split(data, seed, sha)
        values, genes = _expression(data, split.train, _PANEL[preset.name])
        rng = np.random.default_rng(seed)
        mask = mask_entries(values.shape, self.mask_ratio, rng)
        stats = fill_statistics(values[split.train], mask[split.train])
        x = fill_masked(values, mask, strategy=fill, stats=stats, rng=rng)
        n_genes, ratio = values.shape[1], self.mask_ratio
        g = node_graph(
            data,
            split,
            x,
            target=torch.from_numpy(values),
            input_mask=torch.from_numpy(mask),
        )
        return PreparedTask(
            task=self,
            preset=preset,
            seed=seed,
            graphs=[g],
            in_dim=values.shape[1],
            out_dim=values.shape[1],
            token_shape=(values.shape[1], 1),
            token_info={"kind": "gene", "genes": genes},
            info=node_info(
                data,
                name,
                sha,
                split,
                fill=fill,
                mask_ratio=self.mask_ratio,
                num_features=values.shape[1],
                inputs=_inputs(values.shape[1], fill),
                training_masks=TrainingMasks.DESCRIPTION,
            ),
            train_masks=TrainingMasks(
                draw=lambda rows, r: mask_entries((rows, n_genes), ratio, r),
                fill=fill,
                stats=stats,
            ),
        )


class SpatialCellType(_SpatialBase):
    name = "spatial-celltype"
    version = "1.0"
    objective = "classification"
    metrics = ("accuracy", "macro_f1")
    primary_metric = "accuracy"
    description = (
        "Cell-type / cluster classification of spots from their gene panel (log1p, standardised "
        "on training spots); accuracy and macro-F1 on the test spots."
    )

    def prepare(
        self,
        *,
        seed: int,
        preset: Preset,
        dataset: str | None = None,
        data: Data | None = None,
        fill: str = "mean",
    ) -> PreparedTask:
        self.check_fill(fill)
        data, name, sha = self._load(preset, dataset, data, ("x", "pos", "edge_index", "y"))
        split = self._split(data, seed, sha)
        values, genes = _expression(data, split.train, _PANEL[preset.name])
        y, num_classes = class_labels(data)
        return PreparedTask(
            task=self,
            preset=preset,
            seed=seed,
            graphs=[node_graph(data, split, values, y=y)],
            in_dim=values.shape[1],
            out_dim=num_classes,
            num_classes=num_classes,
            token_shape=(values.shape[1], 1),
            token_info={"kind": "gene", "genes": genes},
            info=node_info(
                data,
                name,
                sha,
                split,
                fill="none",
                num_features=values.shape[1],
                inputs=_inputs(values.shape[1], None),
            ),
        )


class _CyCIF:
    """Mixin: the same task on ``spatial-cycif-lung`` (11,201 single cells x 9 protein markers,
    kNN graph, 8 phenotypes) in every preset; family ``spatial-large``, so ``--task spatial``
    keeps its quick budget and ``--task spatial-large`` runs these."""

    family = "spatial-large"
    default_dataset: ClassVar[dict[str, str]] = {
        "quick": "spatial-cycif-lung",
        "smoke": "spatial-cycif-lung",
        "full": "spatial-cycif-lung",
    }


class SpatialExpressionCyCIF(_CyCIF, SpatialExpression):
    name = "spatial-expression-cycif"
    version = "1.1"
    description = (
        "Masked protein-marker reconstruction on spatial-cycif-lung (11,201 single cells x 9 "
        "CyCIF markers, kNN graph on the cell centroids): 15% of the (cell, marker) entries of "
        "every cell are hidden; models predict them. MSE and R^2 = 1 - SS_res/SS_tot over all "
        "masked entries of the test cells pooled. Values: log1p, standardised per marker on "
        "training cells. Training cells get a new mask every epoch (v1.1)."
    )


class SpatialCellTypeCyCIF(_CyCIF, SpatialCellType):
    name = "spatial-celltype-cycif"
    version = "1.0"
    description = (
        "Cell phenotype classification on spatial-cycif-lung (11,201 single cells x 9 CyCIF "
        "markers, kNN graph on the cell centroids, 8 phenotypes incl. Unknown) from each cell's "
        "markers (log1p, standardised on training cells); accuracy and macro-F1 on the test "
        "cells. The phenotypes were gated by scimap from these same 9 markers, so a cell's own "
        "markers nearly determine its label: a per-cell model (mlp) is the reference to beat and "
        "graph context can add little."
    )
