"""Batched FIRE takes ASE's FIRE steps: several toy candidates relaxed together equal one-by-one ASE FIRE."""
from __future__ import annotations

import numpy as np
from ase.optimize import FIRE

from tests.core.test_search_toy import ToyBackbone, toy_problem
from uipbench.search.batched import relax_batched
from uipbench.search.candidates import CandidateGenerator
from uipbench.search.engine import rng_for


def test_batched_fire_equals_ase_fire_one_by_one():
    backbone = ToyBackbone()
    generator = CandidateGenerator(toy_problem())
    candidates = [generator.random(rng_for(11, k, 0)) for k in range(2)]
    for c in candidates:
        c.pbc = True
    calls = []

    def energies_forces(structures):
        calls.append(len(structures))
        results = [backbone.energy_forces(a) for a in structures]
        return np.array([e for e, _ in results]), [f for _, f in results]

    batched = relax_batched(candidates, energies_forces, fmax=0.05, steps=400)
    for candidate, result in zip(candidates, batched):
        atoms = candidate.copy()
        atoms.calc = backbone.calculator()
        optimizer = FIRE(atoms, logfile=None)
        assert optimizer.run(fmax=0.05, steps=400) and result.converged
        assert result.steps == optimizer.nsteps
        np.testing.assert_allclose(result.atoms.positions, atoms.positions, atol=1e-9)
        assert result.energy == atoms.get_potential_energy() and result.max_force < 0.05
        np.testing.assert_array_equal(result.atoms.positions[:4], candidate.positions[:4])  # fixed atoms stay
    assert calls[0] == 2 and sorted(calls, reverse=True) == calls  # converged structures leave the batch
    assert len(calls) == max(r.steps for r in batched) + 1
