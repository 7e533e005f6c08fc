"""Reference protocol v1: the DFT settings every shipped structure is labelled with.

The protocol is written for slabs (spin-unpolarised, k-points in-plane, open along z).  The references
of the Cu oxide's thermodynamics (:mod:`uipbench.oxide`) are bulk crystals and a molecule: their extra
settings (:func:`kind_settings`) are keyed by the structure's kind in the labelling job, never in the
protocol's dict, so a slab's job, and with it every earlier scratch result, is what it was:

* ``bulk`` (bulk Cu, Cu2O): periodic in 3D, k-points by the same density rule along all three cell
  vectors, spin-unpolarised (Cu and Cu2O are non-magnetic);
* ``molecule`` (O2): no periodicity (a box, e.g. 12 Å), Γ only, and spin-polarised when the structure
  carries initial magnetic moments.  O2's ground state is the triplet (2 μB); a spin-unpolarised O2 is
  a wrong, singlet-like state, of order 1 eV higher (literature: O2's lowest singlet, a¹Δg, lies 0.98 eV
  above the triplet in experiment), and every oxide formation energy would inherit that error through
  ½E(O2).  Slabs stay spin-unpolarised: Cu and ultrathin Cu oxide films on Cu are
  non-magnetic, so a spin-polarised calculation would converge to the same energy at twice the cost.
  The known GGA overbinding of O2 (literature: of order 1 eV per O2 against experiment, from the
  oxide-formation energies of Wang, Maxisch and Ceder, PRB 73, 195107 (2006)) is not corrected: the
  oxide's phase diagram is PBE's as it stands.

This module must stay importable by Debian's ``/usr/bin/python3`` (it is read by
``gpaw_runner.py``), so it uses only the standard library.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

PROTOCOL_NAME = "gpaw-lcao-dzp-pbe-v1"

#: fcc lattice constants (Å) used for the slabs of each metal.
LATTICE_CONSTANTS: dict[str, float] = {"Cu": 3.632, "Ag": 4.152, "Au": 4.157}

#: shipped systems: name -> metal (the S systems, then the Cu oxide)
SYSTEMS: dict[str, str] = {"cu-s": "Cu", "ag-s": "Ag", "au-s": "Au", "cu-o": "Cu"}
#: the adsorbate element that names each shipped system's chemistry (which system a problem's data is)
SYSTEM_ADSORBATES: dict[str, str] = {"cu-s": "S", "ag-s": "S", "au-s": "S", "cu-o": "O"}
#: systems whose structures come from the S generator (``uipbench.datasets.generate`` and ``.validation``)
S_PLAN_SYSTEMS: tuple[str, ...] = ("cu-s", "ag-s", "au-s")
#: how the structures of the other shipped systems are made, for the S generator's refusal
OTHER_SOURCES: dict[str, str] = {
    "cu-o": "its structures are DFT single points of oxide search minima (`uipbench oxide label`) and its "
            "references come from `uipbench oxide references`",
}


@dataclass(frozen=True)
class ReferenceProtocol:
    """GPAW settings of the reference protocol (kept as plain data)."""

    name: str = PROTOCOL_NAME
    code: str = "gpaw"
    mode: str = "lcao"
    basis: str = "dzp"
    xc: str = "PBE"
    fermi_dirac_width_ev: float = 0.1
    spinpol: bool = False
    setups: dict[str, str] = field(default_factory=lambda: {"Ag": "11"})
    kpoint_density_angstrom: float = 20.0
    n_metal_layers: int = 3
    vacuum_angstrom: float = 6.0
    pbc: tuple[bool, bool, bool] = (True, True, False)

    def kpoints(self, cell_lengths: tuple[float, float, float]) -> tuple[int, int, int]:
        """Monkhorst–Pack grid: ceil(20 Å / |a_i|) in-plane, 1 along z."""
        a, b, _ = cell_lengths
        return (
            max(1, math.ceil(self.kpoint_density_angstrom / a)),
            max(1, math.ceil(self.kpoint_density_angstrom / b)),
            1,
        )

    def to_dict(self) -> dict:
        return asdict(self)


PROTOCOL_V1 = ReferenceProtocol()

#: ``atoms.info`` key naming a structure's kind for the labelling; absent: a slab
KIND_KEY = "dft_kind"
STRUCTURE_KINDS: tuple[str, ...] = ("slab", "bulk", "molecule")


def kind_settings(kind: str, pbc: tuple[bool, ...], cell_lengths: tuple[float, float, float],
                  magmoms: list[float], protocol: ReferenceProtocol = PROTOCOL_V1) -> dict:
    """The job's settings beyond the protocol for a structure of ``kind`` (see the module docstring):
    nothing for a slab (its job is the v1 job), k-points (and spin) for bulk and molecules.  A structure
    whose periodicity or magnetic moments do not fit its kind is a clear error."""
    if kind not in STRUCTURE_KINDS:
        raise ValueError(f"unknown structure kind {kind!r}; known: {', '.join(STRUCTURE_KINDS)}")
    magnetic = any(abs(m) > 0 for m in magmoms)
    if kind != "molecule" and magnetic:
        raise ValueError(f"a {kind} is labelled spin-unpolarised under {protocol.name}; only a molecule may carry "
                         f"initial magnetic moments")
    if kind == "slab":
        return {}
    if kind == "bulk":
        if not all(pbc):
            raise ValueError(f"a bulk structure must be periodic in 3D, got pbc={list(pbc)}")
        density = protocol.kpoint_density_angstrom
        return {"kind": "bulk", "kpts": [max(1, math.ceil(density / length)) for length in cell_lengths]}
    if any(pbc):
        raise ValueError(f"a molecule is computed in a box without periodicity, got pbc={list(pbc)}")
    settings = {"kind": "molecule", "kpts": [1, 1, 1], "spinpol": magnetic}
    if magnetic:
        settings["magmoms"] = [float(m) for m in magmoms]
    return settings


def system_metal(system: str) -> str:
    """Metal of a system the S generator plans structures for, with a clear error for unknown names and
    for shipped systems made otherwise (``cu-o``)."""
    if system in OTHER_SOURCES:
        raise ValueError(f"system {system!r} has no S structure plan: {OTHER_SOURCES[system]}")
    if system not in S_PLAN_SYSTEMS:
        known = ", ".join(sorted(S_PLAN_SYSTEMS))
        raise ValueError(f"unknown system {system!r}; known systems (those uipbench generates structures "
                         f"for): {known}")
    return SYSTEMS[system]
