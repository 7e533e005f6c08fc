"""Ab initio thermodynamics of a surface oxide: ΔG(Δμ_O) per composition and the winner per Δμ_O interval.

For an overlayer Cu_nO_m on the slab (Soon et al., PRB 73, 165424 (2006); Reuter and Scheffler's
scheme), against the clean slab, Cu atoms from bulk Cu and O atoms from O2 at chemical potential
μ_O = ½E(O2) + Δμ_O::

    ΔG(Δμ_O) = [E_slab − E_clean − ΔN_Cu · E_Cu(bulk) − N_O (½ E(O2) + Δμ_O)] / A

(eV/Å²; vibrational and configurational free energies left out, as usual).  ΔG is a straight line in
Δμ_O of slope −N_O/A; the clean slab is ΔG = 0.  The stable phase at a Δμ_O is the lowest line, and
the phase diagram is the lower envelope over a range: from an O-poor end (a choice, e.g. −2.5 eV) up
to where bulk Cu2O forms, Δμ_O = E(Cu2O) − 2 E_Cu(bulk) − ½ E(O2) (or a value given instead).
Everything here is a pure function of its arguments.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .references import ReferenceEnergies

CLEAN = "clean"
#: the default O-poor end of Δμ_O (eV)
MU_O_MIN = -2.5


class PhaseDiagramError(ValueError):
    """A phase diagram cannot be drawn from these inputs (range, phases)."""


@dataclass(frozen=True)
class Phase:
    """One composition's best structure: its name, ΔN_Cu and N_O against the clean slab, and energy (eV)."""

    name: str
    n_cu: int  # Cu atoms beyond the clean slab's
    n_o: int
    energy: float


@dataclass(frozen=True)
class Line:
    """ΔG(Δμ_O) = intercept + slope · Δμ_O (eV/Å², slope in 1/Å²) of one phase."""

    name: str
    n_cu: int
    n_o: int
    intercept: float
    slope: float

    def at(self, mu: float) -> float:
        return self.intercept + self.slope * mu


@dataclass(frozen=True)
class Interval:
    """Where one phase is the lowest: ``start`` ≤ Δμ_O ≤ ``end`` (eV)."""

    name: str
    start: float
    end: float


def delta_g(phase: Phase, clean_energy: float, refs: ReferenceEnergies, area: float, mu: float) -> float:
    """ΔG (eV/Å²) of ``phase`` at Δμ_O = ``mu``: the formula of the module docstring, term by term."""
    return (phase.energy - clean_energy - phase.n_cu * refs.cu_bulk - phase.n_o * (0.5 * refs.o2 + mu)) / area


def formation_line(phase: Phase, clean_energy: float, refs: ReferenceEnergies, area: float) -> Line:
    """The straight line ΔG(Δμ_O) of ``phase``."""
    if area <= 0:
        raise PhaseDiagramError(f"the cell area must be positive, got {area}")
    return Line(phase.name, phase.n_cu, phase.n_o, delta_g(phase, clean_energy, refs, area, 0.0),
                -phase.n_o / area)


def clean_line() -> Line:
    return Line(CLEAN, 0, 0, 0.0, 0.0)


def lines_for(phases: Sequence[Phase], clean_energy: float, refs: ReferenceEnergies, area: float) -> list[Line]:
    """The clean slab's line and every phase's; two phases of one name are an error."""
    names = [p.name for p in phases]
    if len(set(names)) != len(names) or CLEAN in names:
        raise PhaseDiagramError(f"phase names must be unique and not {CLEAN!r}: {names}")
    return [clean_line(), *(formation_line(p, clean_energy, refs, area) for p in phases)]


def mu_range(refs: ReferenceEnergies, mu_min: float = MU_O_MIN, mu_max: float | None = None) -> tuple[float, float]:
    """``(lowest, highest)`` Δμ_O: ``mu_min`` up to ``mu_max`` if given, else the Cu2O limit of ``refs``."""
    upper = mu_max if mu_max is not None else refs.mu_o_max
    if upper is None:
        raise PhaseDiagramError(f"{refs.method}: no Cu2O reference for the O-rich end of Δμ_O; label it "
                                f"(`uipbench oxide references`) or give the upper end (--mu-max)")
    if not mu_min < upper:
        raise PhaseDiagramError(f"{refs.method}: the O-poor end {mu_min:.3f} eV is not below the O-rich end "
                                f"{upper:.3f} eV")
    return float(mu_min), float(upper)


def lowest(lines: Sequence[Line], mu: float) -> Line:
    """The lowest line at ``mu``; ties go to the line listed first (the clean slab first)."""
    return min(lines, key=lambda line: line.at(mu))


def winners(lines: Sequence[Line], mu_min: float, mu_max: float) -> list[Interval]:
    """The lower envelope of ``lines`` on [mu_min, mu_max]: consecutive intervals, one per winning phase."""
    if not mu_min < mu_max:
        raise PhaseDiagramError(f"empty Δμ_O range [{mu_min}, {mu_max}]")
    cuts = {mu_min, mu_max}
    for i, a in enumerate(lines):
        for b in lines[i + 1:]:
            if a.slope != b.slope:
                mu = (b.intercept - a.intercept) / (a.slope - b.slope)
                if mu_min < mu < mu_max:
                    cuts.add(mu)
    points = sorted(cuts)
    out: list[Interval] = []
    for start, end in zip(points, points[1:]):
        name = lowest(lines, 0.5 * (start + end)).name
        if out and out[-1].name == name:
            out[-1] = Interval(name, out[-1].start, end)
        else:
            out.append(Interval(name, start, end))
    return out
