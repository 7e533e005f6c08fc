"""The search itself: a pure function of (problem, backbone, Δ-model or none, algorithm, budget, seed).

* ``random`` – random structure search: each evaluation relaxes a fresh constrained random
  candidate and keeps the result.
* ``basin`` – basin hopping: evaluation 0 relaxes a random candidate; every later one displaces
  the adsorbates of the current minimum (each by a random vector in a ball of radius ``step``,
  constraints respected; a fresh random start when no valid move is found), relaxes, and accepts
  the result as the new current minimum with the Metropolis rule at ``kT``
  (always when lower, else with probability exp(−ΔE/kT)).

Evaluation ``i`` draws from its own random streams, seeded by ``(seed, i, stream)``, so it does
not depend on how many random numbers earlier evaluations used.  ``done`` hands in finished
evaluations (e.g. read back after a kill): they are not relaxed again, and the basin-hopping
walk is rebuilt from their ``accepted`` flags, so a resumed search gives the same evaluations
as an uninterrupted one.  ``on_evaluation`` receives each new evaluation as soon as it is
finished; only the caller writes files.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping

import numpy as np
from ase import Atoms

from .candidates import CandidateGenerator
from .checks import check_inputs
from .problem import SearchProblem
from .relax import RelaxSettings, relax

from .defaults import ALGORITHMS, BASIN_KT, BASIN_STEP  # noqa: F401  (re-exported)

#: random streams of one evaluation
_PROPOSE, _ACCEPT = 0, 1


@dataclass(frozen=True)
class SearchSettings:
    """Everything besides the inputs and the budget that decides a search's evaluations."""

    algorithm: str = "random"
    seed: int = 0
    relax: RelaxSettings = RelaxSettings()
    kT: float = BASIN_KT
    step: float = BASIN_STEP

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown search algorithm {self.algorithm!r}; known: {', '.join(ALGORITHMS)}")
        if not (self.kT > 0 and self.step > 0):
            raise ValueError(f"kT and step must be positive, got kT={self.kT}, step={self.step}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Evaluation:
    """One relaxed candidate of a search."""

    index: int
    atoms: Atoms  # relaxed
    energy: float
    energy_std: float | None
    steps: int
    converged: bool
    max_force: float
    cpu_seconds: float
    wall_seconds: float
    move: str  # "random" (a fresh start), "perturb" (a basin-hopping move) or "restart"
    parent: int | None  # basin hopping: the evaluation whose minimum was perturbed
    accepted: bool  # basin hopping: became the current minimum; random search: always


def rng_for(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def make_calculator(backbone: Any, delta: Any = None) -> Any:
    """The backbone's own ASE calculator, or the backbone corrected by ``delta``."""
    if delta is None:
        return backbone.calculator()
    from ..delta.calculator import DeltaCalculator

    return DeltaCalculator(backbone, delta)


def _propose(generator: CandidateGenerator, settings: SearchSettings, index: int,
             current: Evaluation | None) -> tuple[Atoms, str, int | None]:
    rng = rng_for(settings.seed, index, _PROPOSE)
    if settings.algorithm == "random" or current is None:
        return generator.random(rng), "random", None
    moved = generator.perturb(current.atoms, rng, settings.step)
    if moved is None:
        return generator.random(rng), "restart", current.index
    return moved, "perturb", current.index


def _accept(settings: SearchSettings, index: int, energy: float, current: Evaluation | None) -> bool:
    if settings.algorithm == "random" or current is None or energy <= current.energy:
        return True
    u = rng_for(settings.seed, index, _ACCEPT).random()
    return bool(u < math.exp(-(energy - current.energy) / settings.kT))


def evaluate(generator: CandidateGenerator, calculator: Any, settings: SearchSettings, index: int,
             current: Evaluation | None) -> Evaluation:
    """Evaluation ``index``: propose a candidate, relax it, decide whether the walk moves there."""
    candidate, move, parent = _propose(generator, settings, index, current)
    result = relax(candidate, calculator, settings.relax)
    result.atoms.info.update(problem=generator.problem.name, evaluation=index)
    return Evaluation(index, result.atoms, result.energy, result.energy_std, result.steps, result.converged,
                      result.max_force, result.cpu_seconds, result.wall_seconds, move, parent,
                      _accept(settings, index, result.energy, current))


def search(problem: SearchProblem, backbone: Any, delta: Any = None, *, budget: int,
           settings: SearchSettings = SearchSettings(), done: Mapping[int, Evaluation] | None = None,
           on_evaluation: Callable[[Evaluation], None] | None = None, progress: bool = False) -> list[Evaluation]:
    """Evaluations ``0 .. budget-1`` of a search (bad input refused before any relaxation)."""
    from tqdm.auto import tqdm

    if budget < 1:
        raise ValueError(f"budget must be at least 1 evaluation, got {budget}")
    template = check_inputs(problem, backbone, delta)
    generator = CandidateGenerator(problem, template)
    done = dict(done or {})
    calculator = None  # built on the first evaluation that needs it
    out: list[Evaluation] = []
    current: Evaluation | None = None
    bar = tqdm(range(budget), desc=f"search {problem.name}", unit="relaxation", disable=not progress, leave=False)
    for index in bar:
        record = done.get(index)
        if record is None:
            if calculator is None:
                calculator = make_calculator(backbone, delta)
            record = evaluate(generator, calculator, settings, index, current)
            if on_evaluation is not None:
                on_evaluation(record)
        out.append(record)
        if record.accepted:
            current = record
        bar.set_postfix(best=f"{min(r.energy for r in out):.3f} eV")
    return out
