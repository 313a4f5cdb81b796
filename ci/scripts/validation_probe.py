"""Validation-only probe: train single configurations of registered models on one seed of a task
and print the best validation metric (the test split is never scored).

For diagnosing a model before anything reaches a leaderboard: the numbers quoted in issue notes
as "seed-0 validation" come from here. Each argument is a registered model name, optionally with
config overrides after a colon (values parsed as YAML)::

    python ci/scripts/validation_probe.py image-country gcn-tokenmean \
        fimp-base-pooled fimp-base-pooled:self_attention=false,dropout=0.3

The base configuration is the model's first grid point (what ``fimp-bench run`` tries first);
the preset's epochs, early stopping and seeding are the bench's own (``train_trial``).
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from fimp_bench.models.registry import get_model
from fimp_bench.tasks import get_task
from fimp_bench.tasks.base import get_preset
from fimp_bench.train import train_trial


def parse_model(arg: str) -> tuple[str, dict]:
    name, _, extra = arg.partition(":")
    overrides = {}
    for item in filter(None, extra.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r} in {arg!r} is not key=value")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task")
    ap.add_argument("models", nargs="+", help="name[:key=value,...]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="quick")
    args = ap.parse_args()
    task = get_task(args.task)
    preset = get_preset(args.preset)
    data, _ = task.load_data(preset)
    prep = task.prepare(seed=args.seed, preset=preset, data=data)
    metric = task.primary_metric
    for arg in args.models:
        name, overrides = parse_model(arg)
        spec = get_model(name)
        config = {**spec.trials(1)[0], **overrides}
        t0 = time.perf_counter()
        result = train_trial(prep, spec, config, device=torch.device("cpu"), progress=False)
        print(
            f"{arg:48s} val {metric} {result.val[metric]:.4f}  best epoch {result.best_epoch}"
            f"  epochs {result.epochs_run}  {time.perf_counter() - t0:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
