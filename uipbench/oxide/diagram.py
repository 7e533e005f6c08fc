"""The phase diagram of one backbone's searches, with the backbone's energies and with DFT's.

Each method's diagram is made of its own energies only: the backbone's predicted energies of its pooled
minima and of the reference structures, or the DFT single points of those minima (the lowest labelled
one per composition) and the DFT references.  A composition without a DFT point is left out of the DFT
diagram and named; without a DFT point of the clean slab, or without DFT references, there is no DFT
diagram (the backbone's is still drawn).  The cell area is the clean slab's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from ase import Atoms

from .phase import MU_O_MIN, Interval, Line, Phase, lines_for, mu_range, winners
from .references import ReferenceEnergies, ReferenceError, check_references, dft_references, reference_energies
from .searches import DftPoint, ProblemMinima, dft_of, dft_points

DFT = "DFT"
#: a backbone's energies of structures (the reference structures), in order
Evaluate = Callable[[Sequence[Atoms]], Sequence[float]]


@dataclass
class MethodDiagram:
    """One method's phase diagram: references, E_clean, phases, their lines, Δμ_O range and winners."""

    method: str
    refs: ReferenceEnergies
    clean_energy: float
    phases: list[Phase]
    lines: list[Line]
    mu_range: tuple[float, float]
    winners: list[Interval]

    def to_dict(self) -> dict:
        return {"method": self.method, "references": self.refs.to_dict(), "clean_energy": self.clean_energy,
                "mu_o_range": list(self.mu_range),
                "phases": [{"name": p.name, "n_cu": p.n_cu, "n_o": p.n_o, "energy": p.energy} for p in self.phases],
                "lines_ev_per_A2": [{"name": ln.name, "intercept": ln.intercept, "slope": ln.slope}
                                    for ln in self.lines],
                "winners": [{"name": w.name, "from": w.start, "to": w.end} for w in self.winners]}


@dataclass
class CompositionRow:
    """One composition's numbers for the report."""

    problem: str
    name: str
    n_cu: int
    n_o: int
    minima: int
    backbone_energy: float
    dft_energy: float | None  # the lowest DFT point among its minima
    dft_rank: int | None  # the backbone rank of that minimum
    labelled: int  # minima with a DFT point


@dataclass
class PhaseDiagram:
    backbone: str
    protocol: str
    area: float  # Å²
    backbone_diagram: MethodDiagram
    dft: MethodDiagram | None
    rows: list[CompositionRow]
    notes: list[str] = field(default_factory=list)
    #: backbone + Δ, each composition left out of its own Δ-model's fit (:mod:`.corrected`)
    corrected: MethodDiagram | None = None
    held_out: list = field(default_factory=list)  # list[corrected.HeldOut]

    @property
    def methods(self) -> list[MethodDiagram]:
        """The backbone's diagram, the corrected one and DFT's, those that exist, in that order."""
        return [m for m in (self.backbone_diagram, self.corrected, self.dft) if m is not None]


def composition_counts(atoms: Atoms, clean: Atoms) -> tuple[int, int]:
    """ΔN_Cu (Cu beyond the clean slab's) and N_O of a structure."""
    symbols, reference = atoms.get_chemical_symbols(), clean.get_chemical_symbols()
    return symbols.count("Cu") - reference.count("Cu"), symbols.count("O")


def _row(problem: ProblemMinima, clean: Atoms, points: dict[str, DftPoint]) -> CompositionRow:
    n_cu, n_o = composition_counts(problem.minima[0], clean)
    found = [(dft_of(members, points, problem.n_slab), rank) for rank, members in enumerate(problem.members, start=1)]
    found = [(p, rank) for p, rank in found if p is not None]
    best = min(found, key=lambda pr: pr[0].energy, default=(None, None))
    return CompositionRow(problem.problem, problem.label, n_cu, n_o, len(problem.minima), problem.energies[0],
                          None if best[0] is None else best[0].energy, best[1], len(found))


