"""The shared conformance test every backbone adapter must pass.

Runs in each backbone environment (``make test`` does that) and covers every card whose
package is importable there: real weights when present, otherwise the real architecture
with random weights (the weights-dependent checks are then the same, only the numbers differ).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import fcc111

from uipbench.adapters.base import BackboneInputError, check_conformance
from uipbench.adapters.card import WeightsError, all_cards, get_card
from uipbench.adapters.registry import importable_here, load_backbone, status

HERE = [name for name, card in sorted(all_cards().items()) if importable_here(card)]
if not HERE:
    pytest.skip("no backbone package is importable in this environment", allow_module_level=True)

_loaded: dict[str, object] = {}


def backbone_for(name: str):
    """Real weights when present, else the same architecture with random weights (no download try)."""
    if name not in _loaded:
        present = status(get_card(name)).weights_present
        try:
            _loaded[name] = load_backbone(name, in_process=True, random_weights=not present)
        except WeightsError:  # present by the card's rules, but e.g. a corrupt or mismatched file
            _loaded[name] = load_backbone(name, in_process=True, random_weights=True)
    return _loaded[name]


@pytest.fixture(params=HERE)
def backbone(request):
    return backbone_for(request.param)


def test_conformance(backbone, slab_structures):
    check_conformance(backbone, slab_structures)


def test_width_matches_card(backbone, slab_structures):
    batch = backbone.embed(slab_structures[:1])
    assert batch.metadata.width == backbone.card.embedding_width
    assert batch.structures[0].embedding.shape[1] == backbone.card.embedding_width
    assert batch.metadata.backbone == backbone.name


def test_energy_matches_the_package_calculator(backbone, slab_structures):
    """embed's energy is the package's own ASE calculator energy (same model) to 1e-5 eV."""
    calc = backbone.calculator()
    batch = backbone.embed(slab_structures)
    for atoms, emb in zip(slab_structures, batch.structures):
        periodic = atoms.copy()
        periodic.pbc = True
        periodic.calc = calc
        assert emb.energy == pytest.approx(periodic.get_potential_energy(), abs=1e-5)


def test_slab_pbc_false_along_z_equals_fully_periodic(backbone, slab_structures):
    slab = slab_structures[0]
    periodic = slab.copy()
    periodic.pbc = True
    a, b = backbone.embed([slab, periodic]).structures
    assert a.energy == pytest.approx(b.energy, abs=1e-6)
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)


def test_too_little_vacuum_is_an_error(backbone):
    slab = fcc111("Cu", size=(2, 2, 3), a=3.632, vacuum=1.0, periodic=False)
    slab.pbc = (True, True, False)
    with pytest.raises(BackboneInputError, match="vacuum"):
        backbone.embed([slab])


def test_forces_are_minus_energy_gradient_or_direct(backbone, slab_structures):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = backbone.embed(slab_structures[:1], forces=True)
    forces = batch.structures[0].forces
    assert forces.shape == (len(slab_structures[0]), 3) and np.all(np.isfinite(forces))
    # energies leave autograd cleanly (no float() of a tensor that requires grad, in our code or theirs)
    assert not [str(w.message) for w in caught if "requires_grad=True to a scalar" in str(w.message)]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Atoms(cell=[10, 10, 10], pbc=True), "empty structure"),
        (lambda: Atoms("CuS", positions=[[0, 0, 0], [np.nan, 0, 2]], cell=[8, 8, 8], pbc=True), "NaN"),
        (lambda: Atoms("CuS", positions=[[0, 0, 0], [0, 0, 2.1]]), "no 3D cell"),
        (lambda: Atoms("CuOg", positions=[[0, 0, 0], [0, 0, 2.1]], cell=[8, 8, 8], pbc=True), "Og"),
    ],
    ids=["empty", "nan-positions", "no-cell", "unknown-element"],
)
def test_bad_input_is_a_clear_error(backbone, make, message):
    with pytest.raises(BackboneInputError, match=message):
        backbone.embed([make()])
    with pytest.raises(BackboneInputError, match=message):
        backbone.forward_differentiable(make())
