"""Several candidates relaxed together: FIRE on each, one batched energy+forces call per step.

The step is ASE's FIRE (``ase.optimize.FIRE`` with its defaults, norms over the whole structure),
kept per structure; what changes is that the forces of every structure still relaxing come from
one call, e.g. one batched forward of the backbone (:func:`backbone_energies_forces`).  A
structure leaves the batch when its largest force on a free atom is below ``fmax`` (ASE's
criterion) or after ``steps`` steps.  ``benchmarks/bench_search.py`` compares the throughput
with one-by-one ASE relaxations.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms

from .relax import Relaxation

#: ASE FIRE defaults
DT, DT_MAX, MAX_STEP, N_MIN, F_INC, F_DEC, A_START, F_A = 0.1, 1.0, 0.2, 5, 1.1, 0.5, 0.1, 0.99

EnergiesForces = Callable[[list[Atoms]], tuple[np.ndarray, list[np.ndarray]]]


@dataclass
class _Fire:
    """The FIRE state of one structure."""

    atoms: Atoms
    v: np.ndarray | None = None
    dt: float = DT
    a: float = A_START
    n_positive: int = 0
    steps: int = 0
    energy: float = float("nan")
    max_force: float = float("inf")
    cpu: float = 0.0
    wall: float = 0.0
    done: bool = field(default=False)

    def step(self, forces: np.ndarray) -> None:
        if self.v is None:
            self.v = np.zeros_like(forces)
        else:
            vf = float(np.vdot(forces, self.v))
            if vf > 0.0:
                self.v = (1.0 - self.a) * self.v + self.a * forces / np.sqrt(np.vdot(forces, forces)) * \
                    np.sqrt(np.vdot(self.v, self.v))
                if self.n_positive > N_MIN:
                    self.dt, self.a = min(self.dt * F_INC, DT_MAX), self.a * F_A
                self.n_positive += 1
            else:
                self.v[:] = 0.0
                self.a, self.dt, self.n_positive = A_START, self.dt * F_DEC, 0
        self.v += self.dt * forces
        dr = self.dt * self.v
        norm = float(np.sqrt(np.vdot(dr, dr)))
        if norm > MAX_STEP:
            dr *= MAX_STEP / norm
        self.atoms.positions = self.atoms.positions + dr
        self.steps += 1


def _constrained(atoms: Atoms, forces: np.ndarray) -> np.ndarray:
    forces = np.array(forces, dtype=np.float64)
    for constraint in atoms.constraints:
        constraint.adjust_forces(atoms, forces)
    return forces


def relax_batched(structures: Sequence[Atoms], energies_forces: EnergiesForces, fmax: float = 0.05,
                  steps: int = 300) -> list[Relaxation]:
    """Relax copies of ``structures`` together; CPU and wall time are shared evenly by the structures
    evaluated in each call."""
    states = [_Fire(a.copy()) for a in structures]
    while True:
        active = [s for s in states if not s.done]
        if not active:
            break
        cpu, wall = time.process_time(), time.perf_counter()
        energies, forces = energies_forces([s.atoms for s in active])
        for state, energy, f in zip(active, energies, forces):
            f = _constrained(state.atoms, f)
            state.energy, state.max_force = float(energy), float(np.sqrt((f ** 2).sum(axis=1).max()))
            if state.max_force < fmax or state.steps >= steps:
                state.done = True
            else:
                state.step(f)
        cpu, wall = (time.process_time() - cpu) / len(active), (time.perf_counter() - wall) / len(active)
        for state in active:
            state.cpu, state.wall = state.cpu + cpu, state.wall + wall
    return [Relaxation(_plain(s.atoms), s.energy, None, s.steps, s.max_force < fmax, s.max_force, s.cpu, s.wall)
            for s in states]


def _plain(atoms: Atoms) -> Atoms:
    out = atoms.copy()
    out.calc = None
    return out


def backbone_energies_forces(backbone: Any) -> EnergiesForces:
    """Energies and forces of several structures from one batched forward of ``backbone``."""
    def call(structures: list[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
        batch = backbone.embed(structures, forces=True)
        return batch.energies, [s.forces for s in batch.structures]

    return call
