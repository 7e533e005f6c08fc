"""Force residuals in the Δ-fit (uipbench.delta.forces): on a toy differentiable embedding whose Jacobian is
known, the design rows are the model's own forces, and force labels teach the model what energies alone
do not."""
from __future__ import annotations

import numpy as np
import pytest

from uipbench.delta import DeltaGPR
from uipbench.delta.forces import ForceLabelError, ForceLabels

WIDTHS = np.array([0.8, 1.3, 2.0, 3.0])


def toy_embedding(positions: np.ndarray) -> np.ndarray:
    """[n, 4] smooth per-atom features of a cluster: Gaussian-weighted neighbour counts at four widths."""
    d2 = ((positions[:, None] - positions[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return np.exp(-d2[:, :, None] / WIDTHS**2).sum(1)


def toy_energy(positions: np.ndarray) -> float:
    """The 'true' residual: a nonlinear sum over atoms of their features."""
    x = toy_embedding(positions)
    return float(np.sum(np.sin(x @ np.array([0.9, -0.6, 0.4, 0.2])) + 0.3 * x[:, 0] ** 2))


def central_difference(f, positions: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d f / d positions [n, 3, *f.shape] by central differences."""
    out = []
    for a in range(len(positions)):
        for c in range(3):
            p, m = positions.copy(), positions.copy()
            p[a, c] += h
            m[a, c] -= h
            out.append((np.asarray(f(p)) - np.asarray(f(m))) / (2 * h))
    return np.array(out).reshape(len(positions), 3, *np.shape(f(positions)))


def cluster(rng: np.random.RandomState, n: int = 5) -> np.ndarray:
    while True:
        pos = rng.uniform(0, 3.0, (n, 3))
        d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))[np.triu_indices(n, 1)]
        if d.min() > 0.9:
            return pos


def dataset(n_structures: int, seed: int, labelled: slice = slice(None)):
    rng = np.random.RandomState(seed)
    X, y, forces, truth = [], [], [], []
    for _ in range(n_structures):
        pos = cluster(rng)
        numbers = np.full(len(pos), 16)
        X.append((toy_embedding(pos), numbers))
        y.append(toy_energy(pos))
        f = -central_difference(toy_energy, pos)  # [n, 3]
        atoms = np.arange(len(pos))[labelled]
        J = central_difference(toy_embedding, pos)[atoms]  # [k, 3, n, d]
        forces.append(ForceLabels(atoms, f[atoms], J))
        truth.append((pos, f))
    return X, np.array(y), forces, truth


def model(**kw) -> DeltaGPR:
    return DeltaGPR("atomic", sparse=True, n_inducing=60, random_state=0, offset=False, **kw)


def predicted_forces(delta: DeltaGPR, pos: np.ndarray) -> np.ndarray:
    numbers = np.full(len(pos), 16)  # h = 1e-3: predict's kernel (|x|² + |u|² − 2x·u) loses digits at smaller steps
    return -central_difference(lambda p: delta.predict([(toy_embedding(p), numbers)])[0], pos, h=1e-3)


@pytest.fixture(scope="module")
def fitted():
    X, y, forces, truth = dataset(24, seed=1)
    energy_only = model().fit(X, y)
    with_forces = model().fit(X, y, forces=forces)
    return X, y, forces, truth, energy_only, with_forces


def test_the_force_rows_are_the_fitted_models_own_forces(fitted):
    """ΔF from the design rows (Σ_m A w_m row_m) equals −dΔ/dr of the model's predict, by finite differences."""
    X, y, forces, truth, _, delta = fitted
    for s in (0, 5):
        pos = truth[s][0]
        (from_rows,) = delta.predict_forces([X[s]], [forces[s]])
        np.testing.assert_allclose(from_rows, predicted_forces(delta, pos), rtol=1e-5, atol=1e-6)


def test_the_force_rows_with_a_same_species_kernel():
    """Two species, kernel zero across species: the rows are still the model's own forces."""
    X, y, forces, truth = dataset(16, seed=4)
    species = lambda n: np.array([8] + [16] * (n - 1))  # noqa: E731
    X = [(emb, species(len(emb))) for emb, _ in X]
    delta = model(same_species=True).fit(X, y, forces=forces)
    pos = truth[2][0]
    numbers = species(len(pos))
    (from_rows,) = delta.predict_forces([X[2]], [forces[2]])
    fd = -central_difference(lambda p: delta.predict([(toy_embedding(p), numbers)])[0], pos, h=1e-3)
    # predict's differences carry ~3e-5 eV/Å of rounding here (it grows as h shrinks); a wrong mask or sign is O(0.1)
    np.testing.assert_allclose(from_rows, fd, rtol=1e-3, atol=1e-4)


def test_force_labels_make_the_model_fit_the_forces(fitted):
    _, _, _, truth, energy_only, with_forces = fitted
    err = {name: np.mean([np.abs(predicted_forces(m, pos) - f).mean() for pos, f in truth[:6]])
           for name, m in (("energy", energy_only), ("forces", with_forces))}
    assert err["forces"] < 0.5 * err["energy"], err
    assert with_forces.n_force_labels_ == 24 * 5 * 3
    assert with_forces.force_noise_level_ > 0


def test_force_labels_generalise_to_unseen_structures(fitted):
    """At the same training structures, energy + forces beats energies alone on held-out energies and forces."""
    _, _, _, _, energy_only, with_forces = fitted
    X, y, _, truth = dataset(30, seed=7)
    e_err = {name: np.abs(m.predict(X) - y).mean() for name, m in (("energy", energy_only), ("forces", with_forces))}
    f_err = {name: np.mean([np.abs(predicted_forces(m, pos) - f).mean() for pos, f in truth[:8]])
             for name, m in (("energy", energy_only), ("forces", with_forces))}
    assert e_err["forces"] < e_err["energy"], e_err
    assert f_err["forces"] < 0.7 * f_err["energy"], f_err


def test_labels_on_some_atoms_only_and_structures_without_labels():
    X, y, forces, _ = dataset(10, seed=3, labelled=slice(0, 2))
    forces[3] = None
    delta = model().fit(X, y, forces=forces)
    assert delta.n_force_labels_ == 9 * 2 * 3


def test_the_std_of_a_force_trained_model_is_finite_and_survives_save_and_load(tmp_path, fitted):
    from uipbench.delta.io import load, save

    X, _, _, _, _, delta = fitted
    mean, std = delta.predict(X[:4], return_std=True)
    assert np.all(np.isfinite(std)) and np.all(std >= 0)
    save(delta, tmp_path / "m", "toy", "0" * 64)
    again = load(tmp_path / "m")
    np.testing.assert_allclose(again.predict(X[:4], return_std=True), (mean, std))
    assert again.force_noise_level_ == delta.force_noise_level_


@pytest.mark.parametrize("change, message", [
    (lambda f: ForceLabels(f.atoms, f.residual[:1], f.jacobian), "force residual of shape"),
    (lambda f: ForceLabels(f.atoms, f.residual, f.jacobian[..., :2]), "Jacobian of shape"),
    (lambda f: ForceLabels(np.array([0, 0, 1, 2, 3]), f.residual, f.jacobian), "distinct"),
    (lambda f: ForceLabels(f.atoms, f.residual * np.nan, f.jacobian), "NaN"),
    (lambda f: ForceLabels(f.atoms.astype(float), f.residual, f.jacobian), "integer indices"),
])
def test_bad_force_labels_are_named(change, message):
    X, y, forces, _ = dataset(4, seed=2)
    forces[1] = change(forces[1])
    with pytest.raises(ForceLabelError, match=message) as info:
        model().fit(X, y, forces=forces)
    assert "structure 1" in str(info.value)


def test_force_labels_need_the_atomic_sparse_model_and_one_per_structure():
    X, y, forces, _ = dataset(4, seed=2)
    with pytest.raises(ValueError, match="atomic"):
        DeltaGPR("global").fit(X, y, forces=forces)
    with pytest.raises(ValueError, match="sparse"):
        DeltaGPR("atomic", sparse=False).fit(X, y, forces=forces)
    with pytest.raises(ForceLabelError, match="3 force labels for 4 structures"):
        model().fit(X, y, forces=forces[:3])
