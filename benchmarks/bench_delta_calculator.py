"""DeltaCalculator on a real backbone: forces vs finite differences, a relaxation, and its cost.

Runs inside a backbone's environment (the differentiable path needs the package in-process):

    .venvs/chgnet/bin/python benchmarks/bench_delta_calculator.py --backbone chgnet-0.3.0
    .venvs/sevennet/bin/python benchmarks/bench_delta_calculator.py --backbone sevennet-0

1. fits a Δ-GPR on the backbone's embeddings of the shipped cu-s structures;
2. compares DeltaCalculator forces with central finite differences of its own energy
   (step 0.001 Å, backbone in float64), for the total and for the Δ part alone;
3. relaxes a Cu(111)+S slab with ASE's BFGS to fmax 0.05 eV/Å;
4. times energy+forces of DeltaCalculator, of the bare backbone on the same differentiable
   path, and of the package's own ASE calculator, side by side, reported as ratios.
Results: reports/benchmarks/delta_calculator-<backbone>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: central-difference step (Å); the backbone runs in float64 here (``--precision``), so round-off
#: is negligible and the step only has to be small against the curvature of the surface
FD_STEP = 0.001
sys.path.insert(0, str(ROOT))


def delta_forces(calc, atoms) -> np.ndarray:
    """−dΔ/dpositions alone, through the backbone's embedding."""
    import torch

    out = calc.backbone.forward_differentiable(atoms)
    energy, _ = calc.delta.predict_torch(out.embedding, out.numbers)
    (grad,) = torch.autograd.grad(energy, out.positions)
    return -grad.detach().double().numpy()


def finite_difference_check(calc, atoms, indices, step: float = FD_STEP) -> tuple[float, float]:
    """Max |F_analytic − F_central-difference| (eV/Å) for the total energy and for the Δ part alone."""
    atoms = atoms.copy()
    atoms.calc = calc
    analytic = atoms.get_forces()
    delta_analytic = delta_forces(calc, atoms)
    worst_total = worst_delta = 0.0
    for i in indices:
        for k in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[i, k] += sign * step
                moved.calc = calc
                moved.get_potential_energy()
                energies.append((calc.results["energy"], calc.results["delta_energy"]))
            total = -(energies[0][0] - energies[1][0]) / (2 * step)
            delta = -(energies[0][1] - energies[1][1]) / (2 * step)
            worst_total = max(worst_total, abs(total - analytic[i, k]))
            worst_delta = max(worst_delta, abs(delta - delta_analytic[i, k]))
    return worst_total, worst_delta


def timed_side_by_side(fns: dict, atoms, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, interleaved call by call on the same moved structures
    (so load from other processes hits all of them alike)."""
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        moved = atoms.copy()
        moved.positions += rng.normal(0, 0.01, moved.positions.shape)
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(moved.copy())
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> int:
    import torch
    from ase.constraints import FixAtoms
    from ase.optimize import BFGS

    from uipbench.adapters.registry import load_backbone
    from uipbench.datasets import load
    from uipbench.delta import DeltaCalculator, DeltaGPR

    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="chgnet-0.3.0")
    parser.add_argument("--aggregation", default="atomic")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--precision", default="float64", help="of the backbone model (float32 or float64)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    backbone = load_backbone(args.backbone, in_process=True, precision=args.precision)
    structures = load("cu-s")
    batch = backbone.embed(structures)
    residual = np.array([a.get_potential_energy() for a in structures]) - batch.energies
    delta = DeltaGPR(args.aggregation, random_state=0).fit(batch.structures, residual)
    calc = DeltaCalculator(backbone, delta)

    slab = min(structures, key=len).copy()
    slab.calc = None
    sulfur = [i for i, z in enumerate(slab.numbers) if z == 16]
    fd_total, fd_delta = finite_difference_check(calc, slab, sulfur + [0, len(slab) - len(sulfur) - 1])

    relaxing = slab.copy()
    bottom = relaxing.positions[:, 2] < relaxing.positions[relaxing.numbers != 16, 2].min() + 0.5
    relaxing.set_constraint(FixAtoms(mask=bottom))
    relaxing.calc = calc
    opt = BFGS(relaxing, logfile=None)
    converged = opt.run(fmax=0.05, steps=400)
    fmax = float(np.abs(relaxing.get_forces()).max())

    def bare(atoms):
        out = backbone.forward_differentiable(atoms)
        if out.forces is None:
            torch.autograd.grad(out.energy, out.positions)

    def corrected(atoms):
        atoms.calc = DeltaCalculator(backbone, delta)
        atoms.get_forces()

    package_calc = backbone.calculator()

    def package(atoms):
        atoms = atoms.copy()
        atoms.pbc = True
        atoms.calc = package_calc
        atoms.get_forces()

    for fn in (bare, corrected, package):  # warm-up
        fn(slab.copy())
    seconds = timed_side_by_side({"bare_differentiable": bare, "delta_calculator": corrected,
                                  "package_calculator": package}, slab, args.repeats)
    result = {
        "backbone": args.backbone, "precision": args.precision, "aggregation": args.aggregation, "training_structures": len(structures),
        "fd_max_abs_error_ev_per_angstrom": fd_total, "fd_max_abs_error_delta_part_ev_per_angstrom": fd_delta,
        "fd_step_angstrom": FD_STEP,
        "relaxation": {"converged": bool(converged), "steps": opt.nsteps, "final_fmax": fmax,
                       "energy_std_ev": float(relaxing.calc.results["energy_std"])},
        "seconds_energy_forces": seconds,
        "ratio_delta_over_bare": seconds["delta_calculator"] / seconds["bare_differentiable"],
        "ratio_delta_over_package_calculator": seconds["delta_calculator"] / seconds["package_calculator"],
        "atoms": len(slab),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "reports" / "benchmarks" / f"delta_calculator-{args.backbone}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
