"""The regression run: one sweep of baseline and candidate on the same cells, compared and gated.

:func:`run_regress` runs (or resumes) one sweep with both backbones on the same systems,
training sets and seeds (``reports/regress/<baseline>__<candidate>/sweep/``), compares them
paired by seed (:mod:`.stats`), applies the gate rule and writes the report (:mod:`.report`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .stats import DEFAULT_TOLERANCE, MAE, GateRule, RegressError, compare, exit_code, gate

REGRESS_DIR = Path("reports") / "regress"


@dataclass
class RegressResult:
    baseline: str
    candidate: str
    comparison: Any  # DataFrame, all paired cells
    failures: Any  # DataFrame, rows breaking the gate rule
    rule: GateRule
    out: Path
    report: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return exit_code(self.failures)


def _sweep_systems(systems: Sequence[str] | None, datasets_root: Path | None) -> tuple[list[str], int | None]:
    from ..datasets.io import available_systems
    from ..harness.data import POOLED
    from ..harness.sweep import MIN_STRUCTURES

    return (list(systems), None) if systems else ([*available_systems(datasets_root), POOLED], MIN_STRUCTURES)


def _stale(sweep_dir: Path, systems: Sequence[str] | None, datasets_root: Path | None) -> str | None:
    """Why the sweep results in ``sweep_dir`` belong to other data or settings (the sweep's own rule)."""
    from ..harness.data import load_systems
    from ..harness.sweep import DEFAULT_GPR, stale_reason

    names, skip_small = _sweep_systems(systems, datasets_root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_systems(names, datasets_root, skip_small=skip_small)
    return stale_reason(sweep_dir, data, DEFAULT_GPR)


def _check_names(baseline: str, candidate: str) -> None:
    from ..adapters.card import get_card

    for name in (baseline, candidate):
        get_card(name)  # unknown names: CardError naming the known backbones
    if baseline == candidate:
        raise RegressError(f"baseline and candidate are both {baseline!r}; name two different backbones")


def _stored_results(sweep_dir: Path, systems: Sequence[str] | None, datasets_root: Path | None, notes: list[str]):
    """The results already in ``sweep_dir`` (compare-only mode), with a note when they are stale."""
    from ..harness.sweep import RESULTS_FILE
    from ..report.render import read_results

    if not (sweep_dir / RESULTS_FILE).exists():
        raise RegressError(f"{sweep_dir}: no sweep results to compare (run `uipbench regress` without "
                           f"--no-run, or point --out at a folder with sweep/results.csv)")
    results = read_results(sweep_dir)[0]
    try:
        reason = _stale(sweep_dir, systems, datasets_root)
    except ValueError:
        reason = None
    if reason:
        notes.append(f"these results were computed on other data than the datasets now hold ({reason}); "
                     f"run without --no-run to recompute")
    return results


def run_regress(baseline: str, candidate: str, systems: Sequence[str] | None = None, *,
                seeds: Sequence[int] | None = None, tolerance: float = DEFAULT_TOLERANCE,
                gate_metric: str = MAE, gate_models: Sequence[str] = ("raw",),
                out: str | Path | None = None, sizes: Sequence[int | str] | None = None,
                aggregations: Sequence[str] | None = None, descriptors: Sequence[str] = ("embedding",),
                run: bool = True, workers: int = 1, executor=None, cache=None, progress: bool = True,
                datasets_root: Path | None = None, command: list[str] | None = None,
                golden_dir: Path | None = None) -> RegressResult:
    """Sweep (or resume) both backbones on the same cells, compare paired by seed, write the report.

    ``run=False`` only compares the results already in ``<out>/sweep`` (an error if there are none).
    Cached results computed on different data than the shipped data now are recomputed.
    """
    from ..harness import sweep as sweep_module
    from .report import write_regress_report

    _check_names(baseline, candidate)
    rule = GateRule(gate_metric, tuple(gate_models), float(tolerance))
    seeds = tuple(seeds) if seeds else sweep_module.DEFAULT_SEEDS
    out = Path(out) if out else REGRESS_DIR / f"{baseline}__{candidate}"
    sweep_dir = out / "sweep"
    notes: list[str] = []
    if run:
        reason = _stale(sweep_dir, systems, datasets_root)  # the sweep recomputes such cells itself
        if reason:
            notes.append(f"cached sweep results were computed on other data or settings ({reason}); recomputed")
        results = sweep_module.sweep(
            [baseline, candidate], systems, aggregations=tuple(aggregations or sweep_module.AGGREGATIONS),
            sizes=sizes, seeds=seeds, descriptors=descriptors, out=sweep_dir, executor=executor, workers=workers,
            cache=cache, progress=progress, command=command, datasets_root=datasets_root)
    else:
        results = _stored_results(sweep_dir, systems, datasets_root, notes)
    if systems:
        results = results[results.system.isin(list(systems))]
    comparison = compare(results, baseline, candidate, seeds=seeds, where=str(sweep_dir))
    result = RegressResult(baseline, candidate, comparison, gate(comparison, rule), rule, out, notes=notes)
    result.report = write_regress_report(result, results, sweep_dir, golden_dir, datasets_root)
    return result
