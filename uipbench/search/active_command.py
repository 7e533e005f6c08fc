"""``uipbench search PROBLEM --backbone NAME --budget N --out DIR --active-learning --rounds R --label-per-round K
[--label-uncertain M] [--systems SYSTEM ...] [--aggregation atomic] [--delta START]``.

The options of active Δ-learning (:mod:`uipbench.search.active`) on the search command: ``--budget`` is
the relaxations of each round's search, ``--seed`` the run's seed (round r searches with a seed derived
from it), ``--delta`` an optional round-0 model, ``--out`` the run's folder.  Like a plain search, the
loop runs in the backbone's environment (the command re-runs itself there, these options included).
Checked before any work: the options (R >= 1, K >= 1, M >= 0, none without ``--active-learning``), the
base data of ``--systems`` (default: the problem's own metal system, see :mod:`uipbench.search.active`),
and GPAW, which labels the picks.

Only the standard library is imported here at module level: the parser must stay light.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from ..harness.defaults import AGGREGATIONS

#: the options that only apply with --active-learning (attribute names)
ACTIVE_OPTIONS = ("rounds", "label_per_round", "label_uncertain", "systems", "aggregation")


def add_active_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("active Δ-learning", "search, label the best minima with DFT (GPAW), refit the Δ-model, "
                             "search again; resumable like a search (uipbench.search.active)")
    g.add_argument("--active-learning", action="store_true",
                   help="run rounds of fit Δ -> search (--budget relaxations) -> label with DFT")
    g.add_argument("--rounds", type=int, default=None, help="at most R rounds (R >= 1; a larger R continues a run)")
    g.add_argument("--label-per-round", type=int, default=None,
                   help="label the K lowest distinct minima not labelled yet, each round (K >= 1)")
    g.add_argument("--label-uncertain", type=int, default=None,
                   help="also label the M most uncertain (largest σ) of the other minima (M >= 0; default 0)")
    g.add_argument("--systems", nargs="+", default=None,
                   help="shipped systems whose labelled structures the Δ-model starts from (default: the problem's "
                        "own metal, e.g. cu-s for cu-s3-3x3)")
    g.add_argument("--aggregation", choices=AGGREGATIONS, default=None, help="of the Δ-model (default atomic)")


def active_argv(args: argparse.Namespace) -> list[str]:
    """The active-learning options of ``args`` again, for the re-run in the backbone's environment."""
    if not getattr(args, "active_learning", False):
        return []
    argv = ["--active-learning"]
    for name in ACTIVE_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", *(value if isinstance(value, list) else [str(value)])]
    return argv


def check_active_options(args: argparse.Namespace) -> bool:
    """True for an active-learning run (its options checked), False for a plain search; refuses
    active-learning options without ``--active-learning`` and bad values, before any work."""
    given = [f"--{n.replace('_', '-')}" for n in ACTIVE_OPTIONS if getattr(args, n, None) is not None]
    if not getattr(args, "active_learning", False):
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --active-learning")
        return False
    missing = [flag for flag, value in (("--rounds", args.rounds), ("--label-per-round", args.label_per_round))
               if value is None]
    if missing:
        raise ValueError(f"--active-learning needs {' and '.join(missing)} (rounds, and minima labelled per round)")
    for flag, value, low in (("--rounds", args.rounds, 1), ("--label-per-round", args.label_per_round, 1),
                             ("--label-uncertain", args.label_uncertain, 0)):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be at least {low}, got {value}")
    if args.seed < 0:
        raise ValueError(f"--seed must be non-negative with --active-learning, got {args.seed}")
    return True


def default_systems(problem: Any) -> list[str]:
    """The shipped system of the problem's metal and adsorbate chemistry (``cu-s`` for S on Cu, ``cu-o`` for a
    Cu oxide problem); the first system of its metal when none has its adsorbates."""
    from ..datasets.protocol import SYSTEM_ADSORBATES, SYSTEMS

    of_metal = [name for name, metal in SYSTEMS.items() if metal == problem.metal]
    elements = {element for element, _ in problem.composition}
    return [name for name in of_metal if SYSTEM_ADSORBATES.get(name) in elements][:1] or of_metal[:1]


def _print_round(record: dict[str, Any]) -> None:
    best = record["best"]
    dft = "not labelled" if best["dft_energy"] is None else f"{best['dft_energy']:.4f}"
    std = "" if best["predicted_energy_std"] is None else f" ± {best['predicted_energy_std']:.4f}"
    print(f"round {record['round']}: Δ on {record['training_structures']} structures, {record['evaluations']} "
          f"relaxations, {record['distinct_minima']} distinct minima, best {best['predicted_energy']:.4f}{std} eV "
          f"(DFT {dft}), labelled {len(record['labelled'])}, failed {len(record['failed'])}, lowest DFT so far "
          f"{record['lowest_dft_so_far']}" + (f"; stop: {record['stop_reason']}" if record["stop_reason"] else ""),
          flush=True)


def run_active(args: argparse.Namespace, problem: Any, settings: Any, card: Any,
               in_backbone_env: Callable[[Any, argparse.Namespace], int],
               set_threads: Callable[[int], None]) -> int:
    """The command's active-learning run (``uipbench.search.command`` hands over after its own checks)."""
    from ..adapters.registry import importable_here
    from ..datasets.label import LabellingError, gpaw_available, label_structure
    from ..harness.fit import shipped_structures
    from .active import ActiveSettings, active_learning

    active = ActiveSettings(args.rounds, args.label_per_round, args.label_uncertain or 0, args.budget, settings,
                            args.aggregation or "atomic")
    base = shipped_structures(args.systems or default_systems(problem))
    ok, why = gpaw_available()
    if not ok:
        raise LabellingError(f"--active-learning labels its picks with GPAW: {why}")
    if not importable_here(card):
        return in_backbone_env(card, args)
    from .loading import backbone_and_delta

    set_threads(args.threads)
    backbone, start = backbone_and_delta(args.backbone, args.weights, args.delta)
    try:
        summary = active_learning(problem, backbone, base, out=args.out, settings=active, labeller=label_structure,
                                  start_delta=start, progress=not args.no_progress, on_round=_print_round)
    except KeyboardInterrupt:
        print(f"uipbench search: interrupted; finished relaxations and DFT labels are kept in {args.out}; "
              f"run the same command to resume", file=sys.stderr)
        return 130
    dft = "not labelled" if summary.best_dft_energy is None else f"{summary.best_dft_energy:.4f} eV"
    print(f"{problem.name} with {backbone.name} + Δ, active learning: {len(summary.rounds)} rounds (stopped: "
          f"{summary.stopped_because}), {len(summary.labelled)} structures labelled, best predicted "
          f"{summary.best.energy:.4f} eV (DFT {dft}) -> {summary.out}")
    return 0
