"""Shared fixtures: small M(111)+S structures built by the suite's own generator (no DFT)."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from uipbench.datasets.generate import plan_entry
from uipbench.datasets.io import with_results


@pytest.fixture
def slab_structures() -> list[Atoms]:
    """Three Cu(111)+S slabs (2x2, pbc=(T,T,F)) from the generator plan, without labels."""
    return [plan_entry("cu-s", i).atoms for i in (0, 1, 3)]


@pytest.fixture
def labelled_structures(slab_structures) -> list[Atoms]:
    """The same slabs with made-up energies and forces (for I/O tests only)."""
    rng = np.random.default_rng(0)
    out = []
    for atoms in slab_structures:
        labelled = with_results(atoms, -50.0 + rng.normal(), rng.normal(size=(len(atoms), 3)))
        labelled.info.update(protocol="gpaw-lcao-dzp-pbe-v1", gpaw_version="22.8.0")
        out.append(labelled)
    return out
