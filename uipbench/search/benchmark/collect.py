"""What a finished run left in its folder, read back: its top minima (the candidates to label), its cost.

* ``search.json`` – ``timing.cpu_seconds_per_relaxation`` (``total``, ``mean``) and ``evaluations``;
* ``minima.extxyz`` – the distinct minima, lowest predicted energy first, each with ``rank``,
  ``predicted_energy``, ``evaluation`` / ``first_evaluation`` (the first evaluation that found it; older
  folders lack it, then the evaluation of its lowest structure stands in) and ``adsorbate_bonds``;
* ``evaluations/NNNNNN.json`` – each relaxation's CPU seconds (the CPU time up to an evaluation is
  summed from them when every one is there, else estimated as the mean times the count);
* ``labelled.extxyz`` (active learning only) – every structure the run labelled with DFT.

Structures are identified by :func:`uipbench.datasets.io.structure_hash` of the geometry as read back.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from ...datasets.io import read_structures, structure_hash
from .plan import RunSpec


@dataclass(frozen=True)
class Candidate:
    """One of a run's lowest minima, at the backbone's geometry."""

    spec: RunSpec
    rank: int  # 1 = the run's predicted minimum
    predicted_energy: float  # eV, the backbone's (+ Δ) energy
    structure_hash: str
    first_evaluation: int
    atoms: Atoms = field(compare=False, repr=False)


@dataclass(frozen=True)
class RunResult:
    """A finished run: its candidates (rank order) and its cost."""

    spec: RunSpec
    candidates: tuple[Candidate, ...]
    evaluations: int
    cpu_seconds: float  # the search's, all relaxations (NaN when search.json does not say)
    cpu_cumulative: tuple[float, ...] | None  # CPU seconds up to and including each evaluation; None: not all kept
    al_labelled: tuple[Atoms, ...] = ()  # active learning: the structures it labelled with DFT

    def cpu_through(self, evaluation: int) -> float:
        """CPU seconds of the search up to and including ``evaluation`` (0-based)."""
        if self.cpu_cumulative is not None and evaluation < len(self.cpu_cumulative):
            return self.cpu_cumulative[evaluation]
        if not self.evaluations:
            return math.nan
        return self.cpu_seconds * (evaluation + 1) / self.evaluations


def _cumulative_cpu(folder: Path, count: int) -> tuple[float, ...] | None:
    paths = sorted((folder / "evaluations").glob("*.json"))
    if count < 1 or len(paths) != count:
        return None
    total, out = 0.0, []
    for path in paths:
        try:
            total += float(json.loads(path.read_text(encoding="utf-8"))["cpu_seconds"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        out.append(total)
    return tuple(out)


def _candidate(spec: RunSpec, atoms: Atoms, where: str) -> Candidate:
    info = atoms.info
    try:
        rank, energy = int(info["rank"]), float(info["predicted_energy"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: a minimum without rank or predicted_energy in its info") from None
    first = int(info.get("first_evaluation", info.get("evaluation", 0)))
    return Candidate(spec, rank, energy, structure_hash(atoms), first, atoms)


def read_run(spec: RunSpec, out: Path, label_top: int) -> RunResult:
    """The finished run of ``spec`` under ``out``: its ``label_top`` lowest minima and its timing."""
    folder = spec.folder(out)
    summary = json.loads((folder / "search.json").read_text(encoding="utf-8"))
    cpu = (summary.get("timing") or {}).get("cpu_seconds_per_relaxation") or {}
    minima = read_structures(folder / "minima.extxyz")
    candidates = sorted((_candidate(spec, a, str(folder / "minima.extxyz")) for a in minima), key=lambda c: c.rank)
    evaluations = int(summary.get("evaluations", summary.get("budget", 0)))
    labelled = folder / "labelled.extxyz"
    al = tuple(read_structures(labelled)) if spec.method == "al" and labelled.is_file() else ()
    return RunResult(spec, tuple(candidates[:label_top]), evaluations, float(cpu.get("total", math.nan)),
                     _cumulative_cpu(folder, evaluations), al)
