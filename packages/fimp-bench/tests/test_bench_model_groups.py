"""Model-name aliases: 'default' and 'ablations' expand per task; the default run stays the
classic models + fimp-base."""

from __future__ import annotations

from fimp_bench.models import get_model
from fimp_bench.tasks import get_task
from fimp_bench.train import expand_model_names


def test_default_and_ablation_groups():
    task = get_task("spatial-celltype")
    assert expand_model_names(task, None) == list(task.default_models)
    assert "fimp-base-nomsg" not in task.default_models
    both = expand_model_names(task, ["default", "ablations", "gcn"])
    assert both == [*task.default_models, *task.ablation_models]
    assert set(task.ablation_models) == {
        "fimp-base-plain",
        "fimp-base-nomsg",
        "fimp-base-pooled",
        "gcn-tokenmean",
        "graphsage-tokenmean",
        "graph-transformer-tokenmean",
    }
    for name in both:
        get_model(name)  # every name is registered
    # zero-shot: the untrained FIMP ablations only (the *-tokenmean ones read trained tokens)
    assert expand_model_names(get_task("image-zeroshot"), ["ablations"]) == [
        "fimp-base-plain",
        "fimp-base-nomsg",
        "fimp-base-pooled",
    ]
    assert expand_model_names(get_task("image-zeroshot-random"), ["ablations"]) == []


def test_fimp_base_mimetic_is_fimp_base_with_only_qk_init_changed():
    base, mim = get_model("fimp-base"), get_model("fimp-base-mimetic")
    # the same search space point for point, so the same tuning budget
    assert len(mim.grid) == len(base.grid)
    assert all(m == {**b, "qk_init": "mimetic"} for m, b in zip(mim.grid, base.grid))
    assert {**base.defaults, "qk_init": "mimetic"} == {**mim.defaults}
    assert mim.trials(4) == [{**t, "qk_init": "mimetic"} for t in base.trials(4)]
    task = get_task("fmri-reconstruction")
    assert "fimp-base-mimetic" not in (*task.default_models, *task.ablation_models)


def test_fimp_base_has_the_self_attention_branch_and_the_plain_ablation_has_none():
    """fimp-base (and the ablations that keep its block) build FIMP with the within-node
    self-attention branch; the paper's plain layer has none (it cannot: the option is pre-norm
    only)."""
    from conftest import spatial_data
    from fimp_bench.tasks import get_preset

    prep = get_task("spatial-expression").prepare(
        seed=0, preset=get_preset("smoke"), data=spatial_data()
    )
    for name, expected in (
        ("fimp-base", True),
        ("fimp-base-nomsg", True),
        ("fimp-base-mimetic", True),
        ("fimp-base-plain", False),
    ):
        spec = get_model(name)
        model = spec.build(prep, spec.trials(1)[0])
        assert model.fimp.self_attention is expected, name
        assert len(model.fimp.self_attns) == (2 if expected else 0), name
