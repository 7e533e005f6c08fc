"""``uipbench search-benchmark``: raw, Δ-corrected and active-learning searches scored against DFT
(:mod:`uipbench.search.benchmark`)."""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
from collections.abc import Mapping
from pathlib import Path

from .common import RESUME_HINT, check_output_folder


def _check_commands(plan, out: Path, commands: Mapping[str, argparse.ArgumentParser]) -> None:
    """Every kind of command the plan will run must parse here (e.g. ``uipbench delta fit`` exists),
    so a missing command is one clear error before any work, not a failure per run.  ``commands``:
    the parsers of the ``uipbench`` commands, by name."""
    from ..search.benchmark.plan import delta_fit_argv, search_argv

    argvs = [search_argv(spec, plan.settings, out) for spec in {s.method: s for s in plan.runs}.values()]
    argvs += [delta_fit_argv(out, b) for b in plan.delta_backbones[:1]]
    for argv in argvs:
        err = io.StringIO()
        try:
            if argv[0] not in commands:
                raise SystemExit(f"no command {argv[0]!r}")
            with contextlib.redirect_stderr(err):
                commands[argv[0]].parse_args(argv[1:])
        except SystemExit as stop:
            last = (err.getvalue().strip().splitlines() or [str(stop.code)])[-1]
            raise ValueError(f"this uipbench cannot run `uipbench {' '.join(argv[:2])} ...` ({last})") from None


def run_command(args: argparse.Namespace, commands: Mapping[str, argparse.ArgumentParser]) -> int:
    check_output_folder("--out", args.out)
    from ..search.benchmark.driver import run_benchmark
    from ..search.benchmark.plan import BenchmarkSettings, make_plan

    settings = BenchmarkSettings(args.budget, args.algorithm, args.rounds, args.label_per_round, args.label_top)
    plan = make_plan(args.problems, args.backbones, args.methods, args.seeds, settings)
    _check_commands(plan, args.out, commands)
    result = run_benchmark(plan, args.out, jobs=args.jobs, report_only=args.report_only)
    for c in result.cells:
        print(f"{c.problem} {c.backbone} {c.method}: success {c.successes}/{c.n} scored"
              + (f" ({c.unscored} not scored)" if c.unscored else ""))
    print(f"report: {result.report} (and {result.report.with_suffix('.html')})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..search.benchmark.plan import DEFAULT_SEEDS, LABEL_TOP, METHODS
    from ..search.defaults import ALGORITHMS

    p = subparsers.add_parser(
        "search-benchmark", help="raw vs Δ vs active-learning searches, predicted minima scored with DFT (resumable)",
        description="One search per problem, backbone, method and seed (each a `uipbench search` in the backbone's "
                    "environment); the lowest minima of each get a DFT single point; success = within 0.1 eV of the "
                    "lowest DFT energy found (AdsorbML). Resumable: run the same command again.")
    p.add_argument("--problems", nargs="+", required=True, help="shipped problems (problems/*.toml), e.g. cu-s3-3x3")
    p.add_argument("--backbones", nargs="+", required=True)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["raw", "delta"],
                   help="raw (backbone), delta (backbone + Δ-model fitted by `uipbench delta fit`), al (active "
                        "learning; needs --rounds and --label-per-round); default raw delta")
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    p.add_argument("--budget", type=int, required=True, help="relaxations per run")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="random")
    p.add_argument("--rounds", type=int, default=None, help="al: active-learning rounds")
    p.add_argument("--label-per-round", type=int, default=None, help="al: structures DFT-labelled per round")
    p.add_argument("--label-top", type=int, default=LABEL_TOP,
                   help=f"lowest minima of each run given a DFT single point (default {LABEL_TOP}: the predicted "
                        f"minimum and the runner-up, for the DFT rank and the top-2 gap)")
    p.add_argument("--jobs", type=int, default=1, help="runs (and DFT single points) at a time")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumed when it holds this benchmark)")
    p.add_argument("--report-only", action="store_true",
                   help="start no Δ-fit, search or DFT calculation: score the finished runs with the DFT points "
                        "labelled so far and write the report (e.g. while the DFT is still to come)")
    # every command's parser (the others are registered by the time it runs), for _check_commands
    p.set_defaults(func=functools.partial(run_command, commands=subparsers.choices), resume_hint=RESUME_HINT)
