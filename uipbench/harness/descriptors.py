"""A backbone-free descriptor for the same Δ-GPR: SOAP (dscribe), per atom."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

#: SOAP settings of the baseline (cutoff like the backbones' 5 Å, modest basis)
SOAP_SETTINGS = {"r_cut": 5.0, "n_max": 4, "l_max": 3, "sigma": 0.5}


def soap_features(structures: Sequence[Atoms], species: Sequence[str]) -> list[np.ndarray]:
    """Per-atom SOAP vectors ``[n_atoms, d]`` (float64); slabs are treated as fully periodic
    (the vacuum gap exceeds the cutoff, as for the backbones)."""
    try:
        from dscribe.descriptors import SOAP
    except ImportError as exc:  # pragma: no cover - dscribe is a core dependency
        raise RuntimeError("the SOAP baseline needs dscribe (pip install dscribe)") from exc
    soap = SOAP(species=sorted(set(species)), periodic=True, **SOAP_SETTINGS)
    out = []
    for atoms in structures:
        periodic = atoms.copy()
        periodic.pbc = True
        out.append(np.asarray(soap.create(periodic), dtype=np.float64))
    return out
