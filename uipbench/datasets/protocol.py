"""Reference protocol v1: the DFT settings every shipped structure is labelled with.

This module must stay importable by Debian's ``/usr/bin/python3`` (it is read by
``gpaw_runner.py``), so it uses only the standard library.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

PROTOCOL_NAME = "gpaw-lcao-dzp-pbe-v1"

#: fcc lattice constants (Å) used for the slabs of each metal.
LATTICE_CONSTANTS: dict[str, float] = {"Cu": 3.632, "Ag": 4.152, "Au": 4.157}

#: shipped systems: name -> metal
SYSTEMS: dict[str, str] = {"cu-s": "Cu", "ag-s": "Ag", "au-s": "Au"}


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


def system_metal(system: str) -> str:
    """Metal of a shipped system name, with a clear error for unknown names."""
    try:
        return SYSTEMS[system]
    except KeyError:
        known = ", ".join(sorted(SYSTEMS))
        raise ValueError(f"unknown system {system!r}; known systems (those uipbench generates structures "
                         f"for): {known}") from None
