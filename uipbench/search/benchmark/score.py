"""Scoring the runs against DFT: pure functions of the runs' candidates and the DFT single points.

Per problem, the reference is every structure labelled for it (all methods, backbones and seeds, and
the structures active-learning runs labelled): E_min^DFT is the lowest DFT energy among them, and
they are grouped into distinct minima by the search's similarity rule on their DFT energies
(:func:`uipbench.search.minima.distinct_minima`), lowest first: a structure's *DFT rank* is its group's place.

Per run: *success* when DFT(predicted minimum) − E_min^DFT ≤ 0.1 eV, the threshold of AdsorbML
(Lan et al., npj Comput. Mater. 9, 172 (2023)); its DFT rank; the adsorbate (S–S) bonds of the
predicted minimum and of the DFT-lowest structure; the error in the energy gap between its two lowest
minima (predicted gap − DFT gap); evaluations and CPU seconds to success.  Costs: ``raw`` – the
search's relaxations; ``delta`` – those plus the whole Δ-fit of the backbone; ``al`` – the relaxations of
every round plus its own DFT labelling (core-seconds), all of it counted toward success (the final minima
need every round), and its evaluations to success count the earlier rounds' relaxations.  Its per-round
Δ-fits are not counted: its folder records their wall time only.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

from ...harness.metrics import Metric
from ..minima import adsorbate_bonds, distinct_minima
from .collect import Candidate, RunResult
from .labelling import DftPoint, PointKey, core_seconds, key_of
from .plan import RunSpec

#: eV above the lowest DFT energy found within which a predicted minimum counts as found (AdsorbML)
SUCCESS_THRESHOLD_EV = 0.1


def _metric(name: str, unit: str, label: str, lower_is_better: bool | None) -> Metric:
    return Metric(name, unit, label, lower_is_better, score=None, models=("search",))


#: the benchmark's metrics, each with its unit and direction, defined once.  Records of the registry's
#: type kept in a table of their own: they score search runs, not the held-out splits of a sweep.
METRICS = {m.name: m for m in (
    _metric("success_rate", "", f"success rate (≤ {SUCCESS_THRESHOLD_EV} eV of the DFT minimum)", False),
    _metric("dft_above_minimum", "eV", "DFT energy above the lowest found", True),
    _metric("dft_rank", "", "DFT rank of the predicted minimum", True),
    _metric("adsorbate_bonds", "bonds", "S–S bonds", None),
    _metric("gap_error", "eV", "top-2 gap error (predicted − DFT)", None),
    _metric("evaluations_to_success", "relaxations", "evaluations to success", True),
    _metric("cpu_seconds", "CPU s", "CPU time per run", True),
    _metric("cpu_seconds_to_success", "CPU s", "CPU time to success", True),
)}


@dataclass(frozen=True)
class ProblemReference:
    """What a problem's labelled structures say: the lowest DFT energy and every structure's DFT rank."""

    problem: str
    e_min: float
    lowest_hash: str
    lowest_bonds: int
    rank_of: dict[str, int]  # structure hash -> DFT rank (1 = the group of the lowest)
    n_distinct: int


def problem_reference(problem: str, points: Iterable[DftPoint], n_adsorbates: int) -> ProblemReference | None:
    """The reference of ``problem`` from its labelled structures (None when there are none)."""
    mine = [p for p in points if p.problem == problem]
    if not mine:
        return None
    n_slab = len(mine[0].atoms) - n_adsorbates
    minima = distinct_minima([(i, p.atoms, p.energy, None) for i, p in enumerate(mine)], n_slab)
    rank_of = {mine[i].structure_hash: rank for rank, m in enumerate(minima, start=1) for i in m.hits}
    lowest = mine[minima[0].evaluation]
    return ProblemReference(problem, lowest.energy, lowest.structure_hash, adsorbate_bonds(lowest.atoms, n_slab),
                            rank_of, len(minima))


@dataclass(frozen=True)
class RunScore:
    """One run against its problem's reference; NaN / None where something is not measured."""

    spec: RunSpec
    status: str  # "scored", "unlabelled" (its predicted minimum has no DFT energy) or "failed"
    dft_energy: float = math.nan
    dft_above_minimum: float = math.nan
    success: bool | None = None
    dft_rank: int | None = None
    bonds_predicted: int | None = None
    bonds_dft_lowest: int | None = None
    gap_predicted: float = math.nan
    gap_dft: float = math.nan
    evaluations: int = 0
    evaluations_to_success: int | None = None
    cpu_search: float = math.nan
    cpu_delta_fit: float = 0.0
    cpu_dft: float = 0.0  # active learning's own DFT labelling (core-seconds)
    cpu_to_success: float | None = None

    @property
    def gap_error(self) -> float:
        return self.gap_predicted - self.gap_dft

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_search + self.cpu_delta_fit + self.cpu_dft


