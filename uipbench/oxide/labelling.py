"""DFT labels of the oxide (GPAW under the reference protocol, resumable, into ``datasets/cu-o/``).

* :func:`label_references` – the reference structures (:func:`uipbench.oxide.references.reference_plan`)
  into ``references.extxyz`` (the card's ``references`` section);
* :func:`label_minima` – single points of the ``top`` lowest pooled minima of every problem of the given
  searches (per backbone), at the backbone's geometry, into ``structures.extxyz`` (the card of a system
  like the S ones, so sweeps read ``cu-o``); the lowest ranks of every problem go first, and a minimum one
  of whose members (the same minimum from another seed) is labelled already is not labelled again.

Both go through :func:`uipbench.datasets.label.label_entries` (one structure per GPAW process, a scratch
folder that keeps finished results, atomic appends), under the lock of the system's folder; running the
same command again labels only what is missing.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from .._lock import OutputLock
from ..datasets.cells import OXIDE_8
from ..datasets.io import REFERENCES_FILE, STRUCTURES_FILE, read_structures, structure_hash, system_dir
from ..datasets.label import GPAW_PYTHON, RELAX_FMAX, RELAX_STEPS, BuildReport, LabellingError, gpaw_available, \
    label_entries
from ..datasets.protocol import PROTOCOL_V1
from .references import SYSTEM, reference_plan, reference_settings
from .searches import DFT_RELAXED, ProblemMinima, SearchRun, dft_of, dft_points, pool, read_run, search_folders, \
    single_points

#: minima labelled per problem by default
TOP = 3


@dataclass(frozen=True)
class MinimumEntry:
    """One search minimum to label (what :func:`label_entries` takes)."""

    plan_id: str
    atoms: Atoms = field(repr=False)
    needs_relaxation: bool = False


def _check_gpaw(python: str) -> None:
    ok, why = gpaw_available(python)
    if not ok:
        raise LabellingError(why)


def label_references(root: Path | None = None, *, workers: int = 2, mpi_ranks: int = 1, python: str = GPAW_PYTHON,
                     progress: bool = True) -> BuildReport:
    """Label every reference structure not yet in ``<root>/cu-o/references.extxyz``."""
    _check_gpaw(python)
    directory = system_dir(SYSTEM, root)
    with OutputLock(directory, command=" ".join(["uipbench", *sys.argv[1:]])):
        return label_entries(reference_plan(), directory, SYSTEM, workers=workers, mpi_ranks=mpi_ranks,
                             python=python, progress=progress, dataset_file=REFERENCES_FILE,
                             generator=reference_settings())


def cell_name(surface_cell: list) -> str:
    """``oxide-8`` for the '8' cell, else the card's cell as written (``3x3``, ``[[2, 1], [-1, 3]]``)."""
    if surface_cell == [list(row) for row in OXIDE_8.matrix]:
        return OXIDE_8.name
    if isinstance(surface_cell[0], list):
        return str(surface_cell)
    return f"{surface_cell[0]}x{surface_cell[1]}"


def _entry(minima: ProblemMinima, rank: int, backbone: str, weights: str, cell: str) -> MinimumEntry:
    atoms = minima.minima[rank - 1].copy()
    key = structure_hash(atoms)
    plan_id = f"{SYSTEM}-{minima.problem}-{key}"
    atoms.info = {"plan_id": plan_id, "system": SYSTEM, "problem": minima.problem, "backbone": backbone,
                  "weights_sha256": weights, "search_rank": rank, "predicted_energy": minima.energies[rank - 1],
                  "surface_cell": cell, "motif": minima.label, "variant": "search minimum"}
    return MinimumEntry(plan_id, atoms)


def minimum_entries(runs: list[SearchRun], top: int, labelled: Iterable[Atoms] = ()) -> list[MinimumEntry]:
    """The ``top`` lowest minima of every problem, per backbone, rank 1 of every problem first; those
    already labelled (any member) left out."""
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    points = dft_points(labelled)
    by_backbone: dict[str, list[SearchRun]] = {}
    for run in runs:
        by_backbone.setdefault(run.backbone, []).append(run)
    entries: dict[str, MinimumEntry] = {}
    for backbone, group in by_backbone.items():
        pooled = pool(group, backbone)
        other = sorted({m.protocol for m in pooled.values()} - {PROTOCOL_V1.name})
        if other:
            raise ValueError(f"the oxide is labelled under {PROTOCOL_V1.name}; these searches name {', '.join(other)}")
        cell = cell_name(group[0].problem["slab"]["surface_cell"])
        for rank in range(1, top + 1):
            for minima in pooled.values():
                if rank <= len(minima.minima) and dft_of(minima.members[rank - 1], points, minima.n_slab) is None:
                    entry = _entry(minima, rank, backbone, group[0].weights_sha256, cell)
                    entries.setdefault(entry.plan_id, entry)
    return list(entries.values())


