"""Relaxing planned structures with a cheap backbone before labelling."""
from __future__ import annotations

import warnings
from typing import Callable

from ase import Atoms

Relaxer = Callable[[Atoms], Atoms]

FMAX = 0.05  # eV/Å
MAX_STEPS = 200


def relaxer_for(name: str | None) -> tuple[Relaxer | None, str | None]:
    """A relaxer running backbone ``name`` (in its own environment), or ``(None, None)``.

    ``'none'`` or an unavailable backbone gives no relaxer: the 'relaxed' variants
    are then deferred to a later ``--resume`` run.
    """
    if name in (None, "none"):
        return None, None
    try:
        from ..adapters.registry import load_backbone
        backbone = load_backbone(name)
    except Exception as exc:  # the backbone is optional for labelling
        warnings.warn(f"relaxation backbone {name!r} unavailable ({exc}); 'relaxed' variants are deferred",
                      stacklevel=2)
        return None, None

    def relax(atoms: Atoms) -> Atoms:
        return backbone.relax(atoms, fmax=FMAX, steps=MAX_STEPS)

    return relax, name
