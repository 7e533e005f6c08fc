"""Small hand-built structures shared by test modules (fixtures live in conftest.py)."""
from __future__ import annotations

from ase import Atoms
from ase.build import add_adsorbate, fcc111


def cu_s_slab(sites: tuple[str, ...] = ("fcc",), layers: int = 3) -> Atoms:
    """2x2 Cu(111) slab with S adatoms, pbc=(T,T,F), 6 Å of vacuum on each side."""
    slab = fcc111("Cu", size=(2, 2, layers), vacuum=6.0)
    for site in sites:
        add_adsorbate(slab, "S", 1.6, site)
    return slab
