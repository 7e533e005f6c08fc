"""The independent validation plan: structures made differently from the training plan, never fitted on.

Like :func:`uipbench.datasets.generate.plan`, the plan is deterministic: entry ``i`` of a system is
drawn from a random generator seeded by ``(seed, system, i)`` alone (with a salt of its own, so it
shares no random stream with the training plan), and its plan id is ``<system>-val-s<seed>-<i:05d>``.
What differs from the training plan, on purpose:

* **cells**: besides 2x2 and 3x3, the (√3×√3)R30°, (√7×√7)R19.1°, 2x3 and 3x2 cells of the
  hexagonal basis and a rectangular 2×√3 cell (each a 2×2 transformation of the 1x1 protocol slab);
  mostly small cells (DFT cost), following the fixed cycle :data:`CELL_CYCLE`;
* **S positions**: uniform in the cell (no snapping to sites, no motifs built), heights drawn
  uniformly from :data:`S_HEIGHT_RANGE` (wider than training's 1.3–2.5 Å), 1–4 S atoms;
* **metal**: every metal atom rattled with a σ drawn per entry from :data:`METAL_RATTLE_RANGE`.

A geometry is kept when it is physical (:data:`MIN_CONTACT`, every S above the top metal layer);
the motif (``adatom``, ``dispersed``, ``dimer``, ``cluster``) is read off the geometry afterwards.
The slab is the protocol's (:func:`uipbench.datasets.generate.make_slab`: layers, vacuum, pbc,
lattice constant); its bottom layer is fixed.  ``relaxed=True`` gives the plan's other variant: the
same starting geometries, to be relaxed by a backbone before labelling (plan ids
``<system>-val-relaxed-s<seed>-<i:05d>``); it is off by default.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from ..harness.metrics import S_S_BOND
from .cells import CellShape, make_cell_slab  # noqa: F401 (re-exported: the plan's cells live there)
from .generate import _rng
from .protocol import PROTOCOL_V1, ReferenceProtocol, system_metal


CELLS: dict[str, CellShape] = {c.name: c for c in (
    CellShape("sqrt3xsqrt3R30", ((1, 1), (-1, 2)), max_sulfur=2),
    CellShape("2x2", ((2, 0), (0, 2))),
    CellShape("2xsqrt3rect", ((2, 0), (-1, 2))),
    CellShape("2x3", ((2, 0), (0, 3))),
    CellShape("3x2", ((3, 0), (0, 2))),
    CellShape("sqrt7xsqrt7R19", ((2, 1), (-1, 3))),
    CellShape("3x3", ((3, 0), (0, 3))),
)}

#: entry i uses cell CELL_CYCLE[i % 12]: a quarter in 3x3 (28–31 atoms), a third at 21 metal atoms or more
CELL_CYCLE: tuple[str, ...] = ("sqrt3xsqrt3R30", "2x2", "3x3", "2xsqrt3rect", "2x3", "sqrt3xsqrt3R30",
                               "3x3", "2x2", "3x2", "sqrt7xsqrt7R19", "2xsqrt3rect", "3x3")

S_HEIGHT_RANGE = (1.2, 3.0)  # Å above the top metal layer (training: 1.3–2.5 Å, distorted variants only)
METAL_RATTLE_RANGE = (0.05, 0.08)  # Å, σ of the Gaussian rattle of every metal atom, drawn per entry
#: closest contacts (Å) a validation geometry may have; closer ones are redrawn
MIN_CONTACT = {"S-S": 1.9, "M-S": 1.9, "M-M": 2.2}
VARIANTS = ("random", "relaxed")
_SALT = "validation"  # keeps the random streams apart from the training plan's
_TRIES_PER_ATOM = 500
_TRIES_PER_ENTRY = 200


@dataclass(frozen=True)
class ValidationEntry:
    """One planned validation structure before labelling (what :func:`label_entries` needs, as a PlanEntry)."""

    plan_id: str
    system: str
    index: int
    surface_cell: str
    n_sulfur: int
    motif: str
    variant: str
    atoms: Atoms

    @property
    def needs_relaxation(self) -> bool:
        return self.variant == "relaxed"


def _min_distances(point: np.ndarray, others: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Minimum-image distances (periodic in-plane, open along z) from ``point`` to each of ``others``."""
    if len(others) == 0:
        return np.zeros(0)
    d = others - point
    frac = np.linalg.solve(cell[:2, :2].T, d[:, :2].T).T
    frac -= np.round(frac)
    inplane = frac @ cell[:2, :2]
    return np.sqrt((inplane**2).sum(axis=1) + d[:, 2] ** 2)


def _place_sulfur(rng: np.random.Generator, metal: np.ndarray, cell: np.ndarray, top: float,
                  n_sulfur: int) -> np.ndarray | None:
    """``n_sulfur`` positions uniform in the cell at heights in :data:`S_HEIGHT_RANGE`, each at least the
    minimum contacts from the metal and the S placed before it; None when the cell is too crowded."""
    placed: list[np.ndarray] = []
    for _ in range(n_sulfur):
        for _ in range(_TRIES_PER_ATOM):
            frac = rng.uniform(0.0, 1.0, size=2)
            xy = frac @ cell[:2, :2]
            point = np.array([xy[0], xy[1], top + rng.uniform(*S_HEIGHT_RANGE)])
            if (_min_distances(point, metal, cell).min() >= MIN_CONTACT["M-S"]
                    and _min_distances(point, np.array(placed).reshape(-1, 3), cell).min(initial=np.inf)
                    >= MIN_CONTACT["S-S"]):
                placed.append(point)
                break
        else:
            return None
    return np.array(placed)


