"""``uipbench search PROBLEM --backbone NAME [--delta MODEL] --algorithm {random,basin} --budget N --seed S --out DIR``.

The search runs in the backbone's own environment, one process per search: when the backbone's
package is not importable here, the command re-runs itself with that environment's python
(created on first use), so every relaxation happens in-process there.  A Δ-model's provenance is
checked against the backbone card before that, and against the loaded weights again there.

    python -m uipbench.search.command PROBLEM ...   # the same command on its own

``--seeds S1 S2 ...`` runs one search per seed into ``DIR/seed-S``, each seed a task of the
executor chosen with ``--executor``/``--scheduler``/``--cluster`` (local threads by default,
``--workers`` at a time; see :mod:`uipbench.search.seeds` and :mod:`uipbench.executors`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: set in the re-run process, so a broken environment cannot re-run itself forever
_CHILD_VARIABLE = "UIPBENCH_SEARCH_IN_BACKBONE_ENV"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..cli.common import positive_int
    from .defaults import ALGORITHMS, BASIN_KT, BASIN_STEP, FMAX, MAX_STEPS, OPTIMIZERS

    p = subparsers.add_parser("search", help="structure search with a backbone, raw or Δ-corrected (resumable)",
                              description="Structure search: constrained random candidates relaxed with the backbone "
                              "(or backbone + Δ), distinct minima kept. Resumable: re-run the same command.")
    p.add_argument("problem", help="a shipped problem (problems/*.toml, e.g. cu-s3-3x3) or a path to a card")
    p.add_argument("--backbone", required=True)
    p.add_argument("--delta", type=Path, default=None, help="saved Δ-model (.json/.npz base path, uipbench.delta.save)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="random")
    p.add_argument("--budget", type=int, required=True, help="relaxations (a larger one extends a finished search)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0)
    seeds.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                       help="several seeds, one search each into OUT/seed-S, run as tasks of the executor")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumed when it holds this search)")
    p.add_argument("--weights", default=None, help="local weights file (overrides the card's source)")
    p.add_argument("--fmax", type=float, default=FMAX, help=f"eV/Å (default {FMAX})")
    p.add_argument("--steps", type=int, default=MAX_STEPS, help=f"step cap per relaxation (default {MAX_STEPS})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="BFGS")
    p.add_argument("--kT", type=float, default=BASIN_KT, help=f"basin hopping: Metropolis kT in eV ({BASIN_KT})")
    p.add_argument("--step", type=float, default=BASIN_STEP, help=f"basin hopping: move radius in Å ({BASIN_STEP})")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads of the search process (default 1: run several seeds side by side instead; "
                        "on a loaded 2-core machine two threads made CHGNet steps 10x slower)")
    p.add_argument("--no-progress", action="store_true")
    from ..executors import add_arguments as add_executor_arguments
    from .active_command import add_active_arguments  # --active-learning (uipbench.search.active_command)

    add_active_arguments(p)
    add_executor_arguments(p, workers_default=None, workers_help="with --seeds: seeds searched at a time (local "
                           "search processes, Dask local-cluster workers, or SLURM jobs)",
                           workers_default_text="one per seed, at most this machine's cores")
    p.set_defaults(func=run_command)
    return p


def _argv(args: argparse.Namespace, seed_and_out: bool = True) -> list[str]:
    """The command line of one search of ``args`` again (the re-run in the backbone's environment;
    without ``--seed``/``--out`` for the seed tasks of ``--seeds``)."""
    argv = [str(args.problem), "--backbone", args.backbone, "--algorithm", args.algorithm, "--budget",
            str(args.budget), "--fmax", repr(args.fmax), "--steps", str(args.steps), "--optimizer", args.optimizer,
            "--kT", repr(args.kT), "--step", repr(args.step), "--threads", str(args.threads)]
    if seed_and_out:
        argv += ["--seed", str(args.seed), "--out", str(args.out)]
    if args.delta:
        argv += ["--delta", str(args.delta)]
    if args.weights:
        argv += ["--weights", str(args.weights)]
    if args.no_progress:
        argv.append("--no-progress")
    from .active_command import active_argv

    return argv + active_argv(args)


def _in_backbone_env(card, args: argparse.Namespace) -> int:
    from ..adapters.envs import ensure

    if os.environ.get(_CHILD_VARIABLE):
        raise RuntimeError(f"{card.name}: its package does not import in {sys.executable}, the python of its "
                           f"environment; rebuild it with `uipbench env sync {card.environment} --force`")
    from .._interrupt import child_env, run_forwarding

    spec = ensure(card)
    env = child_env({**os.environ, _CHILD_VARIABLE: "1"})  # it dies with this process (Linux)
    problem = Path(args.problem)
    if problem.suffix == ".toml":  # the child may run in another working directory's terms: pass absolute paths
        args.problem = problem.resolve()
    args.out = Path(args.out).resolve()
    if args.delta:
        args.delta = Path(args.delta).resolve()
    # a signal here is passed on, so the search there ends cleanly (its lock released) and says how to resume
    return run_forwarding([str(spec.python), "-m", "uipbench.search.command", *_argv(args)], env=env).returncode


def _precheck_delta(card, path: Path, weights: str | None) -> None:
    """Provenance of a saved Δ-model against the card (and its sha256 unless other weights are chosen),
    without loading the backbone."""
    from ..delta.io import load

    other_weights = card.local_weights(weights) is not None
    load(path, expect_backbone=card.name, expect_sha256=None if other_weights else card.weights_sha256)


def _set_threads(n: int) -> None:
    if n < 1:
        raise ValueError(f"--threads must be at least 1, got {n}")
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(n)


def run_command(args: argparse.Namespace) -> int:
    from ..adapters.card import get_card
    from ..adapters.registry import importable_here
    from .engine import SearchSettings
    from .problem import load_problem
    from .relax import RelaxSettings

    problem = load_problem(args.problem)
    settings = SearchSettings(args.algorithm, args.seed, RelaxSettings(args.fmax, args.steps, args.optimizer),
                              args.kT, args.step)
    if args.budget < 1:
        raise ValueError(f"--budget must be at least 1, got {args.budget}")
    card = get_card(args.backbone)
    if args.delta:
        _precheck_delta(card, args.delta, args.weights)
    from .active_command import check_active_options, run_active

    active = check_active_options(args)  # checked before any work, with or without --seeds
    if args.seeds is None and (args.executor or args.scheduler or args.cluster):
        raise ValueError("--executor, --scheduler and --cluster run the seeds of --seeds S1 S2 ... as tasks; "
                         "give --seeds (a single search is one process)")
    if args.seeds is not None:
        return _run_seeds(args)
    if active:  # --active-learning: rounds of fit, search, DFT labels (uipbench.search.active)
        return run_active(args, problem, settings, card, _in_backbone_env, _set_threads)
    if not importable_here(card):
        return _in_backbone_env(card, args)
    from .loading import backbone_and_delta
    from .run import search_to_folder

    _set_threads(args.threads)
    backbone, delta = backbone_and_delta(args.backbone, args.weights, args.delta)
    try:
        summary = search_to_folder(problem, backbone, delta, budget=args.budget, settings=settings, out=args.out,
                                   progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"uipbench search: interrupted; finished relaxations are kept in {args.out}/evaluations; "
              f"run the same command to resume", file=sys.stderr)
        return 130
    best = summary.best
    print(f"{problem.name} with {backbone.name}{' + Δ' if delta is not None else ''} ({args.algorithm}, seed "
          f"{args.seed}): {len(summary.evaluations)} relaxations ({summary.resumed} resumed), "
          f"{len(summary.minima)} distinct minima, best {best.energy:.4f} eV (evaluation {best.evaluation}, "
          f"found {len(best.hits)}x) -> {summary.out}")
    return 0


def _run_seeds(args: argparse.Namespace) -> int:
    """``--seeds``: one search per seed, as tasks of the chosen executor, under the lock of ``--out``."""
    from .._lock import OutputLock
    from ..executors import ExecutorSpec, open_executor
    from .seeds import run_seeds, seed_tasks, write_seeds_summary

    if args.workers is None:  # one per seed, at most the cores (a SLURM job per seed)
        cores = len(args.seeds) if args.cluster else (os.cpu_count() or 1)
        args.workers = max(1, min(len(args.seeds), cores))
    spec = ExecutorSpec.from_args(args)  # checked (and a cluster config read) before any work
    out = Path(args.out).resolve()
    if args.delta:
        args.delta = Path(args.delta).resolve()
    if Path(args.problem).suffix == ".toml":
        args.problem = Path(args.problem).resolve()
    tasks = seed_tasks(_argv(args, seed_and_out=False), args.seeds, out)

    def say(result) -> None:
        state = (f"best {result.best_energy:.4f} eV, {result.distinct_minima} distinct minima" if result.ok
                 else f"FAILED (exit {result.returncode}): {result.error}")
        print(f"seed {result.seed}: {state} -> {result.out}", file=sys.stderr if not result.ok else sys.stdout)

    with OutputLock(out, command=" ".join(sys.argv)):
        if spec.kind == "local":
            results = run_seeds(tasks, workers=spec.workers, on_result=say)
        else:
            with open_executor(spec) as executor:
                results = run_seeds(tasks, executor, on_result=say)
        summary = write_seeds_summary(out, results, spec.describe())
    failed = [r.seed for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} seeds finished -> {summary}"
          + (f"; failed: {failed} (run the same command to retry them)" if failed else ""))
    return 1 if failed else 0


def _die_with_parent() -> None:
    """A search started by another uipbench process (a seed task, the re-run in the backbone's
    environment) ends when that process dies, even of SIGKILL (Linux)."""
    from .._interrupt import PARENT_VARIABLE, die_with_parent

    parent = os.environ.get(PARENT_VARIABLE, "")
    if parent.isdigit():
        die_with_parent(int(parent))


def main(argv: list[str] | None = None) -> int:
    try:  # the command line is becoming a package (uipbench/cli/); either layout maps errors the same way
        from ..cli.common import dispatch
    except ImportError:
        from ..cli_common import dispatch

    _die_with_parent()
    parser = argparse.ArgumentParser(prog="uipbench")
    register(parser.add_subparsers(dest="command", required=True))
    return dispatch(parser.parse_args(["search", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
