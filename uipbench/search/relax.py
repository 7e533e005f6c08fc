"""Local relaxation of one candidate with any ASE calculator (the backbone's, or a DeltaCalculator)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms

from .defaults import FMAX, MAX_STEPS, OPTIMIZERS  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class RelaxSettings:
    fmax: float = FMAX
    steps: int = MAX_STEPS
    optimizer: str = "BFGS"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.fmax > 0 or self.steps < 1:
            raise ValueError(f"fmax must be > 0 and steps >= 1, got fmax={self.fmax}, steps={self.steps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Relaxation:
    """A relaxed candidate: positions, the calculator's energy (and σ for a Δ-model), cost."""

    atoms: Atoms  # relaxed copy, no calculator, the input's pbc and constraints
    energy: float  # eV
    energy_std: float | None  # eV, GP std of the Δ-energy (DeltaCalculator only)
    steps: int
    converged: bool
    max_force: float  # eV/Å on the free atoms at the end
    cpu_seconds: float  # process CPU time (all threads)
    wall_seconds: float


def relax(atoms: Atoms, calculator: Any, settings: RelaxSettings = RelaxSettings(),
          periodic: bool = True) -> Relaxation:
    """Relax a copy of ``atoms`` with ``calculator``; ``periodic`` makes every direction periodic while
    relaxing (what backbones expect; the vacuum was checked against their cutoff beforehand).

    NumPy's BLAS runs single-threaded meanwhile: BFGS diagonalises its 3N x 3N Hessian every step,
    and a multithreaded BLAS made that 19x slower on this loaded 2-core machine (42 x 42 eigh:
    14 ms against 0.76 ms with one thread).
    """
    from ase import optimize
    from threadpoolctl import threadpool_limits

    work = atoms.copy()
    if periodic:
        work.pbc = True
    work.calc = calculator
    cpu, wall = time.process_time(), time.perf_counter()
    optimizer = getattr(optimize, settings.optimizer)(work, logfile=None)
    with threadpool_limits(limits=1, user_api="blas"):  # NumPy's BLAS only (BFGS's eigh), not torch's threads
        converged = bool(optimizer.run(fmax=settings.fmax, steps=settings.steps))
    energy = float(work.get_potential_energy())
    forces = work.get_forces()  # constraints applied: fixed atoms have zero force
    std = getattr(calculator, "results", {}).get("energy_std")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    out = atoms.copy()
    out.positions = work.positions
    out.calc = None
    return Relaxation(out, energy, None if std is None else float(std), int(optimizer.nsteps), converged,
                      float(np.linalg.norm(forces, axis=1).max()), cpu, wall)
