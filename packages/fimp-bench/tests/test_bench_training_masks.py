"""Reconstruction tasks re-draw the masks of their training entries every epoch (task 1.1)."""

import numpy as np
import torch

from conftest import fmri_data, spatial_data
from fimp_bench import train
from fimp_bench.distributed import DistContext
from fimp_bench.tasks import TrainingMasks, get_preset, get_task

SMOKE = get_preset("smoke")


def _spatial():
    return get_task("spatial-expression").prepare(seed=0, preset=SMOKE, data=spatial_data())


def test_spatial_redraw_changes_only_training_rows_with_the_same_ratio_and_fill():
    prep = _spatial()
    g = prep.graphs[0]
    before = (g.x.clone(), g.input_mask.clone())
    out = prep.train_masks.redraw(g, g.train_mask, np.random.default_rng(7))
    # the prepared graph (what evaluation reads) is untouched
    assert torch.equal(g.x, before[0]) and torch.equal(g.input_mask, before[1])
    tr, rest = g.train_mask, ~g.train_mask
    assert torch.equal(out.input_mask[rest], g.input_mask[rest])
    assert torch.equal(out.x[rest], g.x[rest])
    assert not torch.equal(out.input_mask[tr], g.input_mask[tr])
    k = max(1, round(0.15 * g.input_mask.size(1)))
    assert (out.input_mask.sum(1) == k).all()
    m = out.input_mask.numpy()
    x, target = out.x.numpy(), out.target.numpy()
    assert np.array_equal(x[~m], target[~m])  # visible entries are the true values
    mean, _ = prep.train_masks.stats
    rows, cols = np.nonzero(m & tr.numpy()[:, None])
    np.testing.assert_allclose(x[rows, cols], mean[cols], rtol=1e-6)
    # the statistics are the ones the fixed inputs were filled with (training rows, fixed mask)
    fixed = g.input_mask.numpy()[tr.numpy()]
    observed = np.where(fixed, np.nan, g.target.numpy()[tr.numpy()])
    np.testing.assert_allclose(mean, np.nanmean(observed, axis=0), rtol=1e-6)
    assert prep.info["training_masks"] == TrainingMasks.DESCRIPTION
    assert get_task("spatial-expression").version == "1.1"


def test_redraw_is_a_function_of_the_rng_and_differs_between_epochs():
    prep = _spatial()
    ctx = DistContext()
    dev = torch.device("cpu")
    (a, rows_a), (b, _), (c, _) = (
        next(train._node_batches(prep, e, ctx, 2, dev)) for e in (0, 0, 1)
    )
    assert torch.equal(rows_a, prep.graphs[0].train_mask)
    assert torch.equal(a.input_mask, b.input_mask) and torch.equal(a.x, b.x)
    assert not torch.equal(a.input_mask, c.input_mask)


def test_ddp_batches_see_the_masks_of_the_whole_graph():
    """Under DDP the epoch's masks are drawn on the whole graph from (seed, epoch), then cut
    into each rank's k-hop subgraph: both ranks see the same masks on shared nodes."""
    prep = _spatial()
    dev = torch.device("cpu")
    full = train._training_graph(prep, 0, 3, prep.graphs[0].train_mask)
    for rank in (0, 1):
        ctx = DistContext(rank=rank, world=2)
        (sub, rows), *_ = list(train._node_batches(prep, 3, ctx, 1, dev))
        # every training row of the subgraph carries the full graph's epoch-3 mask
        keys = {tuple(r.tolist()) for r in full.target[full.train_mask]}
        got = {tuple(r.tolist()) for r in sub.target[rows]}
        assert got <= keys
        index = {tuple(t.tolist()): i for i, t in enumerate(full.target)}
        for t, m in zip(sub.target[rows], sub.input_mask[rows], strict=True):
            assert torch.equal(m, full.input_mask[index[tuple(t.tolist())]])


def test_fmri_redraw_masks_whole_patches_of_every_training_graph():
    prep = get_task("fmri-reconstruction").prepare(
        seed=0, preset=SMOKE, data=fmri_data(), fill="interpolate"
    )
    assert get_task("fmri-reconstruction").version == "1.1"
    i = prep.train_idx[0]
    g = prep.graphs[i]
    out = train._training_graph(prep, i, 5, None)
    pm = out.input_mask.view(g.num_nodes, -1, 20)
    assert (pm.all(-1) | ~pm.any(-1)).all() and (pm.all(-1).sum(1) == 1).all()
    assert not torch.equal(out.input_mask, g.input_mask)
    # interpolation fills from the node's visible samples, which are the true values
    m = out.input_mask.numpy()
    assert np.array_equal(out.x.numpy()[~m], g.target.numpy()[~m])
    batches = list(train._graph_batches(prep, 5, DistContext(), torch.device("cpu")))
    assert sum(b.num_graphs for b, _ in batches) == len(prep.train_idx)


def test_evaluation_reads_the_fixed_masks():
    prep = _spatial()
    from fimp_bench.models.registry import get_model

    spec = get_model("mlp")
    res = train.train_trial(
        prep, spec, spec.trials(1)[0], device=torch.device("cpu"), progress=False
    )
    g = prep.graphs[0]
    fixed = (g.x.clone(), g.input_mask.clone())
    a = train.evaluate(prep, res.model, "test", device=torch.device("cpu"))
    assert torch.equal(g.x, fixed[0]) and torch.equal(g.input_mask, fixed[1])
    assert a == train.evaluate(prep, res.model, "test", device=torch.device("cpu"))
