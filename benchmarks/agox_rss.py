"""One AGOX random structure search on a uipbench problem card (run by ``bench_engines.py``).

Runs in an environment with ``agox==3.11.1 ase==3.27.0 numpy==2.2.6 chgnet==0.4.2`` and uipbench's
source on ``PYTHONPATH`` (for the problem card and its template slab only). AGOX is GPL-3.0-only;
this script only calls it, is not part of the uipbench package, and is run only for the benchmark.
Writes ``OUT/result.json``: the best energy, evaluations, and the CPU seconds of the relaxations.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def environment_for(problem):
    """AGOX's Environment: the card's template slab and adsorbates, candidates placed in the card's height
    range. Relaxed as uipbench relaxes them: only the card's fixed layers held (AGOX's default would freeze
    the whole template), and no box constraint during the relaxation (uipbench's is free)."""
    from agox.environments import Environment
    from ase.constraints import FixAtoms

    template = problem.template()
    template.pbc = [True, True, False]
    top = template.positions[:, 2].max()
    low, high = problem.height_range
    box = template.cell.array.copy()
    box[2] = [0.0, 0.0, high - low]
    symbols = "".join(f"{element}{count}" for element, count in problem.composition)
    fixed = [int(i) for c in template.constraints if isinstance(c, FixAtoms) for i in c.get_indices()]
    template.set_constraint()
    environment = Environment(template=template, symbols=symbols, confinement_cell=box,
                              confinement_corner=np.array([0.0, 0.0, top + low]), box_constraint_pbc=[True, True, False],
                              fix_template=False, use_box_constraint=False)
    return environment, [FixAtoms(indices=fixed)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", required=True)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import torch
    from agox import AGOX
    from agox.databases import Database
    from agox.evaluators import LocalOptimizationEvaluator
    from agox.generators import RandomGenerator
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    from uipbench.search.problem import load_problem

    torch.set_num_threads(1)
    problem = load_problem(args.problem)
    environment, constraints = environment_for(problem)
    calc = CHGNetCalculator(model=CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False), use_device="cpu")
    database = Database(filename=str(args.out / "db.db"), order=3)
    generator = RandomGenerator(**environment.get_confinement(), environment=environment, order=1,
                                contiguous=False)
    evaluator = LocalOptimizationEvaluator(calc, gets={"get_key": "candidates"},
                                           optimizer_run_kwargs={"fmax": 0.05, "steps": 300},
                                           store_trajectory=False, order=2,
                                           constraints=constraints)
    cpu = time.process_time()
    AGOX(generator, database, evaluator, seed=args.seed).run(N_iterations=args.budget)
    cpu = time.process_time() - cpu
    energies = [c.get_potential_energy() for c in database.get_all_candidates()]
    result = {"best_energy": float(min(energies)), "evaluations": len(energies), "relaxation_cpu_seconds": cpu}
    tmp = args.out / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, args.out / "result.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
