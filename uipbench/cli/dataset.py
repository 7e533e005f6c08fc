"""``uipbench dataset build|build-validation|info``: label structures with the reference protocol (the
training plan, or the independent validation plan); summarise and validate."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..executors import add_arguments as add_executor_arguments
from .common import add_format_argument, check_output_folder, positive_int


def build(args: argparse.Namespace) -> int:
    from ..datasets.label import build_dataset
    from ..datasets.relax import relaxer_for
    from ..executors import ExecutorSpec

    if args.root is not None:
        check_output_folder("--root", args.root)
    relaxer, relaxer_name = relaxer_for(args.relax_with)
    report = build_dataset(args.system, args.n, root=args.root, resume=args.resume, workers=args.workers,
                           seed=args.seed, relaxer=relaxer, relaxer_name=relaxer_name,
                           executor=ExecutorSpec.from_args(args), mpi_ranks=args.mpi_ranks)
    return _print_report(args.system, report)


def build_validation(args: argparse.Namespace) -> int:
    from ..datasets.label import build_validation as build
    from ..datasets.relax import relaxer_for
    from ..executors import ExecutorSpec

    if args.root is not None:
        check_output_folder("--root", args.root)
    relaxed = args.relax_with not in (None, "none")
    relaxer, relaxer_name = relaxer_for(args.relax_with) if relaxed else (None, None)
    report = build(args.system, args.n, root=args.root, resume=args.resume, workers=args.workers, seed=args.seed,
                   relaxed=relaxed, relaxer=relaxer, relaxer_name=relaxer_name,
                   executor=ExecutorSpec.from_args(args), mpi_ranks=args.mpi_ranks)
    return _print_report(f"{args.system} (validation)", report)


def _print_report(what: str, report) -> int:
    print(f"{what}: labelled {report.labelled}, already present {report.skipped_existing}, "
          f"deferred (need a relaxation backbone) {report.deferred_relaxation}, failed {len(report.failed)}")
    for line in report.failed:
        print(f"  failed: {line}", file=sys.stderr)
    return 1 if report.failed else 0


def _print_card(card: dict, ok: bool, problems: list[str]) -> None:
    counts = card["counts"]
    lab = card.get("labelling", {})
    print(f"system        {card['system']}")
    print(f"protocol      {card['protocol']['name']}")
    print(f"structures    {counts['structures']} ({counts['atoms']} atoms)")
    print(f"surface cells {counts['by_surface_cell']}")
    print(f"motifs        {counts['by_motif']}")
    print(f"variants      {counts['by_variant']}")
    print(f"groups (3+)   {counts['composition_groups_3plus']} by composition, "
          f"{counts['arrangement_groups_3plus']} by composition and motif")
    print(f"labelling     median {lab.get('median_minutes_per_structure')} min/structure, "
          f"{lab.get('total_core_hours')} core-hours")
    validation = card.get("validation")
    if validation:
        v = validation["counts"]
        print(f"validation    {v['structures']} structures ({v['atoms']} atoms; never fitted on), "
              f"surface cells {v['by_surface_cell']}")
    else:
        print(f"validation    none (`uipbench dataset build-validation {card['system']} --n 20` labels one)")
    print(f"valid         {'yes' if ok else 'NO'}")
    for problem in problems:
        print(f"  - {problem}")


def info(args: argparse.Namespace) -> int:
    from ..datasets.io import load_card, validate

    from ..datasets.io import CARD_FILE, system_dir

    card = load_card(args.system, args.root)
    report = validate(args.system, args.root)
    if args.format == "json":
        print(json.dumps({"card": card, "valid": report.ok, "problems": report.problems}, indent=2))
        return 0 if report.ok else 1
    try:
        _print_card(card, report.ok, report.problems)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{system_dir(args.system, args.root) / CARD_FILE}: not a dataset card (field {exc} "
                         f"missing or of the wrong kind); `uipbench dataset build --resume` rewrites it") from None
    return 0 if report.ok else 1


def _build_arguments(p: argparse.ArgumentParser, func, n_help: str, resume_help: str, relax_default: str,
                     relax_help: str) -> None:
    """The options ``build`` and ``build-validation`` share (they differ in their plan and file only)."""
    p.add_argument("system")
    p.add_argument("--n", type=int, required=True, help=n_help)
    p.add_argument("--resume", action="store_true", help=resume_help)
    add_executor_arguments(p, workers_default=None, workers_help="parallel GPAW processes (local or Dask workers)")
    p.add_argument("--mpi-ranks", type=positive_int, default=1,
                   help="MPI ranks per structure (mpirun -np N; default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--relax-with", default=relax_default, help=relax_help)
    p.add_argument("--root", type=Path, default=None, help="datasets folder (default: the shipped one)")
    p.set_defaults(func=func, resume_hint="labelled structures are kept; run it again with --resume to continue")


def register(subparsers: argparse._SubParsersAction) -> None:
    dataset = subparsers.add_parser("dataset", help="build, inspect and validate the DFT reference datasets")
    dsub = dataset.add_subparsers(dest="dataset_command", required=True)
    p = dsub.add_parser("build", help="label structures of a system with the reference protocol")
    _build_arguments(p, build, "number of plan entries the dataset should hold", "extend an existing dataset",
                     "chgnet-0.3.0", "backbone that relaxes the 'relaxed' variants ('none' defers them)")
    p = dsub.add_parser("build-validation",
                        help="label the independent validation set of a system (validation.extxyz; never fitted on)")
    _build_arguments(p, build_validation, "number of validation plan entries the file should hold",
                     "extend an existing validation set", "none",
                     "label the plan's relaxed variant instead: each entry relaxed by this backbone first "
                     "(default none: the unrelaxed random structures)")
    p = dsub.add_parser("info", help="summarise and validate a system's dataset")
    p.add_argument("system")
    add_format_argument(p)
    p.add_argument("--root", type=Path, default=None)
    p.set_defaults(func=info)
