"""What a search spends its time on: relaxations.  Ratios side by side, on the same candidates.

Runs inside a backbone's environment (the differentiable path needs the package in-process):

    .venvs/chgnet/bin/python benchmarks/bench_search.py --backbone chgnet-0.3.0 --problem cu-s3-3x3

1. fits a Δ-GPR (``atomic``, sparse) on the backbone's embeddings of all shipped data;
2. draws ``--candidates`` random candidates of the problem (the search's own generator, seeds 0..K-1);
3. relaxes each of them, one at a time, with ASE BFGS (fmax 0.05 eV/Å, as ``uipbench search``) using
   (a) the package's ASE calculator (what a raw search uses), (b) ``DeltaCalculator`` (what a
   Δ search uses) and (c) the bare backbone on the same differentiable path as (b), no Δ;
4. relaxes the same candidates with FIRE: one at a time with ASE's FIRE (package calculator, and the
   differentiable path of (c)), and all together with one batched forward per step
   (``uipbench.search.batched``; the batched forward is the adapter's ``embed(forces=True)``, the
   same model path as (c), so batched over (c)-one-by-one isolates what batching itself gains).
The one-by-one methods take turns candidate by candidate; times are process CPU seconds.
Reports CPU seconds per relaxation and per force call, steps per relaxation, relaxed candidates per
CPU-minute, and the ratios.  Results: ``reports/benchmarks/search.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ase.calculators.calculator import Calculator, all_changes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fit_delta(backbone: Any, systems: list[str]) -> tuple[Any, dict[str, Any]]:
    """The search's Δ-model: ``uipbench.harness.fit`` (what ``uipbench delta fit`` runs), timed in two parts."""
    from uipbench.harness.fit import fit_residuals, residuals, shipped_structures

    structures = shipped_structures(systems)
    start = time.perf_counter()
    embeddings, residual = residuals(backbone, structures)
    embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    delta = fit_residuals(embeddings, residual, aggregation="atomic", sparse=True, random_state=0)
    return delta, {"systems": systems, "structures": len(structures), "atoms": int(sum(len(a) for a in structures)),
                   "aggregation": "atomic", "sparse": bool(delta.sparse_), "inducing": int(len(delta.support_)),
                   "embed_seconds": embed_seconds, "fit_seconds": time.perf_counter() - start}


class DifferentiableCalculator(Calculator):
    """The bare backbone through ``forward_differentiable`` (forces by autograd), as DeltaCalculator runs it."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, backbone: Any):
        super().__init__()
        self.backbone = backbone

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import torch

        super().calculate(atoms, properties, system_changes)
        out = self.backbone.forward_differentiable(self.atoms)
        (grad,) = torch.autograd.grad(out.energy, out.positions)
        energy = float(out.energy.detach())
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": -grad.detach().double().numpy().reshape(len(self.atoms), 3)}


def summarise(relaxations: list[Any]) -> dict[str, Any]:
    cpu = [r.cpu_seconds for r in relaxations]
    steps = [r.steps for r in relaxations]
    calls = sum(s + 1 for s in steps)  # one force call per step plus the final check
    return {"relaxations": len(relaxations), "converged": sum(r.converged for r in relaxations),
            "cpu_seconds_per_relaxation": statistics.fmean(cpu), "cpu_seconds_per_relaxation_each": cpu,
            "wall_seconds_per_relaxation": statistics.fmean(r.wall_seconds for r in relaxations),
            "steps_per_relaxation": statistics.fmean(steps), "steps_each": steps,
            "cpu_seconds_per_force_call": sum(cpu) / calls,
            "relaxed_per_cpu_minute": 60.0 * len(relaxations) / sum(cpu),
            "energies": [r.energy for r in relaxations]}


def one_by_one(candidates: list[Any], methods: dict[str, tuple[Callable[[], Any], str]]) -> dict[str, dict[str, Any]]:
    """Each method (calculator factory, optimizer) relaxes every candidate; the methods take turns candidate by
    candidate, so a change in the machine's load during the run hits all of them alike."""
    from uipbench.search.relax import RelaxSettings, relax

    calculators = {name: make() for name, (make, _) in methods.items()}
    done: dict[str, list[Any]] = {name: [] for name in methods}
    for candidate in candidates:
        for name, (_, optimizer) in methods.items():
            done[name].append(relax(candidate, calculators[name], RelaxSettings(optimizer=optimizer)))
    return {name: summarise(relaxations) for name, relaxations in done.items()}