def method_diagram(method: str, refs: ReferenceEnergies, clean_energy: float, phases: list[Phase], area: float,
                   mu_min: float, mu_max: float | None, lines: list[Line] | None = None) -> MethodDiagram:
    """A method's diagram; ``lines`` given when they do not all follow from ``refs`` and ``clean_energy``
    (the corrected diagram's, each from its own model)."""
    lines = lines_for(phases, clean_energy, refs, area) if lines is None else lines
    lo, hi = mu_range(refs, mu_min, mu_max)
    return MethodDiagram(method, refs, clean_energy, phases, lines, (lo, hi), winners(lines, lo, hi))


def _check_protocol(points: dict[str, DftPoint], protocol: str) -> None:
    for point in points.values():
        if point.atoms.info.get("protocol") != protocol:
            raise ReferenceError(f"labelled structure {point.atoms.info.get('plan_id')} was labelled with protocol "
                                 f"{point.atoms.info.get('protocol')!r}, the searches' problems name {protocol!r}")


def build(pooled: dict[str, ProblemMinima], backbone: str, references: Sequence[Atoms], evaluate: Evaluate,
          labelled: Sequence[Atoms] = (), mu_min: float = MU_O_MIN, mu_max: float | None = None,
          where: str = "references.extxyz") -> PhaseDiagram:
    """The phase diagram of ``pooled`` (:func:`uipbench.oxide.searches.pool`) for ``backbone``.

    ``references``: the labelled reference structures (DFT energies attached); ``evaluate``: the backbone's
    energies of structures; ``labelled``: the DFT points of minima (``datasets/cu-o/structures.extxyz``).
    """
    clean_problem = next(p for p in pooled.values() if p.is_clean)
    protocol = clean_problem.protocol
    check_references(references, protocol, where)
    points = dft_points(labelled)
    _check_protocol(points, protocol)
    clean = clean_problem.minima[0]
    area = float(np.linalg.norm(np.cross(clean.cell[0], clean.cell[1])))
    rows = [_row(p, clean, points) for p in pooled.values() if not p.is_clean]
    bb_refs = reference_energies(references, evaluate(references), backbone, where)
    bb_phases = [Phase(r.name, r.n_cu, r.n_o, r.backbone_energy) for r in rows]
    bb = method_diagram(backbone, bb_refs, clean_problem.energies[0], bb_phases, area, mu_min, mu_max)
    notes: list[str] = []
    clean_dft = dft_of(clean_problem.members[0], points, clean_problem.n_slab)
    dft = None
    if clean_dft is None:
        notes.append("no DFT point of the clean slab yet (`uipbench oxide label`): no DFT phase diagram")
    else:
        dft_refs = dft_references(references, DFT, where)
        dft_phases = [Phase(r.name, r.n_cu, r.n_o, r.dft_energy) for r in rows if r.dft_energy is not None]
        missing = [r.name for r in rows if r.dft_energy is None]
        if missing:
            notes.append(f"no DFT point yet for {', '.join(missing)}: left out of the DFT phase diagram")
        dft = method_diagram(DFT, dft_refs, clean_dft.energy, dft_phases, area, mu_min, mu_max)
    return PhaseDiagram(backbone, protocol, area, bb, dft, rows, notes)


def delta_g_table(diagram: PhaseDiagram, mus: Sequence[float]) -> list[dict]:
    """ΔG (meV/Å²) of every phase of each method at each Δμ_O of ``mus``: one row per (method, phase)."""
    rows = []
    for method in diagram.methods:
        for line in method.lines:
            row = {"method": method.method, "phase": line.name, "n_cu": line.n_cu, "n_o": line.n_o}
            row.update({f"{mu:+.2f} eV": 1000.0 * line.at(mu) for mu in mus})
            rows.append(row)
    return rows


def table_mus(diagram: PhaseDiagram, step: float = 0.5) -> list[float]:
    """Δμ_O values of the table: the O-poor end, every ``step`` eV above it, and each method's O-rich end."""
    lo = diagram.backbone_diagram.mu_range[0]
    highs = {m.mu_range[1] for m in diagram.methods}
    values = set(np.arange(np.ceil(lo / step) * step, min(highs), step).round(6).tolist()) | {lo} | highs
    return sorted(values)