def _gaps(candidates: Sequence[Candidate], points: dict[PointKey, DftPoint]) -> tuple[float, float]:
    if len(candidates) < 2:
        return math.nan, math.nan
    first, second = key_of(candidates[0]), key_of(candidates[1])
    predicted = candidates[1].predicted_energy - candidates[0].predicted_energy
    if first not in points or second not in points:
        return predicted, math.nan
    return predicted, points[second].energy - points[first].energy


def run_costs(run: RunResult, delta_fit_cpu: float) -> dict[str, float]:
    """CPU seconds of a run by part: the search, the Δ-fit (delta), its own DFT (al)."""
    dft = sum(core_seconds(a) for a in run.al_labelled) if run.spec.method == "al" else 0.0
    return {"cpu_search": run.cpu_seconds, "cpu_delta_fit": delta_fit_cpu if run.spec.method == "delta" else 0.0,
            "cpu_dft": dft}


def score_run(run: RunResult, reference: ProblemReference | None, points: dict[PointKey, DftPoint], n_adsorbates: int,
              delta_fit_cpu: float = 0.0) -> RunScore:
    """The scores of one finished run."""
    costs = run_costs(run, delta_fit_cpu)
    base = dict(evaluations=run.evaluations, **costs)
    if not run.candidates or reference is None or key_of(run.candidates[0]) not in points:
        return RunScore(run.spec, "unlabelled", **base)
    best = run.candidates[0]
    energy = points[key_of(best)].energy
    above = energy - reference.e_min
    success = above <= SUCCESS_THRESHOLD_EV
    gap_predicted, gap_dft = _gaps(run.candidates, points)
    to_success = cpu_to = None
    if success:
        to_success = run.evaluation_offset + best.first_evaluation + 1
        cpu_to = (sum(costs.values()) if run.spec.method == "al"
                  else run.cpu_through(best.first_evaluation) + costs["cpu_delta_fit"])
    return RunScore(run.spec, "scored", energy, above, success, reference.rank_of.get(best.structure_hash),
                    adsorbate_bonds(best.atoms, len(best.atoms) - n_adsorbates), reference.lowest_bonds,
                    gap_predicted, gap_dft, evaluations_to_success=to_success, cpu_to_success=cpu_to, **base)


@dataclass(frozen=True)
class CellScore:
    """The runs of one (problem, backbone, method) over seeds."""

    problem: str
    backbone: str
    method: str
    n: int  # runs scored
    successes: int
    unscored: int  # runs finished without a DFT energy for their predicted minimum, or failed
    median_dft_rank: float
    bonds_predicted: tuple[int, ...]  # per scored run, in seed order
    bonds_dft_lowest: int | None
    mean_gap_error: float
    median_cpu_seconds: float
    median_cpu_to_success: float
    median_evaluations_to_success: float

    @property
    def success_rate(self) -> float:
        """Successes among the scored runs (``n``): the runs ``unscored`` are left out of the denominator."""
        return self.successes / self.n if self.n else math.nan

    @property
    def success_rate_all(self) -> float:
        """Successes among every run of the cell, an unscored run counted as no success."""
        total = self.n + self.unscored
        return self.successes / total if total else math.nan


def _median(values: Iterable[float]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def _mean(values: Iterable[float]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def aggregate(scores: Sequence[RunScore]) -> list[CellScore]:
    """One cell per (problem, backbone, method), in the order of first appearance."""
    cells: dict[tuple[str, str, str], list[RunScore]] = {}
    for s in scores:
        cells.setdefault((s.spec.problem, s.spec.backbone, s.spec.method), []).append(s)
    out = []
    for (problem, backbone, method), runs in cells.items():
        scored = sorted((r for r in runs if r.status == "scored"), key=lambda r: r.spec.seed)
        won = [r for r in scored if r.success]
        out.append(CellScore(
            problem, backbone, method, len(scored), len(won), len(runs) - len(scored),
            _median(r.dft_rank for r in scored), tuple(r.bonds_predicted for r in scored),
            scored[0].bonds_dft_lowest if scored else None, _mean(r.gap_error for r in scored),
            _median(r.cpu_seconds for r in runs if r.status != "failed"), _median(r.cpu_to_success for r in won),
            _median(r.evaluations_to_success for r in won)))
    return out
