"""``uipbench oxide references|label|phase-diagram|summary``: the '8' Cu oxide's DFT references, the DFT points
of its search minima, its surface phase diagram, and every backbone's diagram side by side (:mod:`uipbench.oxide`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import check_output_folder, positive_float, positive_int


def references(args: argparse.Namespace) -> int:
    from ..oxide.labelling import label_references

    if args.root is not None:
        check_output_folder("--root", args.root)
    report = label_references(args.root, workers=args.workers, mpi_ranks=args.mpi_ranks)
    return _print_report("cu-o references", report)


def label(args: argparse.Namespace) -> int:
    from ..oxide.labelling import label_minima

    if args.root is not None:
        check_output_folder("--root", args.root)
    report = label_minima(args.searches, args.top, args.root, workers=args.workers, mpi_ranks=args.mpi_ranks)
    return _print_report("cu-o search minima", report)


def relax(args: argparse.Namespace) -> int:
    from ..oxide.labelling import relax_minima

    if args.root is not None:
        check_output_folder("--root", args.root)
    report = relax_minima(args.problems, args.root, fmax=args.fmax, steps=args.steps, workers=args.workers,
                          mpi_ranks=args.mpi_ranks)
    return _print_report("cu-o DFT relaxations", report)


def _print_report(what: str, report) -> int:
    print(f"{what}: labelled {report.labelled}, already present {report.skipped_existing}, failed {len(report.failed)}")
    for line in report.failed:
        print(f"  failed: {line}")
    return 1 if report.failed else 0


def phase_diagram(args: argparse.Namespace) -> int:
    from ..oxide.run import phase_diagram as run

    check_output_folder("--out", args.out, inputs=args.searches)
    diagram, report = run(args.searches, args.backbone, args.out, root=args.root, mu_min=args.mu_min,
                          mu_max=args.mu_max, mus=args.mu_values, weights=args.weights, corrected=args.corrected)
    for method in diagram.methods:
        spans = "; ".join(f"{w.name} {w.start:.2f}..{w.end:.2f} eV" for w in method.winners)
        print(f"{method.method}: {spans}")
    for note in diagram.notes:
        print(f"note: {note}")
    print(f"-> {report}")
    return 0


def summary(args: argparse.Namespace) -> int:
    from ..oxide.run import summary as run

    check_output_folder("--out", args.out, inputs=args.diagrams)
    print(f"-> {run(args.diagrams, args.out, root=args.root, mu_min=args.mu_min)}")
    return 0


def _labelling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=positive_int, default=2, help="GPAW processes at a time (default 2)")
    p.add_argument("--mpi-ranks", type=positive_int, default=1, help="MPI ranks per structure (default 1)")
    p.add_argument("--root", type=Path, default=None, help="datasets folder (default: the shipped one)")


def register(subparsers: argparse._SubParsersAction) -> None:
    oxide = subparsers.add_parser("oxide", help="the '8' Cu oxide on Cu(111): DFT references, DFT of search minima, "
                                                "surface phase diagram")
    osub = oxide.add_subparsers(dest="oxide_command", required=True)
    p = osub.add_parser("references", help="label bulk Cu, the O2 scan and the Cu2O scan (GPAW; resumable)")
    _labelling_arguments(p)
    p.set_defaults(func=references, resume_hint="labelled references are kept; run it again to continue")
    p = osub.add_parser("label", help="DFT single points of the lowest minima of each problem of finished "
                                      "searches (GPAW; resumable)")
    p.add_argument("--searches", type=Path, nargs="+", required=True,
                   help="search folders (or folders of --seeds runs)")
    p.add_argument("--top", type=positive_int, default=3, help="lowest distinct minima per problem (default 3)")
    _labelling_arguments(p)
    p.set_defaults(func=label, resume_hint="labelled structures are kept; run it again to continue")
    p = osub.add_parser("relax", help="DFT relaxation of the DFT-lowest labelled minimum of each problem (GPAW; "
                                      "resumable from its last step)")
    p.add_argument("--problems", nargs="+", required=True, help="problems whose winner to relax (cu-o8-cu5o3 ...)")
    p.add_argument("--fmax", type=positive_float, default=0.05, help="eV/Å (default 0.05)")
    p.add_argument("--steps", type=positive_int, default=100, help="BFGS step cap (default 100)")
    _labelling_arguments(p)
    p.set_defaults(func=relax, resume_hint="finished relaxation steps are kept; run it again to continue")
    p = osub.add_parser("phase-diagram", help="ΔG(Δμ_O) of every composition, backbone against DFT")
    p.add_argument("--backbone", required=True)
    p.add_argument("--searches", type=Path, nargs="+", required=True,
                   help="finished raw searches of the backbone, one clean-slab search among them")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mu-min", type=float, default=-2.5, help="O-poor end of Δμ_O in eV (default -2.5)")
    p.add_argument("--mu-max", type=float, default=None,
                   help="O-rich end of Δμ_O in eV (default: each method's Cu2O limit)")
    p.add_argument("--mu-values", type=float, nargs="+", default=None,
                   help="Δμ_O values of the ΔG table (default: the ends and every 0.5 eV)")
    p.add_argument("--weights", default=None, help="the backbone's weights file, if the searches used one")
    p.add_argument("--corrected", action="store_true",
                   help="also the backbone + Δ diagram: a Δ-GPR on the labelled oxide structures, each composition "
                        "left out of its own model's fit (uipbench.oxide.corrected)")
    p.add_argument("--root", type=Path, default=None, help="datasets folder (default: the shipped one)")
    p.set_defaults(func=phase_diagram)
    p = osub.add_parser("summary", help="every backbone's phase diagram beside DFT's (also over all labelled minima)")
    p.add_argument("--diagrams", type=Path, nargs="+", required=True,
                   help="folders written by `uipbench oxide phase-diagram`, one per backbone")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mu-min", type=float, default=-2.5, help="O-poor end of Δμ_O in eV (default -2.5)")
    p.add_argument("--root", type=Path, default=None, help="datasets folder (default: the shipped one)")
    p.set_defaults(func=summary)
