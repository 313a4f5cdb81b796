"""One FIMP-base training step in three forms, side by side (not a test): eager fp32 (what the
bench runs), bf16 autocast on the CPU, and ``torch.compile`` of the model's forward (inductor,
the machine's C++ compiler), with the compile time counted.

Each form is the roofline benchmark's step (forward + backward + AdamW on the quick task's real
data with the bench's default fimp-base config, see bench_roofline.py). Reported: the median step
time of each form, its ratio to eager, the compile time, the number of eager steps that compile
time would pay for, and how far the loss of the first step moves from eager's (bf16 tolerance).

    python benchmarks/bench_step_variants.py            # a minute or two on 2 cores
    python benchmarks/bench_step_variants.py --smoke    # smoke preset (used by a test)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

# cold compile every run: the compile time counted is what a fresh machine pays
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import torch
from bench_fimp_conv import _time  # median of `repeats` after a warm-up (this folder)
from bench_roofline import _task_step


def _first_loss(task: str, preset, form: str) -> float:
    """The loss of one forward on a fresh model (same seed) in ``form``."""
    model, _, g = _task_step(task, preset)
    fwd = torch.compile(model.forward, dynamic=False) if form == "compile" else model.forward
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=form == "bf16"):
        out = fwd(g)["out"].float()
    return float(out.pow(2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="smoke preset (seconds)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--task", default="spatial-expression")
    args = parser.parse_args()
    from fimp_bench.tasks import get_preset

    preset = get_preset("smoke" if args.smoke else "quick")
    repeats = 1 if args.smoke else args.repeats
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; {args.task} ({preset.name}), fimp-base "
        f"step = forward + backward + AdamW; median of {repeats} after a warm-up; load average "
        f"before: {os.getloadavg()[0]:.2f}"
    )
    times: dict[str, float] = {}
    for form in ("eager", "bf16", "compile"):
        model, step, _ = _task_step(args.task, preset)
        compile_s = 0.0
        if form == "compile":
            model.forward = torch.compile(model.forward, dynamic=False)
            t0 = time.perf_counter()
            step()  # compiles forward and backward
            compile_s = time.perf_counter() - t0
        run = step
        if form == "bf16":

            def run(inner=step):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    inner()

        times[form] = _time(run, repeats)
        loss = _first_loss(args.task, preset, form)
        ref = _first_loss(args.task, preset, "eager") if form != "eager" else loss
        line = (
            f"{form:<8} step {times[form] * 1e3:8.1f} ms  = {times[form] / times['eager']:5.2f}x "
            f"eager  first-step output mean square {loss:.6f} (eager {ref:.6f}, "
            f"rel. diff {abs(loss - ref) / max(abs(ref), 1e-12):.2e})"
        )
        if form == "compile":
            saved = times["eager"] - times[form]
            pays = f"{compile_s / saved:,.0f} eager steps" if saved > 0 else "never (not faster)"
            line += f"\n         compile time {compile_s:.1f} s: pays for itself after {pays}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
