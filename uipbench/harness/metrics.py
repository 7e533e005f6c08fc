"""Error metrics: small pure functions of predicted and reference values.

Energies are total energies in eV per structure; per-atom metrics are in meV/atom.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np
from scipy.stats import spearmanr

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


def error_by_s_s_pairs(errors: np.ndarray, n_pairs: np.ndarray) -> dict[int, tuple[float, int]]:
    """Mean signed error per number of S–S pairs: {n_pairs: (mean error, count)}."""
    errors, n_pairs = np.asarray(errors, float), np.asarray(n_pairs, int)
    return {int(k): (float(errors[n_pairs == k].mean()), int(np.sum(n_pairs == k))) for k in np.unique(n_pairs)}
