"""The oxide's thermodynamics: ΔG on a hand-computed case, winner intervals, the Δμ_O range, the reference
scans and the errors for missing, other-protocol and wrong-state references."""
from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from uipbench.oxide.phase import (Interval, Phase, PhaseDiagramError, delta_g, formation_line, lines_for, mu_range,
                                  winners)
from uipbench.oxide.references import (CU2O_LATTICE_ANGSTROM, O2_BONDS_ANGSTROM, ReferenceEnergies, ReferenceError,
                                       check_references, reference_energies, reference_plan, scan_minimum)

REFS = ReferenceEnergies("test", cu_bulk=-3.5, o2=-9.8, cu2o=-12.3)
AREA, CLEAN = 10.0, -100.0
#: ΔG_X = (-4 - 2 Δμ)/10 by hand: -120.8 + 100 + 2·3.5 - 2·(-4.9 + Δμ) = -4 - 2Δμ
X = Phase("X", n_cu=2, n_o=2, energy=-120.8)
#: ΔG_Y = -0.6 - 0.4 Δμ: -139.6 + 100 + 4·3.5 + 4·4.9 = -6
Y = Phase("Y", n_cu=4, n_o=4, energy=-139.6)


def test_delta_g_by_hand():
    assert delta_g(X, CLEAN, REFS, AREA, -1.0) == pytest.approx(-0.2)
    assert delta_g(X, CLEAN, REFS, AREA, -2.0) == pytest.approx(0.0)
    assert delta_g(X, CLEAN, REFS, AREA, 0.0) == pytest.approx(-0.4)
    line = formation_line(Y, CLEAN, REFS, AREA)
    assert (line.intercept, line.slope) == pytest.approx((-0.6, -0.4))
    for mu in (-2.7, -1.3, 0.2):
        assert line.at(mu) == pytest.approx(delta_g(Y, CLEAN, REFS, AREA, mu))


def test_winner_intervals_follow_the_lower_envelope():
    lines = lines_for([X, Y], CLEAN, REFS, AREA)
    got = winners(lines, -3.0, 0.0)
    assert [w.name for w in got] == ["clean", "X", "Y"]
    assert [x for w in got for x in (w.start, w.end)] == pytest.approx([-3.0, -2.0, -2.0, -1.0, -1.0, 0.0])
    # a narrower range sees one crossing only; a phase always above the others never wins
    worse = Phase("Z", n_cu=1, n_o=2, energy=-100.0)
    assert winners(lines_for([X, Y, worse], CLEAN, REFS, AREA), -1.8, -0.5) == [
        Interval("X", -1.8, pytest.approx(-1.0)), Interval("Y", pytest.approx(-1.0), -0.5)]
    with pytest.raises(PhaseDiagramError, match="unique"):
        lines_for([X, X], CLEAN, REFS, AREA)


def test_mu_range_from_cu2o_or_given():
    assert REFS.mu_o_max == pytest.approx(-12.3 + 7.0 + 4.9)
    assert mu_range(REFS) == pytest.approx((-2.5, -0.4))
    assert mu_range(REFS, -2.0, -0.1) == (-2.0, -0.1)
    no_cu2o = ReferenceEnergies("bb", -3.5, -9.8)
    with pytest.raises(PhaseDiagramError, match=r"bb: no Cu2O reference .* \(--mu-max\)"):
        mu_range(no_cu2o)
    assert mu_range(no_cu2o, -3.0, -1.0) == (-3.0, -1.0)
    with pytest.raises(PhaseDiagramError, match="not below"):
        mu_range(REFS, 0.0)


def test_scan_minimum_of_a_parabola_and_an_unbracketed_scan():
    x = np.array(O2_BONDS_ANGSTROM)
    assert scan_minimum(x, 2.0 * (x - 1.23) ** 2 - 9.8, "O2") == pytest.approx((1.23, -9.8))
    with pytest.raises(ReferenceError, match="O2: the lowest energy is at the end of the scan"):
        scan_minimum(x, 2.0 * (x - 1.40) ** 2, "O2")


def _labelled(protocol: str = "gpaw-lcao-dzp-pbe-v1", o2_magmom: float = 2.0, skip: str = "") -> list:
    """The reference plan with made-up DFT energies: Cu -3.7 eV/atom, O2 parabola at 1.23 Å, Cu2O at 4.30 Å."""
    out = []
    for entry in reference_plan():
        if entry.reference == skip:
            continue
        atoms = entry.atoms.copy()
        x = entry.parameter
        energy = {"Cu": -3.7, "O2": None if x is None else 5.0 * (x - 1.23) ** 2 - 9.9,
                  "Cu2O": None if x is None else 2 * (8.0 * (x - 4.30) ** 2 - 12.6)}[entry.reference]
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(atoms), 3)))
        atoms.info["protocol"] = protocol
        if entry.reference == "O2":
            atoms.info["dft_magmom"] = o2_magmom
        out.append(atoms)
    return out


def test_reference_energies_from_the_scans():
    structures = _labelled()
    refs = reference_energies(structures, [a.get_potential_energy() for a in structures], "DFT")
    assert refs.cu_bulk == pytest.approx(-3.7) and refs.o2 == pytest.approx(-9.9)
    assert refs.cu2o == pytest.approx(-12.6)  # per formula unit: the cell holds two
    assert refs.minima == pytest.approx({"O2": 1.23, "Cu2O": 4.30})
    assert refs.mu_o_max == pytest.approx(-12.6 + 7.4 + 4.95)
    assert len(reference_plan()) == 1 + len(O2_BONDS_ANGSTROM) + len(CU2O_LATTICE_ANGSTROM)


@pytest.mark.parametrize("skip, match", [("O2", "no O2 molecule reference"), ("Cu", "no bulk Cu reference")])
def test_a_missing_reference_is_named(skip, match):
    structures = _labelled(skip=skip)
    with pytest.raises(ReferenceError, match=match + r" \(DFT\); run `uipbench oxide references`"):
        reference_energies(structures, [a.get_potential_energy() for a in structures], "DFT")


def test_without_cu2o_the_references_have_no_o_rich_limit():
    structures = _labelled(skip="Cu2O")
    refs = reference_energies(structures, [a.get_potential_energy() for a in structures], "DFT")
    assert refs.cu2o is None and refs.mu_o_max is None


def test_a_reference_of_another_protocol_or_a_singlet_o2_is_refused():
    check_references(_labelled(), "gpaw-lcao-dzp-pbe-v1", "refs")
    with pytest.raises(ReferenceError, match="cu-o-ref-cu-bulk was labelled with protocol 'vasp-pbe'"):
        check_references(_labelled(protocol="vasp-pbe"), "gpaw-lcao-dzp-pbe-v1", "refs")
    with pytest.raises(ReferenceError, match="converged to 0.00 μB, not the triplet"):
        check_references(_labelled(o2_magmom=0.0), "gpaw-lcao-dzp-pbe-v1", "refs")
