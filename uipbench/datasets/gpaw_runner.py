"""Label one structure with GPAW under the reference protocol.

Run by Debian's interpreter, not by the suite's virtual environment::

    /usr/bin/python3 gpaw_runner.py job.json result.json

``job.json`` holds ``numbers``, ``positions``, ``cell``, ``pbc`` and ``protocol``
(a :class:`ReferenceProtocol` as a dict); a bulk crystal's or a molecule's job also holds its
``kind``, its ``kpts`` and, for a molecule, ``spinpol`` and the initial ``magmoms``
(``protocol.kind_settings``), which take the place of the protocol's slab settings.  A job with ``relax``
(``{"fmax": eV/Å, "steps": N, "fixed": [atom indices]}``) is a DFT relaxation: ASE's BFGS with those atoms held,
every step appended to ``<result>.traj`` (ASE's trajectory format), so a killed relaxation resumes from its
last step (the BFGS Hessian starts afresh); its result adds the relaxed ``positions``, the ``initial_energy``
(the single point at the start), ``steps`` (BFGS steps in all, resumed ones included), ``converged`` and
``fmax``; a trajectory that starts elsewhere (another job under the same name) is discarded, not resumed.
The result (energy, forces, GPAW version, wall time) is written atomically to ``result.json``, by MPI rank 0 alone
when run as ``mpirun -np N python3 gpaw_runner.py ...``.  Only the standard library,
NumPy, ASE and GPAW are imported here.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time


def kpoints(protocol: dict, cell_lengths) -> tuple[int, int, int]:
    density = protocol["kpoint_density_angstrom"]
    return (
        max(1, math.ceil(density / cell_lengths[0])),
        max(1, math.ceil(density / cell_lengths[1])),
        1,
    )


def calculator_settings(job: dict) -> dict:
    """GPAW's keyword arguments for ``job`` (``txt`` aside): the protocol's, with a bulk crystal's or a
    molecule's k-points and spin from the job."""
    protocol = job["protocol"]
    lengths = [math.sqrt(sum(x * x for x in vector)) for vector in job["cell"]]
    kpts = tuple(job["kpts"]) if "kpts" in job else kpoints(protocol, lengths)
    return {
        "mode": protocol["mode"],
        "basis": protocol["basis"],
        "xc": protocol["xc"],
        "spinpol": bool(job.get("spinpol", protocol["spinpol"])),
        "setups": protocol["setups"],
        "kpts": kpts,
    }


class _Appender:
    """Writes the optimiser's atoms to the trajectory at each call, skipping the first when resuming (that
    frame, the last of the earlier run, is already there)."""

    def __init__(self, trajectory, skip_first: bool) -> None:
        self.trajectory, self.skip = trajectory, skip_first

    def __call__(self) -> None:
        if self.skip:
            self.skip = False
            return
        self.trajectory.write()


def relax(atoms, settings: dict, trajectory: str, log: str) -> dict:
    """BFGS on ``atoms`` (their calculator attached) to ``settings["fmax"]`` in at most ``settings["steps"]``
    steps in all, resuming ``trajectory`` when its first frame is this start (another start's steps are
    discarded).  ``steps`` in the result counts BFGS steps, resumed ones included."""
    import numpy as np
    from ase.constraints import FixAtoms
    from ase.io import read
    from ase.io.trajectory import Trajectory
    from ase.optimize import BFGS

    atoms.set_constraint(FixAtoms(indices=settings.get("fixed", [])))
    frames = read(trajectory, ":") if os.path.exists(trajectory) and os.path.getsize(trajectory) > 0 else []
    if frames and not np.allclose(frames[0].positions, atoms.positions, atol=1e-6):
        frames = []
    if frames:
        done, initial = len(frames) - 1, float(frames[0].get_potential_energy())
        atoms.positions = frames[-1].positions
    else:
        done, initial = 0, float(atoms.get_potential_energy())
    remaining = int(settings["steps"]) - done
    with Trajectory(trajectory, "a" if frames else "w", atoms) as traj:
        optimizer = BFGS(atoms, logfile=log)
        optimizer.attach(_Appender(traj, skip_first=bool(frames)))
        if remaining > 0:  # ASE 3.22 takes steps=0 as no cap at all
            optimizer.run(fmax=settings["fmax"], steps=remaining)
            done += optimizer.nsteps
    forces = atoms.get_forces()  # constrained: the fixed atoms' are zero
    fmax = float((forces ** 2).sum(axis=1).max() ** 0.5)
    return {"positions": atoms.positions.tolist(), "steps": done, "converged": fmax < settings["fmax"],
            "initial_energy": initial, "fmax": fmax}


def label(job: dict, txt: str, trajectory: str | None = None) -> dict:
    import gpaw
    from ase import Atoms
    from gpaw import GPAW, FermiDirac

    protocol = job["protocol"]
    atoms = Atoms(
        numbers=job["numbers"], positions=job["positions"], cell=job["cell"], pbc=job["pbc"]
    )
    if "magmoms" in job:
        atoms.set_initial_magnetic_moments(job["magmoms"])
    settings = calculator_settings(job)
    calc = GPAW(occupations=FermiDirac(protocol["fermi_dirac_width_ev"]), txt=txt, **settings)
    atoms.calc = calc
    start = time.perf_counter()
    relaxation = None
    if "relax" in job:
        if trajectory is None:
            raise ValueError("a relaxation job needs a trajectory file to write its steps to")
        relaxation = relax(atoms, job["relax"], trajectory, os.path.splitext(trajectory)[0] + ".bfgs.log")
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces(apply_constraint=False)
    elapsed = time.perf_counter() - start
    result = {
        "energy": float(energy),
        "forces": forces.tolist(),
        "gpaw_version": gpaw.__version__,
        "kpts": list(settings["kpts"]),
        "wall_seconds": elapsed,
    }
    if settings["spinpol"]:
        result["magmom"] = float(atoms.get_magnetic_moment())
    if relaxation is not None:
        result.update(relaxation)
    return result


def main(argv: list[str]) -> int:
    job_path, result_path = argv[1], argv[2]
    with open(job_path) as fh:
        job = json.load(fh)
    base = os.path.splitext(result_path)[0]
    result = label(job, base + ".gpaw.txt", base + ".traj")
    from gpaw.mpi import world

    if world.rank != 0:  # every rank holds the same result; one writes it
        return 0
    directory = os.path.dirname(os.path.abspath(result_path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(result, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