def is_physical(atoms: Atoms, n_metal: int) -> bool:
    """Minimum contacts (:data:`MIN_CONTACT`) hold and every S sits above the top metal atom."""
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    metal, sulfur = slice(0, n_metal), slice(n_metal, len(atoms))
    z = atoms.positions[:, 2]
    return bool(d[sulfur, sulfur].min(initial=np.inf) >= MIN_CONTACT["S-S"]
                and d[metal, sulfur].min(initial=np.inf) >= MIN_CONTACT["M-S"]
                and d[metal, metal].min() >= MIN_CONTACT["M-M"]
                and z[sulfur].min(initial=np.inf) > z[metal].max())


def motif_of(atoms: Atoms) -> str:
    """The S motif read off a geometry: ``adatom`` (one S), ``dispersed`` (no S–S bond), ``dimer``
    (S–S bonded pairs at most) or ``cluster`` (three or more S bonded together)."""
    s = np.flatnonzero(atoms.numbers == 16)
    if len(s) <= 1:
        return "adatom"
    bonded = atoms.get_all_distances(mic=True)[np.ix_(s, s)] < S_S_BOND
    np.fill_diagonal(bonded, False)
    if not bonded.any():
        return "dispersed"
    reach = bonded | np.eye(len(s), dtype=bool)
    for _ in range(len(s)):
        reach = (reach.astype(int) @ reach.astype(int)) > 0
    return "cluster" if reach.sum(axis=1).max() >= 3 else "dimer"


def validation_id(system: str, index: int, seed: int = 0, relaxed: bool = False) -> str:
    return f"{system}-val-{'relaxed-' if relaxed else ''}s{seed}-{index:05d}"


def validation_entry(system: str, index: int, seed: int = 0, protocol: ReferenceProtocol = PROTOCOL_V1,
                     relaxed: bool = False) -> ValidationEntry:
    """Entry ``index`` of the validation plan of ``system`` (deterministic); ``relaxed``: its relaxed variant
    (the same starting geometry, marked to be relaxed before labelling)."""
    metal = system_metal(system)
    cell = CELLS[CELL_CYCLE[index % len(CELL_CYCLE)]]
    rng = _rng(seed, f"{_SALT}:{system}", index)
    slab = make_cell_slab(metal, cell, protocol)
    n_metal = len(slab)
    n_sulfur = int(rng.integers(1, cell.max_sulfur + 1))
    sigma = float(rng.uniform(*METAL_RATTLE_RANGE))
    for _ in range(_TRIES_PER_ENTRY):
        metal_positions = slab.positions + rng.normal(0.0, sigma, size=slab.positions.shape)
        sulfur = _place_sulfur(rng, metal_positions, slab.cell.array, float(slab.positions[:, 2].max()), n_sulfur)
        if sulfur is None:
            continue
        atoms = Atoms(slab.get_chemical_symbols() + ["S"] * n_sulfur,
                      positions=np.vstack([metal_positions, sulfur]), cell=slab.cell, pbc=protocol.pbc)
        if is_physical(atoms, n_metal):
            break
    else:
        raise RuntimeError(f"no physical geometry found for validation entry {index} of {system}")
    bottom = slab.positions[:, 2] < slab.positions[:, 2].min() + 0.1
    atoms.set_constraint(FixAtoms(mask=np.concatenate([bottom, np.zeros(n_sulfur, bool)])))
    plan_id = validation_id(system, index, seed, relaxed)
    motif, variant = motif_of(atoms), VARIANTS[1 if relaxed else 0]
    atoms.info.update(plan_id=plan_id, system=system, motif=motif, variant=variant, surface_cell=cell.name,
                      metal_rattle_angstrom=round(sigma, 4))
    return ValidationEntry(plan_id, system, index, cell.name, n_sulfur, motif, variant, atoms)


def validation_plan(system: str, n: int, seed: int = 0, protocol: ReferenceProtocol = PROTOCOL_V1,
                    relaxed: bool = False) -> list[ValidationEntry]:
    """The first ``n`` entries of the validation plan of ``system``."""
    return [validation_entry(system, i, seed, protocol, relaxed) for i in range(n)]


def validation_generator_settings(seed: int, relaxed: bool = False, relaxer_name: str | None = None) -> dict:
    """What the dataset card records about how the validation structures were made."""
    return {
        "module": "uipbench.datasets.validation",
        "seed": seed,
        "cells": {c.name: {"matrix": [list(r) for r in c.matrix], "atoms_per_layer": c.atoms_per_layer,
                           "sulfur": [1, c.max_sulfur]} for c in CELLS.values()},
        "cell_cycle": list(CELL_CYCLE),
        "s_positions": "uniform in the cell, no site snapping",
        "s_height_range_angstrom": list(S_HEIGHT_RANGE),
        "metal_rattle_sigma_angstrom": list(METAL_RATTLE_RANGE),
        "min_contact_angstrom": dict(MIN_CONTACT),
        "variant": VARIANTS[1 if relaxed else 0],
        "relaxer": relaxer_name,
    }
