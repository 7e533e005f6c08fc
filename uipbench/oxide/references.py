"""The references of the oxide's thermodynamics: bulk Cu, the O2 molecule and bulk Cu2O.

Each is a set of structures labelled once under the reference protocol and shipped in
``datasets/cu-o/references.extxyz`` (``uipbench oxide references``):

* **bulk Cu** – the fcc primitive cell at the protocol's lattice constant (3.632 Å, the one every Cu slab
  is built at), one structure; E_Cu(bulk) is its energy per atom.  It is not relaxed on purpose: the slab's
  in-plane cell is fixed at that lattice constant, so the Cu atoms an overlayer takes come from a bulk at
  the same strain;
* **O2** – the molecule in a 12 Å box, no periodicity, spin-polarised with 1 μB per O to start
  (the triplet: see :mod:`uipbench.datasets.protocol`), at seven bond lengths 1.15–1.33 Å; E(O2) is the
  minimum of the parabola through the lowest point and its two neighbours (the scan brackets PBE's bond,
  literature about 1.22–1.23 Å against 1.21 Å in experiment);
* **Cu2O** – cuprite (Pn-3m, two formula units: O at (0,0,0) and (½,½,½), Cu at (¼,¼,¼), (¾,¾,¼),
  (¾,¼,¾), (¼,¾,¾)) at seven lattice constants 4.16–4.46 Å (experiment, literature: 4.27 Å), its
  minimum likewise; E(Cu2O) per formula unit sets the O-rich end of the phase diagram,
  Δμ_O ≤ E(Cu2O) − 2 E_Cu(bulk) − ½ E(O2), where bulk Cu2O forms.

A backbone's references are its own energies of the same structures, minimised the same way, so each
method's phase diagram is made of its own energies only.  A scan whose lowest point lies at an end does
not bracket the minimum: a clear error (:class:`ReferenceError`), as are a missing reference, a reference
of another protocol than the slabs', and a DFT O2 that did not converge to the triplet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from ase import Atoms

from ..datasets.protocol import KIND_KEY, LATTICE_CONSTANTS

SYSTEM = "cu-o"
O2_BOX_ANGSTROM = 12.0
O2_BONDS_ANGSTROM: tuple[float, ...] = (1.15, 1.18, 1.21, 1.24, 1.27, 1.30, 1.33)
CU2O_LATTICE_ANGSTROM: tuple[float, ...] = (4.16, 4.21, 4.26, 4.31, 4.36, 4.41, 4.46)
#: the triplet's moment (μB) and how far a DFT O2 may be from it
O2_MAGMOM, O2_MAGMOM_TOLERANCE = 2.0, 0.2
#: the references a phase diagram needs, and the optional one (the O-rich limit)
REQUIRED: tuple[str, ...] = ("Cu", "O2")
OPTIONAL: tuple[str, ...] = ("Cu2O",)
_CUPRITE_CU = ((0.25, 0.25, 0.25), (0.75, 0.75, 0.25), (0.75, 0.25, 0.75), (0.25, 0.75, 0.75))
_CUPRITE_O = ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5))


class ReferenceError(ValueError):
    """A reference energy is missing, of another protocol, not bracketed by its scan, or not the right state."""


@dataclass(frozen=True)
class ReferenceEntry:
    """One reference structure to label (what :func:`uipbench.datasets.label.label_entries` takes)."""

    plan_id: str
    reference: str  # "Cu", "O2" or "Cu2O"
    parameter: float | None  # the scan's bond length or lattice constant (Å); None for bulk Cu
    atoms: Atoms = field(repr=False)
    needs_relaxation: bool = False


def _tag(atoms: Atoms, plan_id: str, reference: str, kind: str, parameter: float | None, units: int) -> Atoms:
    atoms.info.update({"plan_id": plan_id, "system": SYSTEM, "reference": reference, KIND_KEY: kind,
                       "formula_units": units})
    if parameter is not None:
        atoms.info["scan_angstrom"] = parameter
    return atoms


def bulk_cu() -> ReferenceEntry:
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=LATTICE_CONSTANTS["Cu"])
    plan_id = f"{SYSTEM}-ref-cu-bulk"
    return ReferenceEntry(plan_id, "Cu", None, _tag(atoms, plan_id, "Cu", "bulk", None, 1))


def o2(bond: float) -> ReferenceEntry:
    """O2 along x at the centre of the box, 1 μB per O (the triplet's start)."""
    centre = O2_BOX_ANGSTROM / 2.0
    atoms = Atoms("O2", positions=[[centre - bond / 2, centre, centre], [centre + bond / 2, centre, centre]],
                  cell=[O2_BOX_ANGSTROM] * 3, pbc=False)
    atoms.set_initial_magnetic_moments([1.0, 1.0])
    plan_id = f"{SYSTEM}-ref-o2-d{bond:.3f}"
    return ReferenceEntry(plan_id, "O2", bond, _tag(atoms, plan_id, "O2", "molecule", bond, 1))


def cu2o(lattice: float) -> ReferenceEntry:
    """Cuprite at lattice constant ``lattice``: 4 Cu + 2 O, two formula units."""
    atoms = Atoms("Cu4O2", scaled_positions=[*_CUPRITE_CU, *_CUPRITE_O], cell=[lattice] * 3, pbc=True)
    plan_id = f"{SYSTEM}-ref-cu2o-a{lattice:.3f}"
    return ReferenceEntry(plan_id, "Cu2O", lattice, _tag(atoms, plan_id, "Cu2O", "bulk", lattice, 2))


def reference_plan() -> list[ReferenceEntry]:
    """Every reference structure: bulk Cu, the O2 scan, the Cu2O scan (cheapest first)."""
    return [bulk_cu(), *(o2(d) for d in O2_BONDS_ANGSTROM), *(cu2o(a) for a in CU2O_LATTICE_ANGSTROM)]


def reference_settings() -> dict:
    """What the card records about the reference structures."""
    return {"module": "uipbench.oxide.references", "cu_bulk": "fcc primitive cell at the protocol's lattice "
            f"constant {LATTICE_CONSTANTS['Cu']} Å", "o2_box_angstrom": O2_BOX_ANGSTROM,
            "o2_bonds_angstrom": list(O2_BONDS_ANGSTROM), "o2_initial_magmoms": [1.0, 1.0],
            "cu2o_lattice_angstrom": list(CU2O_LATTICE_ANGSTROM),
            "scan_minimum": "parabola through the lowest point and its two neighbours"}


def scan_minimum(parameters: Sequence[float], energies: Sequence[float], what: str) -> tuple[float, float]:
    """``(parameter, energy)`` at the minimum of the parabola through the lowest point and its neighbours."""
    x, y = np.asarray(parameters, float), np.asarray(energies, float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(x) < 3:
        raise ReferenceError(f"{what}: {len(x)} scan point(s); a minimum needs at least 3")
    i = int(np.argmin(y))
    if i in (0, len(x) - 1):
        raise ReferenceError(f"{what}: the lowest energy is at the end of the scan ({x[i]:.3f} Å of "
                             f"{x[0]:.3f}–{x[-1]:.3f} Å); the scan does not bracket the minimum")
    a, b, c = np.polyfit(x[i - 1:i + 2], y[i - 1:i + 2], 2)
    if a <= 0:
        raise ReferenceError(f"{what}: the three lowest scan points are not convex")
    x0 = -b / (2 * a)
    return float(x0), float(c - b * b / (4 * a))


@dataclass(frozen=True)
class ReferenceEnergies:
    """One method's reference energies (eV): per Cu atom in bulk, per O2, per Cu2O formula unit."""

    method: str
    cu_bulk: float
    o2: float
    cu2o: float | None = None
    #: where each scan's minimum lies (Å): {"O2": bond, "Cu2O": lattice constant}
    minima: dict[str, float] = field(default_factory=dict)

    @property
    def mu_o_max(self) -> float | None:
        """The Cu2O limit of Δμ_O (eV): E(Cu2O) − 2 E_Cu(bulk) − ½ E(O2); None without Cu2O."""
        if self.cu2o is None:
            return None
        return self.cu2o - 2.0 * self.cu_bulk - 0.5 * self.o2

    def to_dict(self) -> dict:
        return {"method": self.method, "cu_bulk_per_atom": self.cu_bulk, "o2": self.o2,
                "cu2o_per_formula_unit": self.cu2o, "mu_o_max_cu2o": self.mu_o_max, "scan_minima": self.minima}


def reference_energies(structures: Sequence[Atoms], energies: Sequence[float], method: str,
                       where: str = "the references") -> ReferenceEnergies:
    """``method``'s reference energies from its ``energies`` of the reference ``structures``."""
    groups: dict[str, list[tuple[Atoms, float]]] = {}
    for atoms, energy in zip(structures, energies):
        groups.setdefault(str(atoms.info.get("reference")), []).append((atoms, float(energy)))
    missing = [r for r in REQUIRED if r not in groups]
    if missing:
        names = {"Cu": "bulk Cu", "O2": "O2 molecule"}
        raise ReferenceError(f"{where}: no {' and no '.join(names[m] for m in missing)} reference "
                             f"({method}); run `uipbench oxide references`")
    cu = groups["Cu"]
    cu_bulk = min(e / len(a) for a, e in cu)
    minima: dict[str, float] = {}
    values: dict[str, float] = {}
    for name in ("O2", *OPTIONAL):
        if name not in groups:
            continue
        points = groups[name]
        units = int(points[0][0].info.get("formula_units", 1))
        x, e = scan_minimum([float(a.info["scan_angstrom"]) for a, _ in points], [e for _, e in points],
                            f"{where}: {name} scan ({method})")
        minima[name], values[name] = x, e / units
    return ReferenceEnergies(method, cu_bulk, values["O2"], values.get("Cu2O"), minima)


def dft_references(structures: Sequence[Atoms], method: str, where: str = "the references") -> ReferenceEnergies:
    """DFT's reference energies: :func:`reference_energies` of the structures' own (DFT) energies."""
    return reference_energies(structures, [a.get_potential_energy() for a in structures], method, where)


def check_references(structures: Sequence[Atoms], protocol: str, where: str) -> None:
    """Every reference labelled under ``protocol`` (the slabs' one), and a DFT O2 in the triplet."""
    for atoms in structures:
        name = atoms.info.get("plan_id", atoms.get_chemical_formula())
        if atoms.info.get("protocol") != protocol:
            raise ReferenceError(f"{where}: reference {name} was labelled with protocol "
                                 f"{atoms.info.get('protocol')!r}, the slabs with {protocol!r}; energies of "
                                 f"different protocols do not share a zero")
        moment = atoms.info.get("dft_magmom") if atoms.info.get("reference") == "O2" else None
        if moment is not None and abs(float(moment) - O2_MAGMOM) > O2_MAGMOM_TOLERANCE:
            raise ReferenceError(f"{where}: reference {name} converged to {float(moment):.2f} μB, not the triplet "
                                 f"({O2_MAGMOM} μB)")
