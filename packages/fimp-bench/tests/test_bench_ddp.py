"""DDP: 2 processes with gloo on loopback give identical parameters on both ranks and agree
with a 1-process run (node-level: k-hop seed partitions; graph-level: DistributedSampler)."""

import os

import torch
import torch.multiprocessing as mp

from conftest import fmri_data, spatial_data
from fimp_bench.distributed import DistContext
from fimp_bench.models import get_model
from fimp_bench.tasks import get_task
from fimp_bench.tasks.base import Preset
from fimp_bench.train import train_trial

PRESET = Preset("smoke", max_epochs=4, patience=100, tuning_budget=1, seeds=(0,), batch_size=4)
CASES = {
    "node": ("spatial-expression", spatial_data, "gcn"),
    "graph": ("fmri-reconstruction", fmri_data, "graphsage"),
}


def _train_all(ctx: DistContext) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for case, (task, make, model) in CASES.items():
        prep = get_task(task).prepare(seed=0, preset=PRESET, data=make())
        spec = get_model(model)
        cfg = {**spec.defaults, "dropout": 0.0}
        res = train_trial(prep, spec, cfg, device=torch.device("cpu"), ctx=ctx, progress=False)
        out[case] = {k: v.detach().clone() for k, v in res.model.state_dict().items()}
        out[case + "_epoch"] = torch.tensor(res.best_epoch)
    return out


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(_train_all(DistContext(rank, world)), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_matches_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    single = _train_all(DistContext())
    for case in CASES:
        assert r0[case + "_epoch"] == r1[case + "_epoch"] == single[case + "_epoch"]
        assert r0[case].keys() == single[case].keys()
        for k in r0[case]:
            assert torch.equal(r0[case][k], r1[case][k]), f"{case}: ranks differ in {k}"
            torch.testing.assert_close(r0[case][k], single[case][k], rtol=1e-4, atol=1e-5)
        # training moved the parameters (the comparison is not trivially between initial states)
        spec = get_model(CASES[case][2])
        assert any(not torch.equal(v, single[case][k]) for k, v in _init_state(case, spec).items())


def _init_state(case, spec):
    task, make, _ = CASES[case]
    prep = get_task(task).prepare(seed=0, preset=PRESET, data=make())
    torch.manual_seed(0)
    return spec.build(prep, {**spec.defaults, "dropout": 0.0}).state_dict()
