"""The search's default settings, in a module that imports nothing (the command's parser reads it)."""
from __future__ import annotations

#: search algorithms
ALGORITHMS: tuple[str, ...] = ("random", "basin")
#: basin hopping: Metropolis temperature (eV) and adsorbate displacement radius (Å)
BASIN_KT = 0.1
BASIN_STEP = 1.5
#: optimizers a search may use (ASE's)
OPTIMIZERS: tuple[str, ...] = ("BFGS", "FIRE")
#: force threshold (eV/Å) and step cap of a relaxation
FMAX = 0.05
MAX_STEPS = 300
