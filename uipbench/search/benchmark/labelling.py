"""DFT single points of the runs' candidates, kept in ``OUT/labelled.extxyz`` (one structure per hash).

Each candidate (a run's predicted minimum and the next ``label_top - 1`` minima) is labelled at its
backbone geometry by a *labeller* with the signature of :func:`uipbench.datasets.label.label_structure`
(:class:`LabelTask` in, :class:`LabelRecord` out); its scratch folder ``OUT/.labelling`` keeps GPAW's
results, so a structure whose DFT finished is not computed again after a kill.  Identical structures
(same :func:`structure_hash`) are labelled once, whichever runs found them.  The structures an
active-learning run labelled itself are pooled in as they are (no relabelling).  A candidate that is
the same minimum as one already labelled or queued for its problem (same formula, minima fingerprints
within ``F_TOL`` = 0.10 Å: :mod:`uipbench.search.minima`) is not labelled again: it takes that
structure's DFT energy as an *alias* (:func:`alias_points`; kept in memory, never written as DFT of its
own geometry).  Two runs that relax into one minimum differ by less than the relaxation's scatter, so
their single points differ by meV (one such pair of CHGNet minima on ag-s3-3x3 measured here: 2.5 meV),
far below the 0.1 eV success threshold, while each 30-atom single point costs about 8 CPU-minutes.  Only the driver's
thread writes: each result is appended to the file by an atomic rewrite, with its provenance (problem,
backbone, method, seed, rank, predicted energy, source).  A failed record is handed to ``on_failure``
and skipped.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ...datasets.io import read_structures, structure_hash
from ...datasets.label import LabelRecord, LabelTask, append_structures, labelled_structure
from ...datasets.protocol import ReferenceProtocol
from ...harness.fit import dft_energy
from ..minima import fingerprint, same_geometry
from .collect import Candidate, RunResult
from .run import Log, drain

Labeller = Callable[[LabelTask], LabelRecord]
#: a labelled structure is known by its problem and its structure hash
PointKey = tuple[str, str]
LABELLED_FILE = "labelled.extxyz"
SCRATCH = ".labelling"


@dataclass(frozen=True)
class DftPoint:
    """One labelled structure: its DFT energy and where it came from."""

    structure_hash: str
    problem: str
    energy: float  # eV
    source: str  # "top-k" (labelled here) or "al" (labelled by an active-learning run)
    core_seconds: float  # DFT cost (wall seconds x cores; NaN when unknown)
    atoms: Atoms = field(compare=False, repr=False)

    @property
    def key(self) -> PointKey:
        return (self.problem, self.structure_hash)


def key_of(candidate: Candidate) -> PointKey:
    """The key of a candidate's DFT point."""
    return (candidate.spec.problem, candidate.structure_hash)


def core_seconds(atoms: Atoms) -> float:
    """DFT cost of a labelled structure: wall seconds x cores (NaN when it does not say)."""
    seconds = atoms.info.get("label_seconds")
    return float("nan") if seconds is None else float(seconds) * int(atoms.info.get("label_cores", 1))


def read_labelled(out: Path) -> dict[PointKey, DftPoint]:
    """``OUT/labelled.extxyz`` by (problem, structure hash)."""
    path = Path(out) / LABELLED_FILE
    points = {}
    for atoms in (read_structures(path) if path.is_file() else []):
        # the hash of the geometry as read back, as every candidate's (the info's copy may read as a number)
        energy = dft_energy(atoms)  # None: none, or not finite
        if energy is not None:
            point = DftPoint(structure_hash(atoms), str(atoms.info["problem"]), energy,
                             str(atoms.info.get("source", "top-k")), core_seconds(atoms), atoms)
            points[point.key] = point
    return points


def _provenance(candidate: Candidate, source: str) -> dict:
    spec = candidate.spec
    return {"problem": spec.problem, "backbone": spec.backbone, "method": spec.method, "seed": spec.seed,
            "rank": candidate.rank, "predicted_energy": candidate.predicted_energy, "source": source,
            "structure_hash": candidate.structure_hash}


def _al_structure(run: RunResult, atoms: Atoms) -> tuple[PointKey, Atoms] | None:
    energy = dft_energy(atoms)  # None: none, or not finite
    if energy is None:
        return None
    key = structure_hash(atoms)
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    out = atoms.copy()
    out.set_constraint()
    # only what the active-learning run recorded: no forces are invented for a structure without them
    out.calc = SinglePointCalculator(out, energy=energy, **({"forces": results["forces"]} if "forces" in results
                                                            else {}))
    spec = run.spec
    out.info.update(problem=spec.problem, backbone=spec.backbone, method=spec.method, seed=spec.seed, source="al",
                    structure_hash=key)
    return (spec.problem, key), out


def pool_al(runs: Iterable[RunResult], out: Path, known: dict[PointKey, DftPoint],
            protocols: dict[str, ReferenceProtocol]) -> int:
    """Append the structures active-learning runs labelled themselves (new ones, labelled under their
    problem's protocol: energies of another set-up do not share its zero); how many."""
    new: dict[PointKey, Atoms] = {}
    for run in runs:
        protocol = protocols[run.spec.problem].name
        for atoms in run.al_labelled:
            if atoms.info.get("protocol", protocol) != protocol:
                continue
            found = _al_structure(run, atoms)
            if found is not None and found[0] not in known and found[0] not in new:
                new[found[0]] = found[1]
    if new:
        append_structures(Path(out) / LABELLED_FILE, list(new.values()))
    return len(new)


