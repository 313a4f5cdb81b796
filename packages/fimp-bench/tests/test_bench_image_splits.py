"""Image task splits on the embedded image-georelief: every val/test country is in train
(region blocks within each country); image-zeroshot-random keeps the paper's random 75/25."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

import fimp_data
from fimp_bench.tasks import FAMILIES, get_preset, get_task, resolve_tasks

QUICK, SMOKE = get_preset("quick"), get_preset("smoke")


@pytest.fixture(scope="module")
def georelief():
    return fimp_data.load("image-georelief")


def _parts(prep):
    g = prep.graphs[0]
    y = g.y.numpy()
    return y, [np.flatnonzero(g[m].numpy()) for m in ("train_mask", "val_mask", "test_mask")]


@pytest.mark.parametrize("seed", [0, 1])
def test_image_country_val_and_test_countries_are_in_train(seed):
    prep = get_task("image-country").prepare(seed=seed, preset=QUICK)  # loads image-georelief
    y, (tr, va, te) = _parts(prep)
    n = y.shape[0]
    assert prep.info["dataset"] == "image-georelief" and n == 3288
    assert prep.info["split_method"] == "spatial_block, stratified by country"
    assert np.isin(y[te], y[tr]).all() and np.isin(y[va], y[tr]).all()
    assert np.unique(np.concatenate([tr, va, te])).size == n
    # ~60/20/20 targets per country; small countries rarely give a val block (about 69/12/19)
    assert 0.15 < te.size / n < 0.25 and 0.08 < va.size / n < 0.25
    assert np.unique(y[te]).size > 80  # most of the 113 countries are tested


@pytest.mark.parametrize("seed", [0, 1])
def test_image_zeroshot_probe_test_countries_are_in_train(seed):
    prep = get_task("image-zeroshot").prepare(seed=seed, preset=QUICK)
    y, (tr, va, te) = _parts(prep)
    assert prep.info["split_method"] == "spatial_block, stratified by country"
    assert va.size == 0 and np.isin(y[te], y[tr]).all()
    assert 0.2 < te.size / y.shape[0] < 0.3
    assert prep.info["split_id"].startswith("spatial_block-")


def test_image_zeroshot_random_is_the_random_75_25_split(georelief):
    task = get_task("image-zeroshot-random")
    assert task.family == "image" and task.objective == "probe"
    assert task.default_models == ("majority", "mlp", "gcn", "fimp-base")
    assert "leaks location" in task.description and "paper" in task.description
    prep = task.prepare(seed=0, preset=QUICK, data=georelief)
    _, (tr, va, te) = _parts(prep)
    assert prep.info["split_id"].startswith("random-") and prep.info["split_method"] == "random"
    assert (tr.size, va.size, te.size) == (3288 - 822, 0, 822)  # round(0.25 * 3288)
    # a random split, not a region-block one: test images sit among training images
    assert not np.array_equal(
        te, _parts(get_task("image-zeroshot").prepare(seed=0, preset=QUICK, data=georelief))[1][2]
    )


def test_image_family_and_versions():
    names = [t.name for t in resolve_tasks("image")]
    assert names == ["image-country", "image-zeroshot", "image-zeroshot-random"]
    assert FAMILIES["image"] == names
    assert get_task("image-country").version == "1.2"
    assert get_task("image-zeroshot").version == "1.2"
    assert get_task("image-zeroshot-random").version == "1.0"


@pytest.mark.parametrize("name", ["image-country", "image-zeroshot"])
def test_smoke_preset_keeps_train_and_test(georelief, name):
    for seed in (0, 1):
        prep = get_task(name).prepare(seed=seed, preset=SMOKE, data=georelief)
        y, (tr, _va, te) = _parts(prep)
        assert y.shape[0] == 150 and tr.size > 0 and te.size > 0
        assert np.isin(y[te], y[tr]).all()


def test_one_block_per_country_falls_back_to_plain_region_blocks():
    """Each country one tight cluster: no country can give a test block, so the task uses the
    region blocks without the per-country cut (and says so)."""
    rng = np.random.default_rng(0)
    centres = np.array([[-40, -120], [-40, 120], [40, -120], [40, 120], [0, 0], [60, 30]])
    pos = np.concatenate([c + rng.normal(0, 0.01, (8, 2)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(len(centres)), 8)
    d = Data(
        x=torch.from_numpy(rng.integers(0, 255, (len(y), 3 * 16 * 16)).astype(np.float32)),
        pos=torch.from_numpy(pos),
        y=torch.from_numpy(y),
    )
    d.edge_index = fimp_data.knn_graph(d.pos, 4, metric="haversine")
    d.image_shape = (3, 16, 16)
    prep = get_task("image-country").prepare(seed=0, preset=SMOKE, data=d)
    _, (tr, _va, te) = _parts(prep)
    assert prep.info["split_method"] == "spatial_block"
    assert tr.size > 0 and te.size > 0


def _probe_parts(name, georelief, model_name, seed=0):
    from fimp_bench.models import get_model
    from fimp_bench.train import probe_embeddings, seed_everything

    prep = get_task(name).prepare(seed=seed, preset=QUICK, data=georelief)
    spec = get_model(model_name)
    seed_everything(0)
    model = spec.build(prep, spec.trials(1)[0]).eval()
    return prep, model, probe_embeddings


@pytest.mark.parametrize("model_name", ["gcn", "gps", "fimp-base"])
def test_zeroshot_test_embeddings_hold_nothing_of_training_images(georelief, model_name):
    """image-zeroshot (probe_graph="split"): scrambling every training image leaves the test
    images' embeddings unchanged; on the whole graph (the random variant's protocol) it does not."""
    prep, model, embed = _probe_parts("image-zeroshot", georelief, model_name)
    assert prep.task.probe_graph == "split" and prep.info["probe_graph"] == "split"
    g = prep.graphs[0]
    te = g.test_mask.numpy()
    before = embed(prep, model, torch.device("cpu"))
    g.x[g.train_mask] = torch.randn_like(g.x[g.train_mask]) * 5
    after = embed(prep, model, torch.device("cpu"))
    np.testing.assert_array_equal(after[te], before[te])
    assert not np.allclose(after[~te], before[~te])
    # the same model on the whole graph: test embeddings read the training images
    full = get_task("image-zeroshot-random")
    assert full.probe_graph == "full"
    prep.task = full
    whole = embed(prep, model, torch.device("cpu"))
    g.x[g.train_mask] = torch.randn_like(g.x[g.train_mask])
    assert not np.allclose(embed(prep, model, torch.device("cpu"))[te], whole[te])


def test_untrained_gcn_no_longer_beats_mlp_by_the_leak(georelief):
    """The acceptance of the honest-splits item, on the embedded data (seed 0): an untrained GCN
    probed on image-zeroshot is within a few points of the MLP (which sees no graph), while on
    the whole graph it is far above (its test embeddings average training images' pixels)."""
    from fimp_bench.models import get_model
    from fimp_bench.train import probe

    def acc(task, model):
        prep = get_task(task).prepare(seed=0, preset=QUICK, data=georelief)
        spec = get_model(model)
        return probe(prep, spec, spec.trials(1)[0], device=torch.device("cpu"))[1]["accuracy"]

    mlp, gcn = acc("image-zeroshot", "mlp"), acc("image-zeroshot", "gcn")
    assert gcn < mlp + 0.05, (gcn, mlp)
    assert acc("image-zeroshot-random", "gcn") > mlp + 0.5
