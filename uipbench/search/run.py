"""A search run into a folder: checks, resume, the search, distinct minima, outputs and timing."""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._lock import OutputLock
from .checks import check_inputs
from .engine import Evaluation, SearchSettings, search
from .minima import Minimum, distinct_minima
from .output import plot_best_minima, plot_best_vs_evaluations, write_minima
from .problem import SearchProblem
from .store import SearchFolder, delta_sha256, identity


@dataclass
class SearchSummary:
    out: Path
    evaluations: list[Evaluation]
    minima: list[Minimum]
    resumed: int  # evaluations read back instead of relaxed

    @property
    def best(self) -> Minimum:
        return self.minima[0]


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "min": min(values),
            "max": max(values), "total": sum(values)}


def timing(evaluations: list[Evaluation], new: list[Evaluation], wall_seconds: float) -> dict[str, Any]:
    """CPU seconds and steps per relaxation over all evaluations, and this run's wall time."""
    return {"cpu_seconds_per_relaxation": _spread([e.cpu_seconds for e in evaluations]),
            "wall_seconds_per_relaxation": _spread([e.wall_seconds for e in evaluations]),
            "steps_per_relaxation": _spread([float(e.steps) for e in evaluations]),
            "converged": sum(e.converged for e in evaluations), "relaxed_this_run": len(new),
            "wall_seconds_this_run": wall_seconds}


def _versions(backbone: Any) -> dict[str, str]:
    from importlib import metadata

    versions = {p: metadata.version(p) for p in ("ase", "ase-ga", "numpy")}
    return {**versions, **getattr(backbone.metadata(), "versions", {})}


def _figures(out: Path, problem: SearchProblem, backbone: str, corrected: bool, settings: SearchSettings,
             evaluations: list[Evaluation], minima: list[Minimum], n_slab: int) -> None:
    title = f"{problem.name}, {backbone}{' + Δ' if corrected else ''}, {settings.algorithm}, seed {settings.seed}"
    plot_best_vs_evaluations(out / "best_vs_evaluations.png", evaluations, title)
    plot_best_minima(out / "best_minima.png", minima, n_slab, title)


def search_to_folder(problem: SearchProblem, backbone: Any, delta: Any = None, *, budget: int,
                     settings: SearchSettings = SearchSettings(), out: str | Path,
                     progress: bool = True, figures: bool = True) -> SearchSummary:
    """Run (or resume) a search whose every finished relaxation is kept in ``out``; ``figures=False``
    skips the two pictures (a loop that runs many searches may want only the minima)."""
    start = time.perf_counter()
    if budget < 1:
        raise ValueError(f"budget must be at least 1 evaluation, got {budget}")
    template = check_inputs(problem, backbone, delta)
    with OutputLock(out, command=" ".join(sys.argv)):  # one run per folder; a dead owner's lock is taken over
        meta = backbone.metadata()
        card = {k: v for k, v in problem.to_dict().items() if k != "description"}  # prose may change, the search not
        folder = SearchFolder(out, identity(card, meta.backbone, meta.weights_sha256, delta_sha256(delta),
                                            settings.to_dict()))
        done = folder.load()
        folder.start(budget)
        evaluations = search(problem, backbone, delta, budget=budget, settings=settings, done=done,
                             on_evaluation=folder.write, progress=progress)
        new = [e for e in evaluations if e.index not in done]
        n_slab = len(template)
        minima = distinct_minima([(e.index, e.atoms, e.energy, e.energy_std) for e in evaluations], n_slab)
        provenance = {"problem": problem.name, "backbone": meta.backbone, "weights_sha256": meta.weights_sha256,
                      "delta_sha256": folder.identity["delta_sha256"], "algorithm": settings.algorithm,
                      "seed": settings.seed}
        write_minima(folder.path, minima, n_slab, provenance)
        if figures:
            _figures(folder.path, problem, meta.backbone, delta is not None, settings, evaluations, minima, n_slab)
        folder.write_summary({
            "budget": budget, "status": "finished", "evaluations": len(evaluations), "distinct_minima": len(minima),
            "best_energy": minima[0].energy, "best_evaluation": minima[0].evaluation,
            "timing": timing(evaluations, new, time.perf_counter() - start), "versions": _versions(backbone),
        })
        return SearchSummary(folder.path, evaluations, minima, len(evaluations) - len(new))
