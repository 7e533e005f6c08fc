"""Label one structure with GPAW under the reference protocol.

Run by Debian's interpreter, not by the suite's virtual environment::

    /usr/bin/python3 gpaw_runner.py job.json result.json

``job.json`` holds ``numbers``, ``positions``, ``cell``, ``pbc`` and ``protocol``
(a :class:`ReferenceProtocol` as a dict).  The result (energy, forces, GPAW
version, wall time) is written atomically to ``result.json``, by MPI rank 0 alone
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


def label(job: dict, txt: str) -> dict:
    import gpaw
    from ase import Atoms
    from gpaw import GPAW, FermiDirac

    protocol = job["protocol"]
    atoms = Atoms(
        numbers=job["numbers"], positions=job["positions"], cell=job["cell"], pbc=job["pbc"]
    )
    lengths = atoms.cell.lengths()
    calc = GPAW(
        mode=protocol["mode"],
        basis=protocol["basis"],
        xc=protocol["xc"],
        occupations=FermiDirac(protocol["fermi_dirac_width_ev"]),
        spinpol=protocol["spinpol"],
        setups=protocol["setups"],
        kpts=kpoints(protocol, lengths),
        txt=txt,
    )
    atoms.calc = calc
    start = time.perf_counter()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    elapsed = time.perf_counter() - start
    return {
        "energy": float(energy),
        "forces": forces.tolist(),
        "gpaw_version": gpaw.__version__,
        "kpts": list(kpoints(protocol, lengths)),
        "wall_seconds": elapsed,
    }


def main(argv: list[str]) -> int:
    job_path, result_path = argv[1], argv[2]
    with open(job_path) as fh:
        job = json.load(fh)
    txt = os.path.splitext(result_path)[0] + ".gpaw.txt"
    result = label(job, txt)
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