def label_minima(searches: Iterable[Path], top: int = TOP, root: Path | None = None, *, workers: int = 2,
                 mpi_ranks: int = 1, python: str = GPAW_PYTHON, progress: bool = True) -> BuildReport:
    """Label the ``top`` lowest minima of every problem of ``searches`` into ``<root>/cu-o/structures.extxyz``."""
    runs = [read_run(p) for p in search_folders(searches)]
    if top < 1:
        raise ValueError(f"--top must be at least 1, got {top}")
    _check_gpaw(python)
    directory = system_dir(SYSTEM, root)
    with OutputLock(directory, command=" ".join(["uipbench", *sys.argv[1:]])):
        path = directory / STRUCTURES_FILE
        entries = minimum_entries(runs, top, read_structures(path) if path.exists() else [])
        generator = {"module": "uipbench.oxide.labelling", "generated_by": "uipbench oxide label",
                     "rule": "single points at the backbone geometry of the lowest pooled distinct minima of "
                             "each problem of raw-backbone searches, per backbone", "top": top}
        return label_entries(entries, directory, SYSTEM, workers=workers, mpi_ranks=mpi_ranks, python=python,
                             progress=progress, generator=generator)


def relaxation_entries(labelled: Iterable[Atoms], problems: Iterable[str], fmax: float, steps: int) -> list[MinimumEntry]:
    """One DFT relaxation per problem: of its DFT-lowest labelled single point, with the problem card's
    bottom layers held (the search held them too)."""
    from ..search.problem import load_problem

    if fmax <= 0 or steps < 1:
        raise ValueError(f"a DFT relaxation needs fmax > 0 and at least one step, got fmax={fmax}, steps={steps}")
    points = single_points(labelled)
    entries = []
    for name in problems:
        template = load_problem(name).template()
        found = [a for a in points if a.info.get("problem") == name]
        if not found:
            raise ValueError(f"{name}: no labelled single point to relax (run `uipbench oxide label` first)")
        start = min(found, key=lambda a: a.get_potential_energy())
        held = [c for c in template.constraints if isinstance(c, FixAtoms)]
        if not held:
            raise ValueError(f"{name}: the card's template holds no atoms fixed; a slab relaxation needs fixed layers")
        mask = held[0].get_indices()
        if not np.allclose(start.positions[mask], template.positions[mask], atol=1e-4):
            raise ValueError(f"{name}: the fixed atoms of {start.info['plan_id']} are not the card's template's")
        atoms = Atoms(start.numbers, start.positions, cell=start.cell, pbc=start.pbc)
        atoms.set_constraint(FixAtoms(indices=mask))
        atoms.info = {k: v for k, v in start.info.items() if k in ("system", "problem", "backbone", "weights_sha256",
                                                                   "search_rank", "surface_cell", "motif")}
        atoms.info.update(plan_id=f"{start.info['plan_id']}-dft-relaxed", variant=DFT_RELAXED,
                          relaxed_from=start.info["plan_id"], single_point_energy=start.get_potential_energy(),
                          **{RELAX_FMAX: float(fmax), RELAX_STEPS: int(steps)})
        entries.append(MinimumEntry(atoms.info["plan_id"], atoms))
    return entries


def relax_minima(problems: Iterable[str], root: Path | None = None, *, fmax: float = 0.05, steps: int = 100,
                 workers: int = 1, mpi_ranks: int = 1, python: str = GPAW_PYTHON, progress: bool = True) -> BuildReport:
    """DFT-relax the DFT-lowest labelled minimum of each of ``problems`` into ``<root>/cu-o/structures.extxyz``
    (resumable: a killed relaxation goes on from its last step)."""
    problems = list(problems)
    _check_gpaw(python)
    directory = system_dir(SYSTEM, root)
    path = directory / STRUCTURES_FILE
    with OutputLock(directory, command=" ".join(["uipbench", *sys.argv[1:]])):
        entries = relaxation_entries(read_structures(path) if path.exists() else [], problems, fmax, steps)
        generator = {"module": "uipbench.oxide.labelling", "generated_by": "uipbench oxide relax",
                     "rule": "DFT relaxation (BFGS, protocol v1) of the DFT-lowest labelled single point of each "
                             "problem, the card's bottom layers held", "fmax": fmax, "steps": steps}
        return label_entries(entries, directory, SYSTEM, workers=workers, mpi_ranks=mpi_ranks, python=python,
                             progress=progress, generator=generator)
