"""Benchmark tasks and families (design §4).

=========  =====================  ======================================================
family     task                   metrics
=========  =====================  ======================================================
spatial    spatial-expression     MSE, R^2 on masked entries (15%) of test spots
spatial    spatial-celltype       accuracy, macro-F1
fmri       fmri-reconstruction    MSE, R^2 on masked patches (20%) of test subjects
image      image-country          accuracy, macro-F1 (lat/lon blocks within each country)
image      image-zeroshot         accuracy of a linear probe on frozen embeddings (75/25,
                                  lat/lon blocks within each country)
image      image-zeroshot-random  the same probe on a random 75/25 split (leaks location;
                                  only to reproduce the paper's protocol)
spatial-   spatial-expression-    spatial-expression on spatial-cycif-lung (11,201 single
large      cycif                  cells x 9 protein markers)
spatial-   spatial-celltype-      spatial-celltype on spatial-cycif-lung (8 phenotypes)
large      cycif
fmri-      fmri-reconstruction-   fmri-reconstruction on fmri-fsa4 (4,687 cortical vertices,
large      fsa4                   the mesh as graph; 3 time segments of one run)
=========  =====================  ======================================================

Reconstruction tasks (``*-expression*``, ``fmri-reconstruction*``) mask a fixed set of entries
per seed for validation and test, and re-draw the training entries' masks every epoch
(:class:`TrainingMasks`, task version 1.1; 1.0 kept one fixed mask for training too).
"""

from __future__ import annotations

from fimp_bench.errors import UnknownNameError
from fimp_bench.tasks.base import PRESETS, PreparedTask, Preset, Task, TrainingMasks, get_preset
from fimp_bench.tasks.fmri import FMRIReconstruction, FMRIReconstructionFsa4
from fimp_bench.tasks.image import ImageCountry, ImageZeroShot, ImageZeroShotRandom
from fimp_bench.tasks.spatial import (
    SpatialCellType,
    SpatialCellTypeCyCIF,
    SpatialExpression,
    SpatialExpressionCyCIF,
)

__all__ = [
    "FAMILIES",
    "PRESETS",
    "TASKS",
    "PreparedTask",
    "Preset",
    "Task",
    "TrainingMasks",
    "get_preset",
    "get_task",
    "list_tasks",
    "resolve_tasks",
]

#: Task name -> :class:`Task`, in table order.
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        SpatialExpression(),
        SpatialCellType(),
        FMRIReconstruction(),
        ImageCountry(),
        ImageZeroShot(),
        ImageZeroShotRandom(),
        SpatialExpressionCyCIF(),
        SpatialCellTypeCyCIF(),
        FMRIReconstructionFsa4(),
    )
}
#: Family (``spatial``, ``fmri``, ``image``) -> its task names.
FAMILIES: dict[str, list[str]] = {}
for _t in TASKS.values():
    FAMILIES.setdefault(_t.family, []).append(_t.name)


def list_tasks() -> list[str]:
    """Names of every task, in table order."""
    return list(TASKS)


def get_task(name: str) -> Task:
    """The task called ``name``; :class:`UnknownNameError` lists the valid names."""
    if name not in TASKS:
        raise UnknownNameError(
            f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}; "
            f"families: {', '.join(FAMILIES)}"
        )
    return TASKS[name]


def resolve_tasks(name: str) -> list[Task]:
    """A task name or a family name (``spatial``, ``fmri``, ``image``) -> its tasks."""
    if name in FAMILIES:
        return [TASKS[t] for t in FAMILIES[name]]
    return [get_task(name)]
