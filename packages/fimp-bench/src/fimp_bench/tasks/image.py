"""Image tasks on a geographic image graph: country classification and a zero-shot linear probe.

Node = image (``x`` = flattened ``C x H x W`` pixels), graph = the dataset's recipe (haversine
kNN on lat/lon), label = country. FIMP reads square pixel patches of a size the task fixes per
preset: quick ``image-country`` average-pools the embedded 3x32x32 images to 3x16x16 and reads
8x8 patches (a 2x2 grid, 4 tokens); quick ``image-zeroshot`` (no training) reads the 3x32x32
images in 8x8 patches (16 tokens); ``full`` reads ViT-style 16x16 patches. ``image-country``
splits by blocks of (lat, lon) (``fimp_data.spatial_block_split``); ``image-zeroshot`` trains
nothing: a scikit-learn LogisticRegression is fitted on frozen node embeddings of 75% of the
nodes (random split) and scored on the other 25%.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch_geometric.data import Data

from fimp_bench import _data
from fimp_bench.errors import BenchConfigError
from fimp_bench.tasks._common import (
    class_labels,
    load_node_data,
    node_graph,
    node_info,
    to_numpy,
)
from fimp_bench.tasks.base import PreparedTask, Preset, Task

__all__ = ["ImageCountry", "ImageZeroShot"]

_MAX_NODES = {"quick": None, "full": None, "smoke": 150}
#: Image down-sampling factor per preset (2x2 average pooling: 3x32x32 -> 3x16x16).
_POOL = {"quick": 2, "full": 1, "smoke": 2}
#: FIMP's square pixel patch per preset (after pooling).
_PATCH = {"quick": 8, "full": 16, "smoke": 8}


def _pixels(
    data: Data, train: np.ndarray, image_shape: tuple[int, int, int], pool: int
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Pixels scaled to [0, 1] (uint8 /255), ``pool`` x ``pool`` average-pooled, standardised per
    channel on training nodes. Returns ``([N, C*H'*W'], (C, H', W'))``."""
    x = to_numpy(data.x).astype(np.float32)
    if x.max() > 1.5:
        x = x / 255.0
    c, h, w = image_shape
    if pool > 1:
        t = torch.nn.functional.avg_pool2d(torch.from_numpy(x).view(-1, c, h, w), pool)
        image_shape = (c, h // pool, w // pool)
        x = t.reshape(t.size(0), -1).numpy()
    img = x.reshape(x.shape[0], c, -1)
    mu = img[train].mean(axis=(0, 2), keepdims=True)
    sd = img[train].std(axis=(0, 2), keepdims=True)
    out = ((img - mu) / np.where(sd > 0, sd, 1.0)).reshape(x.shape[0], -1).astype(np.float32)
    return out, image_shape


class _ImageBase(Task):
    family = "image"
    level = "node"
    default_dataset: ClassVar[dict[str, str]] = {
        "quick": "image-georelief",
        "smoke": "image-georelief",
        "full": "image-mapillary",
    }
    split_kind = "spatial_block"
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    pool: ClassVar[dict[str, int]] = _POOL
    patch: ClassVar[dict[str, int]] = _PATCH

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
        data, name, sha = load_node_data(
            self, preset, dataset, data, ("x", "pos", "edge_index", "y"), _MAX_NODES[preset.name]
        )
        image_shape = tuple(int(v) for v in getattr(data, "image_shape", None) or (3, 32, 32))
        split = _data.split_nodes(
            self.split_kind, data, seed=seed, val=self.fractions[1], test=self.fractions[2]
        )
        x, image_shape = _pixels(data, split.train, image_shape, self.pool[preset.name])
        patch = self.patch[preset.name]
        if image_shape[1] % patch or image_shape[2] % patch:
            raise BenchConfigError(
                f"{self.name}: images of {image_shape[1]}x{image_shape[2]} pixels (after "
                f"{self.pool[preset.name]}x pooling) do not split into {patch}x{patch} patches; "
                "use images whose height and width are multiples of the patch size"
            )
        y, num_classes = class_labels(data)
        return PreparedTask(
            task=self,
            preset=preset,
            seed=seed,
            graphs=[node_graph(data, split, x, y=y)],
            in_dim=x.shape[1],
            out_dim=num_classes,
            num_classes=num_classes,
            token_shape=(x.shape[1], 1),
            token_info={"kind": "image", "image_shape": list(image_shape), "patch_size": patch},
            info=node_info(
                data,
                name,
                sha,
                split,
                fill="none",
                num_features=x.shape[1],
                image_shape=list(image_shape),
            ),
        )


class ImageCountry(_ImageBase):
    name = "image-country"
    #: 1.1: FIMP reads 8x8 patches of the pooled 16x16 images (4 tokens; 1.0: 4x4, 16 tokens)
    version = "1.1"
    objective = "classification"
    metrics = ("accuracy", "macro_f1")
    primary_metric = "accuracy"
    description = (
        "Country of each image from its pixels and its geographic neighbours; split by blocks "
        "of (lat, lon) so test images' neighbourhoods are mostly unseen; accuracy and macro-F1."
    )


class ImageZeroShot(_ImageBase):
    name = "image-zeroshot"
    version = "1.0"
    objective = "probe"
    metrics = ("accuracy", "macro_f1")
    primary_metric = "accuracy"
    split_kind = "random"
    fractions = (0.75, 0.0, 0.25)
    #: no training, so no need to shrink: the probe reads embeddings of the full 3x32x32 images
    pool: ClassVar[dict[str, int]] = {"quick": 1, "full": 1, "smoke": 1}
    default_models = (
        "majority",
        "mlp",
        "gcn",
        "gat",
        "graphsage",
        "gin",
        "graph-transformer",
        "gps",
        "fimp-base",
    )
    description = (
        "Zero-shot: no graph training. Frozen node embeddings (untrained models at the seed's "
        "initialisation, or pretrained ones) -> scikit-learn LogisticRegression fitted on a "
        "random 75% of the nodes, accuracy on the other 25%."
    )
