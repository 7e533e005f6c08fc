"""The per-species energy offset every Δ-model starts from (and the "raw" error is measured after).

Pure functions: a least-squares energy per species fitted on residuals E_DFT − E_UIP, plus the
mean of what is left.  The offset absorbs the different reference energies of DFT codes and
backbones; what remains is the backbone's error that a Δ-model has to learn.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def species_count_matrix(numbers: Sequence[np.ndarray], species: np.ndarray) -> np.ndarray:
    """[n_structures, n_species] atoms of each species in each structure (``species`` sorted)."""
    counts = np.zeros((len(numbers), len(species)))
    for row, z in enumerate(numbers):
        values, n = np.unique(np.asarray(z), return_counts=True)
        unknown = np.setdiff1d(values, species)
        if len(unknown):
            raise ValueError(f"structure {row} has species {unknown.tolist()} that the offset was not fitted on "
                             f"(known: {np.asarray(species).tolist()})")
        counts[row, np.searchsorted(species, values)] = n
    return counts


def fit_species_offset(counts: np.ndarray, y: np.ndarray, offset: bool = True,
                       prior_mean: str = "mean") -> tuple[np.ndarray, float]:
    """(energy per species in eV, constant prior mean in eV) fitted on residuals ``y``.

    ``offset=False`` gives zero per-species energies; ``prior_mean="zero"`` a zero constant.
    """
    n, n_species = counts.shape
    if offset and n < n_species:
        raise ValueError(f"the per-species offset needs at least as many training structures as species: "
                         f"got {n} structures for {n_species} species; add structures or set offset=False")
    coef = np.linalg.lstsq(counts, y, rcond=None)[0] if offset else np.zeros(n_species)
    constant = float(np.mean(y - counts @ coef)) if prior_mean == "mean" else 0.0
    return coef, constant


def offset_prediction(train_numbers: Sequence[np.ndarray], y_train: np.ndarray,
                      test_numbers: Sequence[np.ndarray], offset: bool = True,
                      prior_mean: str = "mean") -> np.ndarray:
    """Residual predicted for each test structure by the per-species offset alone (eV)."""
    species = np.unique(np.concatenate([np.asarray(z) for z in train_numbers]))
    coef, constant = fit_species_offset(species_count_matrix(train_numbers, species),
                                        np.asarray(y_train, float), offset, prior_mean)
    return species_count_matrix(test_numbers, species) @ coef + constant
