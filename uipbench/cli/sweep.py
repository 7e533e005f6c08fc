"""``uipbench sweep`` (backbones raw and Δ-corrected, resumable), ``report`` (of a sweep) and ``demo`` (both)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..executors import add_arguments as add_executor_arguments
from ..harness.defaults import DESCRIPTORS
from .common import (RESUME_HINT, add_datasets_root_argument, add_grid_arguments, add_trust_argument,
                     check_output_folder, command_line, training_sizes)


def sweep(args: argparse.Namespace) -> int:
    check_output_folder("--out", args.out)
    from contextlib import nullcontext

    from ..executors import ExecutorSpec, open_executor
    from ..harness.sweep import sweep as run_sweep
    from ..report.tables import headline, headline_markdown

    spec = ExecutorSpec.from_args(args)  # checked (and a cluster config read) before any work
    # local: the sweep's own process pool (it ends its workers on a signal); dask: an executor of the cluster
    with nullcontext(None) if spec.kind == "local" else open_executor(spec) as executor:
        results = run_sweep(args.backbones, args.systems, aggregations=args.aggregations,
                            sizes=training_sizes(args.sizes), seeds=args.seeds, descriptors=args.descriptors,
                            test_fraction=args.test_fraction, out=args.out, workers=spec.workers,
                            executor=executor, command=command_line(), datasets_root=args.datasets_root,
                            trust_unpinned_weights=args.trust_unpinned_weights)
    print(headline_markdown(headline(results)))
    print(f"results: {args.out}/results.csv")
    return 0


def report(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_output_folder("--out", args.out)
    elif Path(args.run).is_dir():  # an absent run folder: write_report says there are no results
        check_output_folder("the results folder", args.run)
    from ..report.render import write_report

    path = write_report(args.run, args.out)
    print(f"report: {path} (and {path.with_suffix('.html')})")
    return 0


def demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_output_folder("--out", out)
    import time

    from ..harness.sweep import sweep as run_sweep
    from ..report.render import write_report
    from ..report.tables import headline, headline_markdown

    from .._lock import OutputLock

    start = time.perf_counter()
    with OutputLock(out, command="uipbench demo"):  # sweep and report: no other run gets in between
        results = run_sweep(out=out, command=["uipbench", "demo"])
        path = write_report(out)
    print(headline_markdown(headline(results)))
    print(f"\nuipbench demo: {time.perf_counter() - start:.0f} s; report: {path} (HTML: {path.with_suffix('.html')})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sweep", help="compare backbones raw and Δ-corrected (resumable)")
    p.add_argument("--backbones", nargs="*", help="default: every backbone whose weights are present")
    p.add_argument("--systems", nargs="*", help="default: every system under the datasets folder and 'all' (pooled)")
    add_datasets_root_argument(p)
    p.add_argument("--descriptors", nargs="*", default=list(DESCRIPTORS))
    add_grid_arguments(p)
    p.add_argument("--test-fraction", type=float, default=0.25)
    add_executor_arguments(p, workers_help="processes for the Δ-fits (local processes, Dask local-cluster "
                                           "workers, or SLURM jobs)")
    p.add_argument("--out", type=Path, default=Path("reports/sweep"), help="results folder (resumed if present)")
    add_trust_argument(p)
    p.set_defaults(func=sweep, resume_hint=RESUME_HINT)

    p = subparsers.add_parser("report", help="Markdown + HTML report with tables and figures of a sweep")
    p.add_argument("run", type=Path, help="results folder of a sweep")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: the results folder)")
    p.set_defaults(func=report)

    p = subparsers.add_parser("demo", help="the main job on the shipped data (what `make demo` runs)")
    p.add_argument("--out", default="reports/demo")
    p.set_defaults(func=demo, resume_hint=RESUME_HINT)
