"""Per-epoch costs of the quick preset's slow models (not a test). Prints ratios side by side.

Each case times one full-batch training step (forward + backward + AdamW step) or one inference
forward on the quick preset's real data, two variants measured in the same run:

- ``fimp-base attn_dropout``: FIMP-base with dropout 0.1 on the attention probabilities vs none
  (``attn_dropout: 0.0``, the bench config). Any attention dropout sends scaled-dot-product
  attention on the CPU to its unfused math path (it materialises [E, heads, L, L] and a mask).
- ``fimp-base tokens``: image-country with 4x4-pixel patches (16 tokens, task v1.0) vs 8x8
  patches (4 tokens, task v1.1) of the pooled 3x16x16 images.
- ``gps inference``: GPSConv's nn.MultiheadAttention through PyTorch's C++ inference fast path
  (its key-padding mask goes through aten::_masked_softmax) vs the regular path the bench uses.

    python benchmarks/bench_quick_training.py            # quick-preset data (about a minute)
    python benchmarks/bench_quick_training.py --smoke    # tiny data, seconds (used by a test)
"""

from __future__ import annotations

import argparse
import dataclasses
import platform

import torch
import torch.nn.functional as F
from bench_fimp_conv import _time  # median of `repeats` after a warm-up (this folder)

from fimp_bench.models import get_model
from fimp_bench.tasks import get_preset, get_task


def _train_step(prep, cfg):
    spec = get_model("fimp-base")
    torch.manual_seed(0)
    model = spec.build(prep, {**spec.defaults, **cfg}).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = prep.graphs[0]
    rows = g.train_mask

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(g)["out"][rows]
        if prep.objective == "reconstruction":
            m = g.input_mask[rows]
            loss = F.mse_loss(out[m], g.target[rows][m])
        else:
            loss = F.cross_entropy(out, g.y[rows])
        loss.backward()
        opt.step()

    return step


def _gps_inference(prep, fast: bool):
    spec = get_model("gps")
    torch.manual_seed(0)
    body = spec.build(prep, spec.trials(1)[0]).eval().body
    g = prep.graphs[0]

    def regular():
        with torch.no_grad():
            body(g.x, g.edge_index)

    def fast_path():  # the same layers, called with PyTorch's fast-path switch left on
        with torch.no_grad():
            h = body.inp(g.x)
            for conv in body.convs:
                h = conv(h, g.edge_index, None)

    return fast_path if fast else regular


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny data (seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    preset = get_preset("smoke" if args.smoke else "quick")
    repeats = 1 if args.smoke else args.repeats
    country = get_task("image-country").prepare(seed=0, preset=preset)
    country16 = dataclasses.replace(country, token_info={**country.token_info, "patch_size": 4})
    expression = get_task("spatial-expression").prepare(seed=0, preset=preset)
    shape = country.token_info["image_shape"]
    print(
        f"preset {preset.name}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; median of {repeats} after a warm-up"
    )
    print(
        f"image-country: {country.graphs[0].num_nodes} nodes, "
        f"{country.graphs[0].edge_index.size(1)} edges, images {shape}; spatial-expression: "
        f"{expression.graphs[0].num_nodes} nodes, {expression.in_dim} gene tokens\n"
    )
    cases = [
        (
            "fimp-base attn_dropout, image-country (16 tokens), train step",
            ("0.1", _train_step(country16, {"attn_dropout": 0.1})),
            ("0.0", _train_step(country16, {"attn_dropout": 0.0})),
        ),
        (
            "fimp-base attn_dropout, spatial-expression, train step",
            ("0.1", _train_step(expression, {"attn_dropout": 0.1})),
            ("0.0", _train_step(expression, {"attn_dropout": 0.0})),
        ),
        (
            "fimp-base tokens, image-country, train step",
            ("16 tokens", _train_step(country16, {})),
            ("4 tokens", _train_step(country, {})),
        ),
        (
            "gps inference forward, image-country",
            ("fast path", _gps_inference(country, fast=True)),
            ("regular", _gps_inference(country, fast=False)),
        ),
    ]
    print(f"{'case':<62} {'before':>18} {'after':>18} {'before/after':>13}")
    for name, (label_a, fn_a), (label_b, fn_b) in cases:
        a, b = _time(fn_a, repeats), _time(fn_b, repeats)
        print(
            f"{name:<62} {label_a + f' {a:.3f} s':>18} {label_b + f' {b:.3f} s':>18} "
            f"{a / b:>12.2f}x"
        )


if __name__ == "__main__":
    main()
