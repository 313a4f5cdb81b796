"""The CUDA checks of FIMP in one run (called by gpu_check.sh; not a test). Prints one line per
check, ``PASS`` / ``FAIL`` / ``NOT IMPLEMENTED``, and exits 1 if any check failed.

1. FIMPConv fast path on the device vs the slow reference (on CPU copies of the same weights):
   values and input / parameter gradients, mean / sum / max, with padded token masks.
2. SDPA backends: FIMPConv forward + backward forced onto flash and onto memory-efficient
   attention (``torch.nn.attention.sdpa_kernel``), each checked against the math backend.
3. bf16 autocast forward + backward within tolerance of fp32.
4. Determinism: two seeded runs of a FIMP-base forward + backward give bit-identical outputs and
   gradients (``torch.use_deterministic_algorithms``).
5. The FlexAttention neighbour-grouped path (design section 6, ``bench_flex_attention.py``: a
   block mask per target and a per-block log-sum-exp score_mod) against the batched-matmul
   grouped path: forward values, then input gradients and the forward + backward time of both
   (on the CPU, torch has no FlexAttention backward: reported NOT IMPLEMENTED).
6. A quick-preset training run of fimp-base and GAT (``fimp-bench run --device <dev>``), and the
   FIMP-base / GAT epoch-time ratio from their records.

``--dry-run`` runs everything on the CPU with tiny sizes and the smoke preset (seconds), so the
script is exercised by the test suite on machines without a GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packages" / "fimp-core" / "tests"))

from reference_fimp import ref_fimp_conv  # noqa: E402

from fimp.nn import FIMPConv  # noqa: E402

RESULTS: list[tuple[str, str, str]] = []


def report(name: str, ok: bool | None, detail: str) -> None:
    status = "NOT IMPLEMENTED" if ok is None else ("PASS" if ok else "FAIL")
    RESULTS.append((name, status, detail))
    print(f"{status:<15} {name}: {detail}", flush=True)


def _graph(n: int, length: int, e: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, dim, generator=g)
    ei = torch.randint(0, n, (2, e), generator=g)
    mask = torch.rand(n, length, generator=g) > 0.2
    mask[:, 0] = True
    return x, ei, mask


def check_reference(device: torch.device) -> None:
    for aggr in ("mean", "sum", "max"):
        torch.manual_seed(0)
        conv_cpu = FIMPConv(16, 2, aggr=aggr)
        conv_dev = copy.deepcopy(conv_cpu).to(device)
        x, ei, mask = _graph(12, 6, 40, 16)
        x_ref = x.clone().requires_grad_(True)
        ref, _ = ref_fimp_conv(conv_cpu, x_ref, ei, mask)
        ref.square().sum().backward()
        x_dev = x.to(device).requires_grad_(True)
        out = conv_dev(x_dev, ei.to(device), token_mask=mask.to(device))
        out.square().sum().backward()
        err = (out.detach().cpu() - ref.detach()).abs().max().item()
        gerr = (x_dev.grad.cpu() - x_ref.grad).abs().max().item()
        perr = max(
            (a.grad.cpu() - b.grad).abs().max().item()
            for a, b in zip(conv_dev.parameters(), conv_cpu.parameters())
            if b.grad is not None
        )
        ok = max(err, gerr, perr) < 1e-4
        report(
            f"fast path vs reference ({aggr})",
            ok,
            f"max |diff| values {err:.1e}, input grad {gerr:.1e}, param grad {perr:.1e}",
        )


def check_sdpa_backends(device: torch.device) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    conv = FIMPConv(64, 4).to(device)
    x, ei, _ = _graph(64, 32, 512, 64)
    x, ei = x.to(device), ei.to(device)

    def run(backend):
        xx = x.clone().requires_grad_(True)
        with sdpa_kernel([backend]):
            y = conv(xx, ei)
            y.square().sum().backward()
        return y.detach(), xx.grad

    ref_y, ref_g = run(SDPBackend.MATH)
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    if device.type == "cpu":
        backends = [SDPBackend.FLASH_ATTENTION]  # the CPU has no memory-efficient kernel
    for backend in backends:
        try:
            y, g = run(backend)
        except RuntimeError as e:
            report(f"SDPA {backend.name}", False, f"not selectable: {str(e).splitlines()[0]}")
            continue
        err = max((y - ref_y).abs().max().item(), (g - ref_g).abs().max().item())
        report(f"SDPA {backend.name}", err < 1e-3, f"vs math backend max |diff| {err:.1e}")


def check_bf16(device: torch.device) -> None:
    torch.manual_seed(0)
    conv = FIMPConv(64, 4).to(device)
    x, ei, _ = _graph(64, 32, 512, 64)
    x, ei = x.to(device), ei.to(device)
    ref = conv(x, ei)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        xx = x.clone().requires_grad_(True)
        y = conv(xx, ei)
    y.float().square().sum().backward()
    rel = ((y.float() - ref).norm() / ref.norm()).item()
    finite = bool(torch.isfinite(xx.grad).all())
    report(
        "bf16 autocast", rel < 2e-2 and finite, f"relative error {rel:.1e}, grads finite {finite}"
    )


def check_determinism(device: torch.device) -> None:
    from torch_geometric.data import Data

    import fimp
    from fimp.tokenizers import GeneTokenizer

    genes = [f"G{i}" for i in range(24)]
    x, ei, _ = _graph(80, 24, 480, 1)

    def run():
        torch.manual_seed(0)
        model = fimp.create_model(
            "fimp_base", tokenizer=GeneTokenizer(genes, 32), dim=32, num_classes=3
        ).to(device)
        data = Data(x=x[..., 0].abs(), edge_index=ei, feature_names=genes).to(device)
        out = model(data)["logits"]
        out.square().sum().backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return out.detach().cpu(), grads.cpu()

    torch.use_deterministic_algorithms(True, warn_only=False)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        (a, ga), (b, gb) = run(), run()
        ok = torch.equal(a, b) and torch.equal(ga, gb)
        report(
            "determinism (two seeded runs)",
            ok,
            f"outputs equal {torch.equal(a, b)}, gradients equal {torch.equal(ga, gb)}",
        )
    except RuntimeError as e:
        report("determinism (two seeded runs)", False, str(e).splitlines()[0])
    finally:
        torch.use_deterministic_algorithms(False)


def check_flex(device: torch.device, dry_run: bool) -> None:
    from bench_flex_attention import HEAD_DIM, HEADS, grouped, make_flex

    t, d, length = (8, 4, 16) if dry_run else (2000, 8, 16)
    g = torch.Generator().manual_seed(0)
    qkv = [
        torch.randn(1, HEADS, n * length, HEAD_DIM, generator=g).to(device).requires_grad_()
        for n in (t, t * d, t * d)
    ]
    name = "FlexAttention neighbour-grouped path"
    try:
        run, _ = make_flex(t, d, length, device)
        plain = [x.detach() for x in qkv]  # flex refuses inputs that require grad on the CPU
        out, ref = run(*plain), grouped(*plain, t, d, length)
    except Exception as e:  # a compile failure is a result of this check
        report(f"{name}, forward", False, f"{type(e).__name__}: {str(e).splitlines()[0]}")
        return
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    report(f"{name}, forward", err < 1e-4, f"max rel. diff vs the matmul grouped path {err:.1e}")
    cot = torch.randn_like(ref)

    def fwd_bwd(fn):
        for x in qkv:
            x.grad = None
        (fn() * cot).sum().backward()
        return [x.grad.clone() for x in qkv]

    want = fwd_bwd(lambda: grouped(*qkv, t, d, length))
    try:
        got = fwd_bwd(lambda: run(*qkv))
    except NotImplementedError as e:
        report(f"{name}, backward", None, f"torch {torch.__version__}: {str(e).splitlines()[0]}")
        return
    except Exception as e:
        report(f"{name}, backward", False, f"{type(e).__name__}: {str(e).splitlines()[0]}")
        return
    gerr = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, want))
    report(f"{name}, backward", gerr < 1e-3, f"max rel. gradient diff (q, k, v) {gerr:.1e}")

    def timed(fn, reps=10):
        fwd_bwd(fn)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fwd_bwd(fn)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / reps

    tf, tg = timed(lambda: run(*qkv)), timed(lambda: grouped(*qkv, t, d, length))
    report(
        f"{name}, speed",
        True,
        f"fwd+bwd T={t} D={d} L={length}: flex {tf * 1e3:.2f} ms, matmul grouped {tg * 1e3:.2f} ms"
        f" = {tg / tf:.2f}x (> 1: flex faster)",
    )


def check_training(device: str, preset: str, out: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "fimp_bench",
        "run",
        "--task",
        "spatial-celltype",
        "--model",
        "fimp-base,gat",
        "--seeds",
        "0",
        "--preset",
        preset,
        "--device",
        device,
        "--out",
        str(out),
        "--no-progress",
    ]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        report("quick-preset training run", False, res.stderr.strip().splitlines()[-1])
        return
    per_epoch = {}
    for model in ("fimp-base", "gat"):
        rec = json.loads((out / "spatial-celltype" / "records" / model / "seed-0.json").read_text())
        epochs = sum(t["epochs_run"] for t in rec["tuning"]["trials"])
        per_epoch[model] = rec["wall_time_s"] / max(epochs, 1)
        report(
            f"training run {model}",
            str(rec["device"]).startswith(device.split(":")[0]),
            f"test accuracy {rec['metrics']['test']['accuracy']:.3f}, {epochs} epochs, "
            f"{rec['wall_time_s']:.1f} s, device {rec['device']} ({rec['hardware']})",
        )
    ratio = per_epoch["fimp-base"] / per_epoch["gat"]
    report(
        "FIMP-base / GAT epoch time",
        True,
        f"{per_epoch['fimp-base'] * 1e3:.1f} ms / {per_epoch['gat'] * 1e3:.1f} ms = {ratio:.2f}x "
        f"(paper: about 2x on GPU); run took {wall:.0f} s",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, smoke preset")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=None, help="folder for the training run's records")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry_run else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("FAIL            no CUDA device visible; use --dry-run on a machine without GPU")
        return 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    print(f"torch {torch.__version__}, device {name}", flush=True)
    check_reference(device)
    check_sdpa_backends(device)
    check_bf16(device)
    check_determinism(device)
    check_flex(device, args.dry_run)
    out = Path(args.out or os.environ.get("OUT", "gpu-check-out")) / "gpu-check-runs"
    check_training(str(device), "smoke" if args.dry_run else "quick", out)
    failed = [r for r in RESULTS if r[1] == "FAIL"]
    print(f"\n{len(RESULTS)} checks: {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
