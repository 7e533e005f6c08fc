"""The regression run: one sweep of baseline and candidate on the same cells, compared and gated.

:func:`run_regress` runs (or resumes) one sweep with both backbones on the same systems,
training sets and seeds (``reports/regress/<baseline>__<candidate>/sweep/``), compares them
paired by seed (:mod:`.stats`), applies the gate rule and writes the report (:mod:`.report`).
"""
from __future__ import annotations

import re
import sys
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


def _stale(sweep_dir: Path, systems: Sequence[str] | None, datasets_root: Path | None) -> str | None:
    """Why the results in ``sweep_dir`` belong to other data or settings (the sweep's own rule), for
    compare-only mode, where no sweep runs to tell."""
    from ..datasets.io import available_systems
    from ..harness.data import POOLED, load_systems
    from ..harness.results import stale_reason
    from ..harness.sweep import DEFAULT_GPR, MIN_STRUCTURES

    names, skip_small = (list(systems), None) if systems else ([*available_systems(datasets_root), POOLED],
                                                                MIN_STRUCTURES)
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


#: how the sweep says that it found stale results and recomputes them (its warning, re-issued to the caller)
_STALE_WARNING = re.compile(r"results were computed on other data or settings \((?P<reason>.*)\); recomputing")


def _sweep(notes: list[str], **options) -> None:
    """Run (or resume) the sweep; its warnings pass through, and its staleness finding becomes a note."""
    from ..harness.sweep import sweep

    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sweep(**options)
    finally:
        _pass_on(caught, notes)


def _pass_on(caught: list[warnings.WarningMessage], notes: list[str]) -> None:
    for w in caught:
        found = _STALE_WARNING.search(str(w.message))
        if found:
            notes.append(f"cached sweep results were computed on other data or settings ({found['reason']}); "
                         f"recomputed")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _stored(sweep_dir: Path, systems: Sequence[str] | None, datasets_root: Path | None, notes: list[str]) -> None:
    """Compare-only mode: the sweep results must be there; a note when they belong to other data."""
    from ..harness.results import RESULTS_FILE

    if not (sweep_dir / RESULTS_FILE).exists():
        raise RegressError(f"{sweep_dir}: no sweep results to compare (run `uipbench regress` without "
                           f"--no-run, or point --out at a folder with sweep/results.csv)")
    try:
        reason = _stale(sweep_dir, systems, datasets_root)
    except ValueError:
        reason = None
    if reason:
        notes.append(f"these results were computed on other data than the datasets now hold ({reason}); "
                     f"run without --no-run to recompute")


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
    from .._lock import OutputLock
    from ..harness import sweep as sweep_module
    from ..harness.results import read_results, split_rows
    from .report import write_regress_report

    _check_names(baseline, candidate)
    rule = GateRule(gate_metric, tuple(gate_models), float(tolerance))
    seeds = tuple(seeds) if seeds else sweep_module.DEFAULT_SEEDS
    out = Path(out) if out else REGRESS_DIR / f"{baseline}__{candidate}"
    sweep_dir = out / "sweep"
    notes: list[str] = []
    with OutputLock(out, command=" ".join(command or sys.argv)):  # the report's folder; the sweep locks its own
        if run:
            _sweep(notes, backbones=[baseline, candidate], systems=systems,
                   aggregations=tuple(aggregations or sweep_module.AGGREGATIONS), sizes=sizes, seeds=seeds,
                   descriptors=descriptors, out=sweep_dir, executor=executor, workers=workers, cache=cache,
                   progress=progress, command=command, datasets_root=datasets_root)
        else:
            _stored(sweep_dir, systems, datasets_root, notes)
        results, _, metadata = read_results(sweep_dir)  # both modes compare what the run folder holds
        results = split_rows(results)  # paired over seeds: the random splits (a validation cell has one seed)
        if systems:
            results = results[results.system.isin(list(systems))]
        comparison = compare(results, baseline, candidate, seeds=seeds, where=str(sweep_dir))
        result = RegressResult(baseline, candidate, comparison, gate(comparison, rule), rule, out, notes=notes)
        result.report = write_regress_report(result, results, sweep_dir, golden_dir, datasets_root, metadata)
    return result
