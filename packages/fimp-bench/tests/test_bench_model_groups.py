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
    assert expand_model_names(get_task("image-zeroshot"), ["ablations"]) == []
