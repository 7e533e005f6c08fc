"""The embedding's Jacobian by central differences of a backbone's embedding (uipbench.delta.jacobian), cached
like embeddings, and the force-label path of fit_delta."""
from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import fcc111
from ase.calculators.singlepoint import SinglePointCalculator

from uipbench.cache import EmbeddingCache
from uipbench.delta.jacobian import displaced_copies, force_labels, jacobian_from_displaced, labelled_atoms
from uipbench.harness.fit import TrainingDataError, fit_delta

from .fake_backbone import FakeBackbone

WIDTHS = (1.5, 2.5, 3.5)  # the fake backbone's radial sums


def slab_with_s(seed: int = 0) -> Atoms:
    rng = np.random.default_rng(seed)
    slab = fcc111("Cu", (2, 2, 2), vacuum=8.0)
    top = slab.positions[:, 2].max()
    for _ in range(2):
        slab.append("S")
        slab.positions[-1] = [*(rng.uniform(0, 1, 2) @ slab.cell.array[:2, :2]), top + 1.8 + rng.uniform(0, 0.4)]
    slab.positions += rng.normal(0, 0.05, slab.positions.shape)
    return slab


def analytic_jacobian(atoms: Atoms, labelled: np.ndarray) -> np.ndarray:
    """∂x_i/∂r_a of x_i,w = Σ_j exp(-(d_ij/w)²) (minimum-image vectors), [k, 3, n, 3]."""
    vec = atoms.get_all_distances(mic=True, vector=True)  # vec[i, j] = r_j - r_i
    n = len(atoms)
    J = np.zeros((len(labelled), 3, n, len(WIDTHS)))
    for w_index, w in enumerate(WIDTHS):
        d2 = (vec**2).sum(-1)
        g = np.exp(-d2 / w**2)
        np.fill_diagonal(g, 0.0)
        # ∂/∂r_i of exp(-d_ij²/w²) = g_ij · 2 (r_j - r_i)/w²; ∂/∂r_j = -that
        for k, a in enumerate(labelled):
            for i in range(n):
                if i == a:
                    J[k, :, i, w_index] = (2.0 / w**2) * (g[a][:, None] * vec[a]).sum(0)
                else:
                    J[k, :, i, w_index] = -(2.0 / w**2) * g[i, a] * vec[i, a]
    return J


def with_dft(atoms: Atoms, seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=float(rng.normal(-50, 1)), forces=rng.normal(0, 0.1, (len(out), 3)))
    out.info["protocol"] = "test"
    return out


def test_adsorbate_atoms_are_those_not_of_the_slab_metal():
    atoms = slab_with_s()
    assert labelled_atoms(atoms).tolist() == [8, 9]
    assert labelled_atoms(atoms, "all").tolist() == list(range(10))
    with pytest.raises(ValueError, match="'metal'.*adsorbate, all"):
        labelled_atoms(atoms, "metal")


def test_the_central_difference_jacobian_is_the_embeddings_derivative(tmp_path):
    atoms = slab_with_s()
    backbone = FakeBackbone()
    forces = np.zeros((len(atoms), 3))
    (labels,) = force_labels(backbone, [atoms], [forces + 1.0], [forces], "adsorbate", cache=EmbeddingCache(tmp_path))
    assert labels.jacobian.shape == (2, 3, 10, 3)
    np.testing.assert_allclose(labels.jacobian, analytic_jacobian(atoms, np.array([8, 9])), atol=1e-6)
    np.testing.assert_allclose(labels.residual, np.ones((2, 3)))


def test_the_displaced_embeddings_are_cached_like_embeddings(tmp_path):
    structures = [slab_with_s(0), slab_with_s(1)]
    backbone, cache = FakeBackbone(), EmbeddingCache(tmp_path)
    zeros = [np.zeros((len(a), 3)) for a in structures]
    first = force_labels(backbone, structures, zeros, zeros, cache=cache)
    calls = backbone.calls
    again = force_labels(backbone, structures, zeros, zeros, cache=cache)
    assert backbone.calls == calls  # nothing recomputed
    assert len(list(tmp_path.rglob("*.npz"))) == 2 * 2 * 6
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.jacobian, b.jacobian)


def test_bad_jacobian_inputs_are_named():
    atoms = slab_with_s()
    with pytest.raises(ValueError, match="step must be positive"):
        displaced_copies(atoms, np.array([8]), step=0.0)
    with pytest.raises(ValueError, match="5 displaced embeddings for 1 labelled atoms"):
        jacobian_from_displaced([np.zeros((10, 3))] * 5, 1)
    with pytest.raises(ValueError, match="2 structures, 1 DFT and 2 backbone force arrays"):
        force_labels(FakeBackbone(), [atoms, atoms], [np.zeros((10, 3))], [np.zeros((10, 3))] * 2)


def test_fit_delta_with_force_labels(tmp_path):
    structures = [with_dft(slab_with_s(s), s) for s in range(6)]
    model = fit_delta(FakeBackbone(), structures, forces="adsorbate", cache=EmbeddingCache(tmp_path))
    assert model.n_force_labels_ == 6 * 2 * 3
    plain = fit_delta(FakeBackbone(), structures, cache=EmbeddingCache(tmp_path))
    assert not hasattr(plain, "n_force_labels_")


def test_fit_delta_refuses_structures_without_dft_forces(tmp_path):
    structures = [with_dft(slab_with_s(s), s) for s in range(4)]
    structures[2].calc = SinglePointCalculator(structures[2], energy=-50.0)
    with pytest.raises(TrainingDataError, match=r"1 structure\(s\) without finite DFT forces \(structure 2\)"):
        fit_delta(FakeBackbone(), structures, forces="adsorbate", cache=EmbeddingCache(tmp_path))
    with pytest.raises(ValueError, match="'some'"):
        fit_delta(FakeBackbone(), structures, forces="some", cache=EmbeddingCache(tmp_path))


def test_a_structure_without_adsorbate_atoms_adds_no_force_rows(tmp_path):
    """A clean slab (nothing but the metal) has no labelled atoms with forces='adsorbate': it adds no rows."""
    structures = [with_dft(slab_with_s(s), s) for s in range(5)]
    clean = fcc111("Cu", (2, 2, 2), vacuum=8.0)
    structures.append(with_dft(clean, 9))
    model = fit_delta(FakeBackbone(), structures, forces="adsorbate", cache=EmbeddingCache(tmp_path))
    assert model.n_force_labels_ == 5 * 2 * 3