def _fingerprint(atoms: Atoms, n_adsorbates: int) -> dict[str, np.ndarray]:
    return fingerprint(atoms, len(atoms) - n_adsorbates)


def _twin(atoms: Atoms, fp: dict[str, np.ndarray], others: Iterable[tuple[Atoms, dict[str, np.ndarray]]]) -> int | None:
    """Index of the first of ``others`` that is the same minimum as ``atoms`` by geometry (formula and
    fingerprint), or None."""
    formula = atoms.get_chemical_formula()
    for i, (other, other_fp) in enumerate(others):
        if same_geometry(formula, fp, other.get_chemical_formula(), other_fp):
            return i
    return None


def alias_points(candidates: Iterable[Candidate], points: dict[PointKey, DftPoint],
                 n_adsorbates: dict[str, int]) -> dict[PointKey, DftPoint]:
    """DFT points for candidates without one of their own that are the same minimum as a labelled
    structure of their problem (see the module docstring): that structure's energy, no cost."""
    by_problem: dict[str, list[DftPoint]] = {}
    for point in points.values():
        by_problem.setdefault(point.problem, []).append(point)
    fps = {point.key: _fingerprint(point.atoms, n_adsorbates[point.problem]) for point in points.values()
           if point.problem in n_adsorbates}
    out: dict[PointKey, DftPoint] = {}
    for c in candidates:
        key = key_of(c)
        mine = [p for p in by_problem.get(c.spec.problem, []) if p.key in fps]
        if key in points or key in out or not mine:
            continue
        i = _twin(c.atoms, _fingerprint(c.atoms, n_adsorbates[c.spec.problem]), [(p.atoms, fps[p.key]) for p in mine])
        if i is not None:
            out[key] = DftPoint(c.structure_hash, c.spec.problem, mine[i].energy,
                                f"alias of {mine[i].structure_hash}", 0.0, c.atoms)
    return out


def pending_tasks(candidates: Iterable[Candidate], known: set[PointKey], skip: set[PointKey],
                  protocols: dict[str, ReferenceProtocol], out: Path,
                  points: dict[PointKey, DftPoint] | None = None,
                  n_adsorbates: dict[str, int] | None = None) -> list[tuple[LabelTask, Candidate]]:
    """One task per structure still to label (predicted minima first), skipping ``known`` and ``skip``
    and, given ``points`` and ``n_adsorbates``, the same minimum as a labelled or queued structure."""
    tasks: dict[PointKey, tuple[LabelTask, Candidate]] = {}
    seen: dict[str, list[tuple[Atoms, dict[str, np.ndarray]]]] = {}
    if points is not None and n_adsorbates is not None:
        for point in points.values():
            if point.problem in n_adsorbates:
                seen.setdefault(point.problem, []).append(
                    (point.atoms, _fingerprint(point.atoms, n_adsorbates[point.problem])))
    for c in sorted(candidates, key=lambda c: (c.rank, c.spec)):
        key = key_of(c)
        if key in known or key in skip or key in tasks:
            continue
        if n_adsorbates is not None and points is not None:
            fp = _fingerprint(c.atoms, n_adsorbates[c.spec.problem])
            if _twin(c.atoms, fp, seen.get(c.spec.problem, [])) is not None:
                continue  # the same minimum is labelled or queued: an alias (alias_points)
            seen.setdefault(c.spec.problem, []).append((c.atoms, fp))
        plan_id = f"{c.spec.problem}-{c.structure_hash}"
        tasks[key] = (LabelTask(plan_id, c.atoms.copy(), protocols[c.spec.problem],
                                             Path(out) / SCRATCH), c)
    return list(tasks.values())


def label_candidates(tasks: list[tuple[LabelTask, Candidate]], out: Path, labeller: Labeller, jobs: int,
                     on_failure: Callable[[Candidate, str], None], log: Log) -> int:
    """Label ``tasks`` (``jobs`` at a time), appending each result to ``OUT/labelled.extxyz``; how many."""
    path = Path(out) / LABELLED_FILE
    by_id = {task.plan_id: (task, c) for task, c in tasks}
    done = 0

    def take(record: LabelRecord) -> None:
        nonlocal done
        task, candidate = by_id[record.plan_id]
        if not record.ok:
            on_failure(candidate, record.error)
            log(f"DFT of {candidate.spec.key} rank {candidate.rank} failed: {record.error.splitlines()[0][:200]}")
            return
        atoms = labelled_structure(record.atoms, record.result(), task.protocol, record.cores)
        atoms.info.update(_provenance(candidate, "top-k"))
        append_structures(path, [atoms])
        done += 1
        log(f"DFT {done}/{len(tasks)}: {candidate.spec.key} rank {candidate.rank}: {record.energy:.4f} eV")

    def failed(task: LabelTask, exc: Exception) -> LabelRecord:
        return LabelRecord(task.plan_id, task.atoms, "failed", error=f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        drain({pool.submit(labeller, task): task for task, _ in tasks}, take, failed)
    return done
