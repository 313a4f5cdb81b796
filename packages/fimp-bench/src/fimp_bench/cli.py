"""``fimp-bench``: run tasks, list tasks/models/datasets, regenerate leaderboards and their
website, validate submissions. ``fimp-bench <command> --help`` explains each command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from fimp_bench.errors import BenchError, LeaderboardCheckError
from fimp_bench.explain import add_explain_parser

__all__ = ["main", "parse_seeds"]


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,7"`` -> [0, 2, 7]; mixed ``"0-2,5"`` works too."""
    from fimp_bench.errors import BenchConfigError

    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                seeds += list(range(int(a), int(b) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError as e:
        raise BenchConfigError(f"cannot read seeds {text!r}; write e.g. 0-4 or 0,1,2") from e
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise BenchConfigError(f"seeds {text!r} must be distinct non-negative integers, e.g. 0-4")
    return seeds


def summary_table(records: list[dict]) -> str:
    """A plain-text table: per task and model, test metrics mean ± std (ddof=1) over seeds."""
    from fimp_bench.leaderboard import summarize

    out = []
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    for task, rs in by_task.items():
        rows = summarize(rs)
        metrics = rows[0]["metrics"]
        head = ["model", *metrics, "N", "#params", "wall/seed"]
        body = []
        for row in rows:
            cells = [row["model"]]
            for m in metrics:
                mu, sd = row["test"][m]
                cells.append(f"{mu:.4f} ± {sd:.4f}" if sd == sd else f"{mu:.4f}")
            cells += [
                str(row["n_seeds"]),
                f"{row['params_trainable']:,}",
                f"{row['wall_time_s']:.1f}s",
            ]
            body.append(cells)
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        out.append(f"{task} (test split, mean ± std over seeds, ddof=1)")
        out.append(fmt.format(*head))
        out.append(fmt.format(*("-" * w for w in widths)))
        out += [fmt.format(*b) for b in body]
        out.append("")
    return "\n".join(out)


def _cmd_run(args: argparse.Namespace) -> int:
    from fimp_bench.distributed import init_from_env
    from fimp_bench.leaderboard import generate
    from fimp_bench.models import get_model
    from fimp_bench.tasks import get_preset, resolve_tasks
    from fimp_bench.train import resolve_device, run_benchmark

    tasks = resolve_tasks(args.task)
    models = [m for spec in args.model or [] for m in spec.split(",") if m] or None
    for m in models or []:
        if m not in ("default", "ablations"):
            get_model(m)  # unknown names fail before any work, listing the valid ones
    if args.dataset is not None:
        from fimp_bench._data import list_datasets

        if args.dataset not in list_datasets():
            from fimp_bench.errors import UnknownNameError

            raise UnknownNameError(
                f"unknown dataset {args.dataset!r}; registered: {', '.join(list_datasets())} "
                "(register your own with fimp_data.register_local)"
            )
    from fimp_bench.records import check_out_dir

    check_out_dir(args.out)
    overrides = {"max_epochs": args.max_epochs, "tuning_budget": args.tuning_budget}
    get_preset(args.preset, **overrides)  # bad values fail before any work
    seeds = parse_seeds(args.seeds) if args.seeds else list(get_preset(args.preset).seeds)
    device = resolve_device(args.device)
    ctx = init_from_env(device)
    t0 = time.perf_counter()
    records = run_benchmark(
        tasks,
        models,
        seeds,
        preset=args.preset,
        dataset=args.dataset,
        device=args.device,
        fill=args.fill,
        bf16=args.bf16,
        out=args.out,
        progress=not args.no_progress,
        ctx=ctx,
        force=args.force,
        rerun_changed=args.rerun_changed,
        data_root=args.data_root,
        download=not args.no_download,
        overrides=overrides,
    )
    if ctx.is_main:
        print()
        print(summary_table(records))
        written = generate(args.out)
        plots = [str(p) for p in written if p.suffix == ".png"]
        print(f"records and tables: {args.out}/<task>/; plots: {', '.join(plots)}")
        print(f"wall time: {time.perf_counter() - t0:.1f} s ({len(records)} runs)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "tasks":
        from fimp_bench.tasks import TASKS

        fw = max(len(t.family) for t in TASKS.values())
        nw = max(len(t.name) for t in TASKS.values())
        for t in TASKS.values():
            print(
                f"{t.family:{fw}s} {t.name:{nw}s} v{t.version:5s} {', '.join(t.metrics):18s} "
                f"quick: {t.default_dataset['quick']}, full: {t.default_dataset['full']}"
            )
    elif args.what == "models":
        from fimp_bench.models import get_model, list_models
        from fimp_bench.models.registry import registry

        for name in list_models():
            spec = get_model(name)
            print(f"{name:20s} {spec.implementation:18s} {spec.source}")
        for ep, err in registry.plugin_errors.items():
            print(f"(plugin {ep!r} failed to load: {err})", file=sys.stderr)
    else:
        from fimp_bench._data import list_datasets

        for name in list_datasets():
            print(name)
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from fimp_bench.leaderboard import check, generate
    from fimp_bench.records import check_root_dir

    check_root_dir(args.root, "--root")

    if args.check:
        for w in check(args.root):
            print(f"warning: {w}", file=sys.stderr)
        print(f"{args.root}: leaderboards match the records")
    else:
        written = generate(args.root)
        print(f"wrote {len(written)} files under {args.root}")
    return 0


def _cmd_site(args: argparse.Namespace) -> int:
    from fimp_bench.records import check_out_dir, check_root_dir
    from fimp_bench.site import generate_site

    check_out_dir(args.out)
    check_root_dir(args.root, "--root")
    written = generate_site(args.root, args.out)
    print(f"wrote {len(written)} files under {args.out}; open {args.out}/index.html")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from fimp_bench.records import check_root_dir
    from fimp_bench.validate import validate_submission

    check_root_dir(args.path, "submission path")
    report = validate_submission(
        args.path,
        min_seeds=args.min_seeds,
        smoke=not args.no_smoke,
        existing=args.leaderboards,
    )
    print(report.render())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fimp-bench",
        description="The FIMP benchmark: run tasks, list tasks/models/datasets, regenerate "
        "leaderboards, validate submissions.",
    )
    p.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (for bug reports)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "run",
        help="train and evaluate models on a task or family",
        description="Train and evaluate models on a task or a whole family (spatial, fmri, "
        "image); writes one record per (task, model, seed) under OUT, prints a summary table and "
        "saves a plot. Under torchrun it trains with DDP (gloo on CPU, nccl on GPU).",
    )
    r.add_argument(
        "--task",
        required=True,
        help="task (e.g. spatial-expression) or family (spatial, fmri, image)",
    )
    r.add_argument(
        "--dataset",
        default=None,
        help="dataset name from `fimp-bench list datasets`, including your own "
        "(fimp_data.register_local or FIMP_DATA_REGISTRY); default: the preset's dataset",
    )
    r.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="folder holding the dataset's files: for user-supplied datasets (fmri-ukb, "
        "image-mapillary; layout in their registry description), or a folder to use instead "
        "of the cache for downloaded ones (default: the fimp-data cache, $FIMP_DATA_DIR)",
    )
    r.add_argument(
        "--no-download",
        action="store_true",
        help="never download: fail if a registered dataset's files are not cached yet "
        "(default: download missing files, verified by sha256, into the cache)",
    )
    r.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        metavar="N",
        help="override the preset's epochs per trial (e.g. a short end-to-end check of "
        "--preset full); recorded in task_info.training.overrides",
    )
    r.add_argument(
        "--tuning-budget",
        type=int,
        default=None,
        metavar="N",
        help="override the preset's grid points per model; recorded likewise",
    )
    r.add_argument(
        "--model",
        action="append",
        help="model name(s), repeat or comma-separate; 'default' = the task's default models "
        "(the default), 'ablations' = its ablations (fimp-base-plain, -nomsg, -pooled, "
        "*-tokenmean), e.g. --model default,ablations",
    )
    r.add_argument(
        "--seeds",
        default=None,
        help="seeds, e.g. 0-4 or 0,3,7 (default: the preset's, quick = 0-4)",
    )
    r.add_argument(
        "--preset",
        default="quick",
        choices=["quick", "full", "smoke"],
        help="quick (default; embedded data: about 30-40 min per family on 2 CPU cores, hours for "
        "the spatial-large / fmri-large families; README), full (paper scale, GPU), smoke (tiny)",
    )
    r.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="device (default auto: CUDA if available)",
    )
    r.add_argument(
        "--fill",
        default="mean",
        choices=["mean", "noise", "interpolate"],
        help="fill of masked values for baselines (default mean; interpolate: time series only)",
    )
    r.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    r.add_argument(
        "--force",
        action="store_true",
        help="re-run (task, model, seed) runs whose records already exist under OUT (default: "
        "skip those made with the same configuration; refuse to overwrite a different one)",
    )
    r.add_argument(
        "--rerun-changed",
        action="store_true",
        help="re-run and replace the records under OUT that a different configuration made "
        "(changed model config, task version, dataset or preset); skip the unchanged ones",
    )
    r.add_argument(
        "--out", default="fimp-bench-results", help="output folder (default ./fimp-bench-results)"
    )
    r.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars; one line per finished trial on stderr instead (batch jobs' logs)",
    )
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser(
        "list",
        help="list tasks, models or datasets",
        description="List registered tasks, models (built-in and entry-point plugins) or datasets.",
    )
    ls.add_argument("what", choices=["tasks", "models", "datasets"])
    ls.set_defaults(func=_cmd_list)

    lb = sub.add_parser(
        "leaderboard",
        help="regenerate (or --check) the leaderboards",
        description="Regenerate ROOT/<task>/README.md, results.csv, results.png/.svg and ROOT/README.md from ROOT/<task>/records; with --check, regenerate in a temp folder and fail on any difference.",
    )
    lb.add_argument(
        "--root", default="leaderboards", help="leaderboards folder (default ./leaderboards)"
    )
    lb.add_argument(
        "--check", action="store_true", help="fail (exit 1) if regenerated files differ"
    )
    lb.set_defaults(func=_cmd_leaderboard)

    st = sub.add_parser(
        "site",
        help="generate the static leaderboard website from the records",
        description="Write a static website from ROOT/<task>/records: an index of the tasks, a "
        "sortable and filterable table per task with its plot, a page per (task, model) with "
        "every seed's record (and a copy of each JSON), and a per-seed comparison of two models. "
        "Static files only: open OUT/index.html from disk or serve OUT with any static server; "
        "nothing is loaded from the network.",
    )
    st.add_argument(
        "--root", default="leaderboards", help="leaderboards folder (default ./leaderboards)"
    )
    st.add_argument("--out", default="site", help="output folder (default ./site)")
    st.set_defaults(func=_cmd_site)

    v = sub.add_parser(
        "validate",
        help="validate a submission",
        description="Check a submission folder (<task>/records/<model>/seed-<n>.json): schema, seed count, distinct seeds, no duplicate (task, model, seed), registered model, and a smoke re-run of one seed.",
    )
    v.add_argument("path", help="submission folder (or a leaderboards folder)")
    v.add_argument(
        "--min-seeds", type=int, default=5, help="required seeds per (task, model) (default 5)"
    )
    v.add_argument("--no-smoke", action="store_true", help="skip the smoke re-run")
    v.add_argument(
        "--leaderboards",
        default=None,
        help="existing leaderboards folder to check duplicates against",
    )
    v.set_defaults(func=_cmd_validate)
    add_explain_parser(sub)
    return p


def _typed_errors() -> tuple[type[BaseException], ...]:
    """The errors fimp-bench, fimp_data and fimp raise on purpose (each names problem and fix)."""
    from fimp.errors import FIMPError
    from fimp_data.errors import FIMPDataError

    return (BenchError, FIMPDataError, FIMPError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fimp-bench`` command; returns the exit status.

    Every error raised on purpose (and any OS error about a file) is one line on stderr, exit
    status 2, no traceback; ``--debug`` shows the traceback instead."""
    args = build_parser().parse_args(argv)
    if args.func is _cmd_run:
        from fimp_bench._allocator import keep_heap

        keep_heap()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        print(
            "fimp-bench: interrupted; records already written are complete, and the same "
            "command resumes (seeds already recorded with the same config are skipped)",
            file=sys.stderr,
        )
        return 130
    except (*_typed_errors(), OSError) as e:
        if getattr(args, "debug", False):
            raise
        msg = str(e).replace("\n", " | ") if not isinstance(e, LeaderboardCheckError) else str(e)
        print(f"fimp-bench: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
