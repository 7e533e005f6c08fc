"""Error metrics: small pure functions of predicted and reference values, and the one registry of
every metric a sweep scores (name, unit, label, direction, the function that scores it).

Energies are total energies in eV per structure; per-atom metrics are in meV/atom.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Hashable, Iterator, Sequence

import numpy as np

S_S_BOND = 2.4  # Å: S–S pairs closer than this count as bonded (S–S motif)


def energy_errors_per_atom_mev(predicted: np.ndarray, reference: np.ndarray, n_atoms: np.ndarray) -> np.ndarray:
    """Signed errors (predicted − reference) in meV/atom."""
    predicted, reference, n_atoms = (np.asarray(x, dtype=float) for x in (predicted, reference, n_atoms))
    if not (predicted.shape == reference.shape == n_atoms.shape):
        raise ValueError(f"shape mismatch: predicted {predicted.shape}, reference {reference.shape}, "
                         f"n_atoms {n_atoms.shape}")
    if predicted.size == 0:
        raise ValueError("no structures to score")
    return 1000.0 * (predicted - reference) / n_atoms


def mae(errors: np.ndarray) -> float:
    return float(np.mean(np.abs(errors)))


def rmse(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(errors))))


def group_indices(groups: Sequence[Hashable], min_size: int = 2) -> list[np.ndarray]:
    """Indices of each group with at least ``min_size`` members, in order of first appearance."""
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    return [np.array(v) for v in members.values() if len(v) >= min_size]


def relative_energy_mae_mev(predicted: np.ndarray, reference: np.ndarray, groups: Sequence[Hashable]) -> float:
    """MAE (meV per structure) of energies relative to the DFT-lowest structure of each composition group.

    Within a group every structure has the same atoms, so a constant shift of a model
    cancels; what remains is how well it orders arrangements.  NaN without groups of 2+.
    """
    predicted, reference = np.asarray(predicted, float), np.asarray(reference, float)
    errors = []
    for idx in group_indices(groups):
        lowest = idx[np.argmin(reference[idx])]
        rel_pred = predicted[idx] - predicted[lowest]
        rel_ref = reference[idx] - reference[lowest]
        errors.extend(np.abs(rel_pred - rel_ref)[idx != lowest])
    return 1000.0 * float(np.mean(errors)) if errors else float("nan")


def ranking_quality(predicted: np.ndarray, reference: np.ndarray, groups: Sequence[Hashable],
                    min_size: int = 3) -> tuple[float, float]:
    """(mean Spearman correlation within groups, fraction of groups whose lowest structure is found).

    Only groups of at least ``min_size`` structures count; NaN when there are none.
    """
    from scipy.stats import spearmanr

    predicted, reference = np.asarray(predicted, float), np.asarray(reference, float)
    rhos, hits = [], []
    for idx in group_indices(groups, min_size):
        rho = spearmanr(predicted[idx], reference[idx]).statistic
        rhos.append(0.0 if np.isnan(rho) else float(rho))
        hits.append(float(np.argmin(predicted[idx]) == np.argmin(reference[idx])))
    if not rhos:
        return float("nan"), float("nan")
    return float(np.mean(rhos)), float(np.mean(hits))


def force_mae(predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """Mean absolute force-component error (eV/Å) over all atoms of all structures."""
    if len(predicted) != len(reference) or not predicted:
        raise ValueError("need the same, non-zero number of predicted and reference force arrays")
    diffs = [np.abs(np.asarray(p) - np.asarray(r)).ravel() for p, r in zip(predicted, reference)]
    return float(np.mean(np.concatenate(diffs)))


def count_s_s_pairs(numbers: np.ndarray, distances: np.ndarray, bond: float = S_S_BOND) -> int:
    """Number of S–S pairs closer than ``bond`` (minimum-image distance matrix given)."""
    s = np.asarray(numbers) == 16
    d = np.asarray(distances)[np.ix_(s, s)]
    return int(np.sum(np.triu(d < bond, k=1)))


# ---------------------------------------------------------------------------------------------
# the registry: every metric a sweep scores, with its unit, label and direction


@dataclass(frozen=True)
class ScoredSplit:
    """What one fitted cell predicts on its held-out structures, and what it is scored against.

    Energies are total energies in eV per structure; ``groups`` are the composition groups;
    forces (eV/Å, one array per structure) are given where the model predicts them.
    """

    model: str  # "raw" or "delta"
    predicted: np.ndarray
    reference: np.ndarray
    n_atoms: np.ndarray
    groups: Sequence[Hashable]
    forces_predicted: Sequence[np.ndarray] | None = None
    forces_reference: Sequence[np.ndarray] | None = None
    log_marginal_likelihood: float | None = None  # of a Δ fit, training data only

    @cached_property
    def errors(self) -> np.ndarray:
        """Signed energy errors in meV/atom."""
        return energy_errors_per_atom_mev(self.predicted, self.reference, self.n_atoms)

    @cached_property
    def ranking(self) -> tuple[float, float]:
        return ranking_quality(self.predicted, self.reference, self.groups)

    @property
    def has_forces(self) -> bool:
        return self.forces_predicted is not None and self.forces_reference is not None


@dataclass(frozen=True)
class Metric:
    """One metric of a sweep: ``score(split)`` gives its value for a :class:`ScoredSplit`.

    ``models``: the models it applies to; ``needs_forces``: scored only where forces are present;
    ``score`` None: a marker row the sweep writes itself (``fit_error``), never scored.
    ``lower_is_better`` None: the metric has no direction (a count, an evidence).
    """

    name: str
    unit: str
    label: str
    lower_is_better: bool | None
    score: Callable[[ScoredSplit], float] | None = None
    models: tuple[str, ...] = ("raw", "delta")
    needs_forces: bool = False

    def applies(self, model: str, has_forces: bool) -> bool:
        return self.score is not None and model in self.models and (has_forces or not self.needs_forces)

    @property
    def axis_label(self) -> str:
        """The label with its unit, e.g. ``energy MAE (meV/atom)``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label


