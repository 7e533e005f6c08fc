"""The sweep's default grid, in a module that imports nothing, so the command line can show it cheaply.

:mod:`uipbench.harness.sweep` and the ``uipbench`` parser both read these; building the parser must not
import the sweep (and with it pandas and scipy).
"""
from __future__ import annotations

AGGREGATIONS: tuple[str, ...] = ("global", "species", "atomic")
DESCRIPTORS: tuple[str, ...] = ("embedding", "soap")
DEFAULT_SIZES: tuple[int | str, ...] = (5, 10, 20, 40, "max")
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)

#: which atoms' forces a Δ-fit may label (``delta fit --forces``; :func:`uipbench.delta.jacobian.labelled_atoms`)
FORCE_LABELS: tuple[str, ...] = ("adsorbate", "all")
