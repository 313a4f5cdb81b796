"""Model registry: every built-in model builds and runs on every task kind; plugins through the
``fimp_bench.models`` entry-point group appear in the registry and in ``fimp-bench list models``."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import fmri_data, image_data, spatial_data
from fimp_bench.errors import BenchConfigError, UnknownNameError
from fimp_bench.models import get_model, list_models
from fimp_bench.models.registry import registry
from fimp_bench.tasks import get_preset, get_task

SMOKE = get_preset("smoke")
BUILTIN = [
    "mlp",
    "gcn",
    "gat",
    "graphsage",
    "gin",
    "graph-transformer",
    "gps",
    "majority",
    "fimp-base",
]


@pytest.fixture(scope="module")
def preps():
    return {
        "spatial-expression": get_task("spatial-expression").prepare(
            seed=0, preset=SMOKE, data=spatial_data()
        ),
        "spatial-celltype": get_task("spatial-celltype").prepare(
            seed=0, preset=SMOKE, data=spatial_data()
        ),
        "fmri-reconstruction": get_task("fmri-reconstruction").prepare(
            seed=0, preset=SMOKE, data=fmri_data()
        ),
        "image-country": get_task("image-country").prepare(seed=0, preset=SMOKE, data=image_data()),
    }


def test_builtin_names_and_unknown():
    assert list_models()[: len(BUILTIN)] == BUILTIN
    with pytest.raises(UnknownNameError, match="valid models: mlp, gcn"):
        get_model("gcnn")


@pytest.mark.parametrize("name", BUILTIN)
def test_every_model_runs_on_every_task_kind(preps, name):
    from torch_geometric.data import Batch

    spec = get_model(name)
    cfg = spec.trials(1)[0]
    for task, prep in preps.items():
        if name == "majority" and prep.objective == "reconstruction":
            continue
        model = spec.build(prep, cfg)
        g = prep.graphs[0] if prep.level == "node" else Batch.from_data_list(prep.graphs[:2])
        out = model(g)
        assert out["out"].shape == (g.num_nodes, prep.out_dim), (name, task)
        assert out["embedding"].shape[0] == g.num_nodes
        out["out"].float().pow(2).mean().backward()


def test_gps_inference_skips_the_mha_fast_path_but_computes_the_same(preps):
    """_GPS evaluates without nn.MultiheadAttention's C++ fast path (slow masked softmax on the
    CPU): same outputs as the fast path, and the process-wide switch is restored."""
    prep = preps["image-country"]
    spec = get_model("gps")
    torch.manual_seed(0)
    body = spec.build(prep, spec.trials(1)[0]).eval().body
    g = prep.graphs[0]
    seen = []
    hooks = [
        conv.attn.register_forward_pre_hook(
            lambda *_: seen.append(torch.backends.mha.get_fastpath_enabled())
        )
        for conv in body.convs
    ]
    with torch.no_grad():
        ours = body(g.x, g.edge_index)
    for hook in hooks:
        hook.remove()
    assert seen == [False] * len(body.convs)
    assert torch.backends.mha.get_fastpath_enabled()
    with torch.no_grad():  # the same layers through the fast path (switch on, eval, no grad)
        h = body.inp(g.x)
        for conv in body.convs:
            h = conv(h, g.edge_index, None)
    torch.testing.assert_close(ours, h, atol=1e-5, rtol=1e-5)


def test_tuning_budget_is_the_same_for_every_model():
    for name in BUILTIN:
        spec = get_model(name)
        assert len(spec.trials(4)) == 4
    with pytest.raises(BenchConfigError, match="tuning budget"):
        get_model("mlp").trials(99)


def _write_plugin(root):
    pkg = root / "toy_bench_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent("""
        import torch
        from fimp_bench.models import ModelSpec

        class Toy(torch.nn.Module):
            def __init__(self, prep, cfg):
                super().__init__()
                self.lin = torch.nn.Linear(prep.in_dim, prep.out_dim)
            def forward(self, data):
                return {"out": self.lin(data.x), "embedding": data.x}

        SPEC = ModelSpec(name="toy-linear", build=Toy, defaults={"lr": 0.01},
                         grid=({}, {"lr": 0.001}, {}, {}), source="toy_bench_plugin")
    """)
    )
    dist = root / "toy_bench_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-bench-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[fimp_bench.models]\ntoy-linear = toy_bench_plugin:SPEC\n"
    )


def test_entry_point_plugin(tmp_path, monkeypatch, preps):
    _write_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.reload_plugins()
    try:
        assert "toy-linear" in list_models()
        spec = get_model("toy-linear")
        out = spec.build(preps["spatial-celltype"], spec.trials(1)[0])(
            preps["spatial-celltype"].graphs[0]
        )
        assert out["out"].shape[1] == preps["spatial-celltype"].out_dim
        env = {
            **os.environ,
            "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
        res = subprocess.run(
            [sys.executable, "-m", "fimp_bench", "list", "models"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr
        assert "toy-linear" in res.stdout and "gcn" in res.stdout
    finally:
        monkeypatch.undo()
        registry.reload_plugins()
    assert "toy-linear" not in list_models()


def test_fimp_base_uses_fimp_core(preps):
    import fimp

    model = get_model("fimp-base").build(
        preps["spatial-expression"], get_model("fimp-base").trials(1)[0]
    )
    assert isinstance(model.fimp, fimp.models.FIMP)
    assert isinstance(model.fimp.tokenizer, fimp.tokenizers.GeneTokenizer)
    torch.manual_seed(0)
