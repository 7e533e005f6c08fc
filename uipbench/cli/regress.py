"""``uipbench regress``: compare a candidate backbone with a baseline, and golden files (see :mod:`uipbench.regress`).

    uipbench regress --baseline chgnet-0.2.0 --candidate chgnet-0.3.0 [--systems ...] [--seeds ...]
                     [--tolerance MEV] [--out DIR] [--no-run]
    uipbench regress golden --write NAME [NAME ...] [--random-weights]
    uipbench regress golden --check NAME [NAME ...]

Exit codes: 0 pass, 1 regression (or golden mismatch), 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (RESUME_HINT, add_datasets_root_argument, add_grid_arguments, check_output_files,
                     check_output_folder, command_line, given, positive_int, training_sizes)


def run(args: argparse.Namespace) -> int:
    missing = [flag for flag, value in (("--baseline", args.baseline), ("--candidate", args.candidate)) if not value]
    if missing:
        raise ValueError(f"regress needs {' and '.join(missing)} (or the subcommand `golden`)")
    if args.out is not None:
        check_output_folder("--out", args.out)
    from ..regress import run_regress

    result = run_regress(args.baseline, args.candidate, args.systems, seeds=args.seeds,
                         gate_models=tuple(args.gate_models), out=args.out, sizes=training_sizes(args.sizes),
                         aggregations=args.aggregations, descriptors=args.descriptors, run=not args.no_run,
                         workers=args.workers, progress=not args.no_progress, command=command_line(),
                         datasets_root=args.datasets_root,
                         **given(tolerance=args.tolerance, gate_metric=args.gate_metric))
    text = result.report.read_text()
    gate = text.split("## Gate", 1)[1].split("\n## ", 1)[0] if "## Gate" in text else ""
    print(f"{result.baseline} → {result.candidate}")
    print(f"## Gate{gate}".rstrip())
    for note in result.notes:
        print(f"note: {note}")
    code = result.exit_code
    print(f"\n{'FAIL' if code else 'PASS'}: {result.rule.describe()}")
    print(f"report: {result.report} (and {result.report.with_suffix('.html')})")
    return code


def _golden_path(args: argparse.Namespace, names: list[str]) -> Path | None:
    """``--path`` names one golden file, so it goes with exactly one backbone."""
    if args.path is not None and len(names) != 1:
        raise ValueError(f"--path names one golden file; give one backbone with it, not {len(names)} "
                         f"({' '.join(names) or 'none'})")
    return args.path


def run_golden(args: argparse.Namespace) -> int:
    if bool(args.write) == bool(args.check):
        raise ValueError("regress golden needs exactly one of --write NAME... or --check NAME...")
    path = _golden_path(args, args.write or args.check)
    in_process = {"auto": None, "yes": True, "no": False}[args.in_process]
    from ..regress import GoldenMismatch, check_golden, write_golden

    if args.write:
        if path is not None:
            check_output_files({"--path": path})
        for name in args.write:
            written = write_golden(name, path, random_weights=True if args.random_weights else None,
                                   in_process=in_process)
            print(f"{name}: golden file {written}")
        return 0
    failed = 0
    for name in args.check:
        try:
            check_golden(name, path, in_process=in_process)
            print(f"{name}: matches its golden file")
        except GoldenMismatch as exc:
            failed += 1
            print(str(exc), file=sys.stderr)
    return 1 if failed else 0


def _add_golden(subparsers: argparse._SubParsersAction) -> None:
    g = subparsers.add_parser("golden", help="write or check golden files reports/baselines/<backbone>.json",
                              description="Energies and embedding fingerprints on fixed generator structures. Runs "
                                          "in-process when the backbone's package is importable, else in its worker.")
    g.add_argument("--write", nargs="*", metavar="NAME", help="backbones to (re)write golden files for")
    g.add_argument("--check", nargs="*", metavar="NAME", help="backbones to check against their golden files")
    g.add_argument("--path", type=Path, default=None, help="golden file (one backbone only; default reports/baselines)")
    g.add_argument("--random-weights", action="store_true",
                   help="write with the card's architecture and random weights (seed 0) even if real ones exist")
    g.add_argument("--in-process", choices=("auto", "yes", "no"), default="auto")
    g.set_defaults(func=run_golden, resume_hint=None)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``regress`` (and ``regress golden``); the gate's defaults are :mod:`uipbench.regress`'s, named in the
    help (a test keeps them equal) and checked there, so the parser does not import it."""
    p = subparsers.add_parser(
        "regress", help="compare a candidate backbone with a baseline (paired over seeds); golden files",
        description="Sweep both backbones on the same systems, splits and seeds (resumed from "
                    "reports/regress/<baseline>__<candidate>/sweep), report candidate − baseline per system and "
                    "metric as a paired difference over seeds, and exit 1 when the candidate's gate metric "
                    "(default: raw energy MAE) is worse by more than --tolerance and significantly so "
                    "(|mean| > 2 standard errors). Exit 2 on bad input.")
    p.add_argument("--baseline", help="backbone name of the reference (e.g. chgnet-0.2.0)")
    p.add_argument("--candidate", help="backbone name of the update (e.g. chgnet-0.3.0)")
    p.add_argument("--systems", nargs="*", help="default: every system with enough structures, and 'all'")
    add_datasets_root_argument(p)
    p.add_argument("--tolerance", type=float, default=None,
                   help="how much worse the gate metric may be, in its units (default 1 meV/atom on the energy MAE)")
    p.add_argument("--gate-metric", default=None,
                   help="metric the gate compares (default: energy_mae_mev_per_atom); an unknown one is refused "
                        "with the list of those compared")
    p.add_argument("--gate-models", nargs="*", default=["raw"], choices=("raw", "delta"),
                   help="which models the gate looks at (default raw)")
    add_grid_arguments(p)
    p.add_argument("--descriptors", nargs="*", default=["embedding"])
    p.add_argument("--out", type=Path, default=None, help="default reports/regress/<baseline>__<candidate>")
    p.add_argument("--no-run", action="store_true", help="only compare results already in <out>/sweep")
    p.add_argument("--workers", type=positive_int, default=1, help="local processes for the Δ-fits")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run, resume_hint=RESUME_HINT)
    _add_golden(p.add_subparsers(dest="regress_command", required=False))