#: (name, numerator method, denominator method, quantity)
RATIOS = (
    ("delta_over_package_cpu_per_relaxation", "bfgs_delta_calculator", "bfgs_package_calculator",
     "cpu_seconds_per_relaxation"),
    ("delta_over_package_cpu_per_force_call", "bfgs_delta_calculator", "bfgs_package_calculator",
     "cpu_seconds_per_force_call"),
    ("delta_over_bare_differentiable_cpu_per_relaxation", "bfgs_delta_calculator", "bfgs_bare_differentiable",
     "cpu_seconds_per_relaxation"),
    ("delta_over_bare_differentiable_cpu_per_force_call", "bfgs_delta_calculator", "bfgs_bare_differentiable",
     "cpu_seconds_per_force_call"),
    ("bare_differentiable_over_package_cpu_per_force_call", "bfgs_bare_differentiable", "bfgs_package_calculator",
     "cpu_seconds_per_force_call"),
    ("batched_fire_over_one_by_one_fire_throughput", "fire_batched", "fire_bare_differentiable",
     "relaxed_per_cpu_minute"),
    ("batched_fire_over_one_by_one_fire_package_calculator_throughput", "fire_batched", "fire_package_calculator",
     "relaxed_per_cpu_minute"),
    ("batched_fire_over_one_by_one_bfgs_package_calculator_throughput", "fire_batched", "bfgs_package_calculator",
     "relaxed_per_cpu_minute"),
)


NOTES = (
    "package_calculator: the package's own ASE calculator (Backbone.calculator(); for CHGNet its CHGNetCalculator, "
    "which computes energy, forces, stress and magmoms every call)",
    "bare_differentiable: the adapter's forward_differentiable with autograd forces (energy and forces only), "
    "the path DeltaCalculator runs; delta_calculator adds the Δ-GPR and its σ to it",
    "fire_batched: all candidates in one backbone.embed(forces=True) call per step (the differentiable path)",
    "times: process CPU seconds (time.process_time), torch threads as given; force calls = steps + 1 per relaxation",
)


def ratios(methods: dict[str, dict[str, Any]]) -> dict[str, float]:
    return {name: methods[a][key] / methods[b][key] for name, a, b, key in RATIOS if a in methods and b in methods}


def main() -> int:
    import torch

    from uipbench.adapters.registry import load_backbone
    from uipbench.delta import DeltaCalculator
    from uipbench.search import load_problem
    from uipbench.search.batched import backbone_energies_forces, relax_batched
    from uipbench.search.candidates import CandidateGenerator
    from uipbench.search.engine import rng_for

    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="chgnet-0.3.0")
    parser.add_argument("--problem", default="cu-s3-3x3")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--systems", nargs="*", default=["cu-s", "ag-s", "au-s"])
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks" / "search.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    backbone = load_backbone(args.backbone, in_process=True)
    delta, delta_info = fit_delta(backbone, args.systems)
    generator = CandidateGenerator(load_problem(args.problem))
    candidates = [generator.random(rng_for(0, k, 0)) for k in range(args.candidates)]
    for c in candidates:
        c.pbc = True

    methods = one_by_one(candidates, {
        "bfgs_package_calculator": (backbone.calculator, "BFGS"),
        "bfgs_delta_calculator": (lambda: DeltaCalculator(backbone, delta), "BFGS"),
        "bfgs_bare_differentiable": (lambda: DifferentiableCalculator(backbone), "BFGS"),
        "fire_package_calculator": (backbone.calculator, "FIRE"),
        "fire_bare_differentiable": (lambda: DifferentiableCalculator(backbone), "FIRE"),
    })
    methods["fire_batched"] = summarise(relax_batched(candidates, backbone_energies_forces(backbone)))

    result = {"backbone": args.backbone, "problem": args.problem, "atoms": len(candidates[0]),
              "candidates": args.candidates, "torch_threads": args.threads, "fmax": 0.05,
              "machine": f"{os.cpu_count()} cores, shared (a DFT run and other jobs); load average "
                         f"{load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
              "delta_model": delta_info, "notes": list(NOTES), "ratios": ratios(methods), "methods": methods}
    print(json.dumps(result["ratios"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
