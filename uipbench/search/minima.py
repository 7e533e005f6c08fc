"""Distinct minima: the similarity rule that decides when two relaxed candidates are one minimum.

Two relaxed structures are the same minimum when all three hold:

* the same composition (chemical formula);
* ``|E1 − E2| < E_TOL`` (0.02 eV, ase-ga's ``EnergyComparator`` default);
* ``fingerprint_distance < F_TOL`` (0.10 Å).

The fingerprint is a set of sorted distance lists (minimum image, in Å): for each pair of
adsorbate elements, every adsorbate–adsorbate distance; for each adsorbate element, the
distances from each adsorbate to its ``N_NEIGHBOURS`` (8) nearest slab atoms, pooled.  Sorting
makes it blind to atom order and to translations by lattice vectors, and the distance between
two fingerprints is the largest difference between matching entries, so it is at most twice the
largest displacement between the structures.  Eight slab neighbours reach past the three
first-layer atoms of a hollow site to the atom below it, so fcc and hcp hollows differ (by about
0.3 Å on Cu(111)), while the scatter of one minimum relaxed to fmax 0.05 eV/Å stays well
below 0.1 Å.

Minima are built greedily in order of energy (ties: evaluation index): each structure joins the
first kept minimum it matches, otherwise it starts a new one; a minimum is represented by its
lowest structure and counts every evaluation that found it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

E_TOL = 0.02  # eV
F_TOL = 0.10  # Å
N_NEIGHBOURS = 8
#: adsorbate–adsorbate distance (Å) below which two adsorbates count as bonded (the generator's S–S rule)
BONDED = 2.4


def fingerprint(atoms: Atoms, n_slab: int) -> dict[str, np.ndarray]:
    """Sorted distance lists of the adsorbates (atoms ``n_slab:``), keyed by what they measure."""
    d = atoms.get_all_distances(mic=True)
    symbols = atoms.get_chemical_symbols()
    lists: dict[str, list[float]] = {}
    adsorbates = range(n_slab, len(atoms))
    for i in adsorbates:
        for j in range(i + 1, len(atoms)):
            lists.setdefault("-".join(sorted((symbols[i], symbols[j]))), []).append(d[i, j])
        nearest = np.sort(d[i, :n_slab])[:N_NEIGHBOURS]
        lists.setdefault(f"{symbols[i]}-slab", []).extend(nearest.tolist())
    return {key: np.sort(np.asarray(values)) for key, values in lists.items()}


def fingerprint_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest difference (Å) between matching entries; infinite when the lists do not match."""
    if a.keys() != b.keys() or any(len(a[k]) != len(b[k]) for k in a):
        return float("inf")
    return max((float(np.abs(a[k] - b[k]).max()) for k in a if len(a[k])), default=0.0)


def adsorbate_bonds(atoms: Atoms, n_slab: int, bonded: float = BONDED) -> int:
    """Adsorbate–adsorbate pairs closer than ``bonded`` (Å): S–S bonds for S overlayers."""
    if len(atoms) - n_slab < 2:
        return 0
    d = atoms[n_slab:].get_all_distances(mic=True)
    return int(np.triu(d < bonded, 1).sum())


@dataclass
class Minimum:
    """One distinct minimum: its lowest structure, and every evaluation that found it."""

    atoms: Atoms
    energy: float
    energy_std: float | None
    evaluation: int  # index of the evaluation that found the lowest structure
    hits: list[int] = field(default_factory=list)
    fingerprint: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def same_geometry(formula_a: str, fp_a: dict[str, np.ndarray], formula_b: str, fp_b: dict[str, np.ndarray],
                  f_tol: float = F_TOL) -> bool:
    """The geometric half of the rule: the same composition and fingerprints within ``f_tol``."""
    return formula_a == formula_b and fingerprint_distance(fp_a, fp_b) < f_tol


def same_minimum(formula_a: str, energy_a: float, fp_a: dict[str, np.ndarray], formula_b: str,
                 energy_b: float, fp_b: dict[str, np.ndarray], e_tol: float = E_TOL, f_tol: float = F_TOL) -> bool:
    """The similarity rule of this module."""
    return abs(energy_a - energy_b) < e_tol and same_geometry(formula_a, fp_a, formula_b, fp_b, f_tol)


def distinct_minima(structures: list[tuple[int, Atoms, float, float | None]], n_slab: int,
                    e_tol: float = E_TOL, f_tol: float = F_TOL) -> list[Minimum]:
    """Distinct minima of ``(evaluation index, relaxed atoms, energy, σ)`` entries, lowest first."""
    minima: list[Minimum] = []
    for index, atoms, energy, std in sorted(structures, key=lambda s: (s[2], s[0])):
        fp = fingerprint(atoms, n_slab)
        formula = atoms.get_chemical_formula()
        for minimum in minima:
            if same_minimum(formula, energy, fp, minimum.atoms.get_chemical_formula(), minimum.energy,
                            minimum.fingerprint, e_tol, f_tol):
                minimum.hits.append(index)
                break
        else:
            minima.append(Minimum(atoms, energy, std, index, [index], fp))
    return minima
