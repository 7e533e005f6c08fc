"""Deduplication: the similarity rule merges one minimum seen twice and keeps different ones apart."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate

from uipbench.search import E_TOL, F_TOL, distinct_minima, fingerprint, fingerprint_distance, load_problem
from uipbench.search.minima import adsorbate_bonds


def _slab_with(sites: list[tuple[str, tuple[float, float]]], height: float = 1.7) -> Atoms:
    """S on Cu(111) 3x3 at (site, offset in surface-cell units) above the protocol template."""
    slab = load_problem("cu-s3-3x3").template()
    slab.info["adsorbate_info"] = {"cell": slab.cell.array[:2, :2] / 3,
                                   "sites": {"fcc": (1 / 3, 1 / 3), "hcp": (2 / 3, 2 / 3)},
                                   "top": slab.positions[:, 2].max()}
    for site, offset in sites:
        add_adsorbate(slab, "S", height, site, offset=offset)
    return slab


N_SLAB = 27
DISPERSED = [("fcc", (0, 0)), ("fcc", (1, 1)), ("fcc", (2, 2))]


def test_same_minimum_permuted_translated_and_jittered_is_merged():
    a = _slab_with(DISPERSED)
    b = a.copy()
    order = list(range(N_SLAB)) + [N_SLAB + 2, N_SLAB, N_SLAB + 1]  # adsorbates in another order
    b = b[order]
    b.positions += b.cell[0] + b.cell[1]  # a lattice translation
    b.positions += np.random.default_rng(0).uniform(-0.01, 0.01, size=b.positions.shape)
    assert fingerprint_distance(fingerprint(a, N_SLAB), fingerprint(b, N_SLAB)) < 0.04  # <= 2 x largest shift
    minima = distinct_minima([(0, a, -10.000, None), (1, b, -10.005, None)], N_SLAB)
    assert len(minima) == 1
    assert minima[0].evaluation == 1 and minima[0].hits == [1, 0] and minima[0].energy == -10.005


def test_fcc_and_hcp_hollows_are_different_minima_even_at_equal_energy():
    fcc = _slab_with([("fcc", (0, 0))])
    hcp = _slab_with([("hcp", (0, 0))])
    distance = fingerprint_distance(fingerprint(fcc, N_SLAB), fingerprint(hcp, N_SLAB))
    assert distance > 2 * F_TOL
    assert len(distinct_minima([(0, fcc, -5.0, None), (1, hcp, -5.0, None)], N_SLAB)) == 2


def test_same_geometry_at_another_energy_is_another_minimum():
    a = _slab_with(DISPERSED)
    minima = distinct_minima([(0, a, -10.0, None), (1, a.copy(), -10.0 + 2 * E_TOL, None)], N_SLAB)
    assert [m.evaluation for m in minima] == [0, 1]


def test_dimer_against_dispersed_and_bond_count():
    dispersed = _slab_with(DISPERSED)
    dimer = _slab_with(DISPERSED[:1])
    p = dimer.positions[-1] + [2.05, 0.0, 0.0]
    dimer += Atoms("S", positions=[p])
    dimer += Atoms("S", positions=[dispersed.positions[-1]])
    assert adsorbate_bonds(dimer, N_SLAB) == 1 and adsorbate_bonds(dispersed, N_SLAB) == 0
    minima = distinct_minima([(3, dimer, -9.99, 0.02), (1, dispersed, -10.0, 0.01), (2, dispersed.copy(), -9.995,
                                                                                     0.01)], N_SLAB)
    assert [(m.evaluation, m.hits, m.energy_std) for m in minima] == [(1, [1, 2], 0.01), (3, [3], 0.02)]


def test_different_composition_never_matches():
    a = _slab_with(DISPERSED)
    b = a.copy()
    b.symbols[-1] = "O"
    assert fingerprint_distance(fingerprint(a, N_SLAB), fingerprint(b, N_SLAB)) == float("inf")
    assert len(distinct_minima([(0, a, -1.0, None), (1, b, -1.0, None)], N_SLAB)) == 2


@pytest.mark.parametrize("shift", [0.02, 0.05, 0.2])
def test_fingerprint_distance_is_at_most_twice_the_largest_displacement(shift):
    a = _slab_with(DISPERSED)
    b = a.copy()
    rng = np.random.default_rng(1)
    step = rng.normal(size=(len(b), 3))
    step *= shift / np.linalg.norm(step, axis=1, keepdims=True)
    b.positions += step
    assert fingerprint_distance(fingerprint(a, N_SLAB), fingerprint(b, N_SLAB)) <= 2 * shift + 1e-12