_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` to the registry (its name must be new)."""
    if metric.name in _REGISTRY:
        raise ValueError(f"metric {metric.name!r} is registered already")
    _REGISTRY[metric.name] = metric
    return metric


@contextmanager
def registered(metric: Metric) -> Iterator[Metric]:
    """``metric`` in the registry for the duration of a ``with`` block (tests, experiments)."""
    register(metric)
    try:
        yield metric
    finally:
        _REGISTRY.pop(metric.name, None)


def get_metric(name: str) -> Metric:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(_REGISTRY)}") from None


def metrics() -> tuple[Metric, ...]:
    """Every registered metric, in the order a sweep writes them."""
    return tuple(_REGISTRY.values())


def expected_metrics(model: str, has_forces: bool) -> frozenset[str]:
    """Names of the metrics a complete, successfully fitted cell of ``model`` holds."""
    return frozenset(m.name for m in metrics() if m.applies(model, has_forces))


def score_split(split: ScoredSplit, among: Sequence[Metric] | None = None) -> dict[str, float]:
    """Every metric (of ``among``, default the registry) that applies to ``split``, by name, in order."""
    return {m.name: float(m.score(split)) for m in (metrics() if among is None else among)
            if m.applies(split.model, split.has_forces)}


# scorers are module-level functions, so a task carrying its metrics pickles to any executor's workers
def _mae(s: ScoredSplit) -> float:
    return mae(s.errors)


def _rmse(s: ScoredSplit) -> float:
    return rmse(s.errors)


def _relative(s: ScoredSplit) -> float:
    return relative_energy_mae_mev(s.predicted, s.reference, s.groups)


def _spearman(s: ScoredSplit) -> float:
    return s.ranking[0]


def _lowest(s: ScoredSplit) -> float:
    return s.ranking[1]


def _n_test(s: ScoredSplit) -> float:
    return float(len(s.predicted))


def _forces(s: ScoredSplit) -> float:
    return force_mae(s.forces_predicted, s.forces_reference)


def _lml(s: ScoredSplit) -> float:
    return float("nan") if s.log_marginal_likelihood is None else float(s.log_marginal_likelihood)


MAE = register(Metric("energy_mae_mev_per_atom", "meV/atom", "energy MAE", True, _mae)).name
RMSE = register(Metric("energy_rmse_mev_per_atom", "meV/atom", "energy RMSE", True, _rmse)).name
RELATIVE_MAE = register(Metric("relative_energy_mae_mev", "meV/structure", "relative-energy MAE", True,
                               _relative)).name
SPEARMAN = register(Metric("spearman_within_composition", "", "Spearman ρ within compositions", False,
                           _spearman)).name
LOWEST_FOUND = register(Metric("lowest_found_fraction", "", "lowest structure found (fraction of groups)", False,
                               _lowest)).name
N_TEST = register(Metric("n_test", "structures", "held-out structures", None, _n_test)).name
FORCE_MAE = register(Metric("force_mae_ev_per_angstrom", "eV/Å", "force MAE", True, _forces, models=("raw",),
                            needs_forces=True)).name
#: a Δ fit's log marginal likelihood (nats, training data only): lets a report choose an aggregation
#: without looking at the test set
LML = register(Metric("log_marginal_likelihood", "nats", "log marginal likelihood", None, _lml,
                      models=("delta",))).name
#: the marker row of a cell that could not be fitted (value NaN, the reason in its note)
FIT_ERROR = register(Metric("fit_error", "", "fit error", None)).name
