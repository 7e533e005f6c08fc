"""The conformance check every backbone adapter passes (run by ``tests/backbones`` in each environment)."""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import numpy as np
from ase import Atoms

from .interface import Backbone, Loader


def check_conformance(backbone: Backbone, structures: Sequence[Atoms], atol: float = 1e-5) -> None:
    """Shared conformance check run by every adapter's tests; raises AssertionError on failure.

    * the input structures are not mutated;
    * shapes and dtypes: embedding [n_atoms, width] float64, numbers match the input;
    * the batched result equals the one-by-one result;
    * repeated calls give identical results;
    * the differentiable path agrees with ``embed`` and is connected to the positions.
    """
    import torch

    before = [(a.positions.copy(), a.numbers.copy(), a.cell.array.copy(), a.pbc.copy(), dict(a.info))
              for a in structures]
    width = backbone.metadata().width
    batch = backbone.embed(structures)
    assert len(batch) == len(structures), "one result per structure"
    for atoms, emb in zip(structures, batch.structures):
        assert emb.embedding.shape == (len(atoms), width), f"embedding shape {emb.embedding.shape}"
        assert emb.embedding.dtype == np.float64, f"embedding dtype {emb.embedding.dtype}"
        assert np.array_equal(emb.numbers, atoms.numbers), "numbers must follow the input order"
        assert np.isfinite(emb.energy) and np.all(np.isfinite(emb.embedding))
    for (pos, num, cell, pbc, info), atoms in zip(before, structures):
        assert np.array_equal(pos, atoms.positions), "positions were mutated"
        assert np.array_equal(num, atoms.numbers), "numbers were mutated"
        assert np.array_equal(cell, atoms.cell.array), "cell was mutated"
        assert np.array_equal(pbc, atoms.pbc), "pbc was mutated"
        assert info == dict(atoms.info), "info was mutated"
    singles = [backbone.embed([a]).structures[0] for a in structures]
    for b, s in zip(batch.structures, singles):
        assert abs(b.energy - s.energy) < atol, f"batched energy {b.energy} != single {s.energy}"
        np.testing.assert_allclose(b.embedding, s.embedding, atol=atol, err_msg="batched != one-by-one")
    again = backbone.embed(structures)
    for a, b in zip(batch.structures, again.structures):
        assert a.energy == b.energy and np.array_equal(a.embedding, b.embedding), "repeat calls differ"
    out = backbone.forward_differentiable(structures[0])
    assert out.embedding.shape == (len(structures[0]), width)
    assert abs(out.energy.item() - batch.structures[0].energy) < atol, "differentiable energy != embed energy"
    np.testing.assert_allclose(out.embedding.detach().cpu().double().numpy(), batch.structures[0].embedding,
                               atol=atol, err_msg="differentiable embedding != embed embedding")
    (grad,) = torch.autograd.grad(out.embedding.sum(), out.positions, allow_unused=True)
    assert grad is not None and torch.any(grad != 0), "embedding is not connected to the positions"


def check_load_signature(load: Callable[..., Backbone]) -> None:
    """A family's ``load`` has exactly the parameters (names, kinds, defaults) of :class:`Loader`."""
    expected = list(inspect.signature(Loader.__call__).parameters.values())[1:]  # without self
    found = list(inspect.signature(load).parameters.values())
    shape = [(p.name, p.kind, p.default) for p in expected]
    assert [(p.name, p.kind, p.default) for p in found] == shape, (
        f"{load.__module__}.load{inspect.signature(load)} differs from the one load signature "
        f"{inspect.signature(Loader.__call__)}")
