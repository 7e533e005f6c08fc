"""DeltaGPR on synthetic data with a known truth: accuracy, offsets, sparse vs exact, torch path, errors."""
from __future__ import annotations

import numpy as np
import pytest

from tests.core.delta_synthetic import SPECIES_OFFSET, make, rmse
from uipbench.adapters.base import EmbeddingBatch, EmbeddingMetadata, StructureEmbedding
from uipbench.delta import DeltaGPR, DeltaModelError, select_inducing
from uipbench.delta import gpr as gpr_module
from uipbench.delta.aggregation import Points, aggregate, structures_from_items
from uipbench.delta.gpr import ExactObjective, SparseObjective
from uipbench.delta.kernels import cholesky_jittered

FIXED = dict(optimize=False, amplitude=0.1, length_scale=2.0, noise_level=1e-4)


@pytest.fixture(scope="module")
def data():
    return make(120, seed=0), make(60, seed=1)


@pytest.mark.parametrize("aggregation,kwargs", [
    ("global", {}),
    ("species", {}),
    ("atomic", {}),
    ("atomic", {"same_species": True}),
    ("atomic", {"sparse": True, "n_inducing": 150}),
    ("atomic", {"sparse": True, "n_inducing": 150, "inducing": "cur"}),
])
def test_gp_beats_offset_only_baseline(data, aggregation, kwargs):
    train, test = data
    model = DeltaGPR(aggregation, random_state=0, **kwargs).fit(train.X, train.y)
    gp_error = rmse(model.predict(test.X), test.y)
    baseline_error = rmse(model.predict_baseline(test.X), test.y)
    assert gp_error < 0.8 * baseline_error, (gp_error, baseline_error)
    if aggregation == "atomic":  # the truth is a sum of atomic terms: the atomic model learns it well
        assert gp_error < 0.35 * baseline_error, (gp_error, baseline_error)
    mean, std = model.predict(test.X, return_std=True)
    np.testing.assert_allclose(mean, model.predict(test.X))
    assert std.shape == (len(test.X),) and np.all(std >= 0) and np.all(np.isfinite(std))


def test_offset_recovers_per_element_constants():
    rng = np.random.default_rng(3)
    X, y = [], []
    for _ in range(30):
        numbers = rng.choice([16, 29, 47], size=int(rng.integers(2, 12)))
        X.append((rng.normal(size=(len(numbers), 4)), numbers))
        y.append(sum(SPECIES_OFFSET[int(z)] for z in numbers))
    model = DeltaGPR("global", **FIXED).fit(X, np.array(y))
    np.testing.assert_array_equal(model.species_, [16, 29, 47])
    np.testing.assert_allclose(model.offset_coef_, [SPECIES_OFFSET[z] for z in (16, 29, 47)], atol=1e-10)
    assert abs(model.prior_mean_) < 1e-10
    np.testing.assert_allclose(model.predict_baseline(X), y, atol=1e-10)


def test_offset_rank_deficient_composition_is_handled():
    rng = np.random.default_rng(4)
    X = [(rng.normal(size=(4, 3)), np.array([16, 29, 29, 29])) for _ in range(6)]  # one composition only
    y = np.full(6, 4 * 0.5)
    model = DeltaGPR("global", **FIXED).fit(X, y)
    np.testing.assert_allclose(model.predict_baseline(X), y, atol=1e-10)  # minimum-norm solution fits


def test_sparse_agrees_with_exact_when_all_atoms_are_inducing(data):
    train, test = make(25, seed=5), data[1]
    exact = DeltaGPR("atomic", sparse=False, **FIXED).fit(train.X, train.y)
    sparse = DeltaGPR("atomic", sparse=True, n_inducing=10_000, **FIXED).fit(train.X, train.y)
    assert not exact.sparse_ and sparse.sparse_
    assert len(sparse.support_) == sum(len(n) for _, n in train.X)
    m_exact, s_exact = exact.predict(test.X, return_std=True)
    m_sparse, s_sparse = sparse.predict(test.X, return_std=True)
    np.testing.assert_allclose(m_sparse, m_exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_sparse, s_exact, rtol=1e-3, atol=1e-5)
    assert sparse.log_marginal_likelihood_value_ == pytest.approx(exact.log_marginal_likelihood_value_, rel=1e-6)


def test_sparse_auto_switches_on_above_threshold(data):
    train, _ = data
    model = DeltaGPR("atomic", sparse="auto", sparse_threshold=100, n_inducing=50, random_state=0, **FIXED)
    assert model.fit(train.X, train.y).sparse_
    assert len(model.support_) <= 52  # stratified by species: rounding may add one per species


@pytest.mark.parametrize("objective", ["exact", "exact-species", "sparse", "sparse-species"])
def test_log_marginal_likelihood_gradient_matches_finite_differences(data, objective):
    train, _ = data
    structures = structures_from_items(train.X[:20])
    points = aggregate(structures, "atomic", np.array([16, 29]))
    residual = train.y[:20] - train.y[:20].mean()
    same = objective.endswith("species")
    if objective.startswith("exact"):
        fn = ExactObjective(points, residual, same, 1e-10)
    else:
        fn = SparseObjective(points, residual, points.features[::4], points.species[::4] if same else None, 1e-10)
    theta = np.log([0.3, 2.5, 0.05])
    _, grad = fn(theta)
    h = 1e-6
    fd = [(fn(theta + e)[0] - fn(theta - e)[0]) / (2 * h) for e in np.eye(3) * h]
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-5)


def test_hyperparameter_optimisation_improves_likelihood(data):
    train, _ = data
    fixed = DeltaGPR("atomic", **FIXED).fit(train.X, train.y)
    fitted = DeltaGPR("atomic", amplitude=0.1, length_scale=2.0, noise_level=1e-4, random_state=0).fit(
        train.X, train.y)
    assert fitted.log_marginal_likelihood_value_ > fixed.log_marginal_likelihood_value_


# ----------------------------------------------------------------------------- likelihood on a subset

@pytest.fixture
def objective_sizes(monkeypatch):
    """(kind, structures, points) of each exact / sparse likelihood objective built, in order."""
    sizes: list[tuple[str, int, int]] = []

    class Exact(ExactObjective):
        def __init__(self, points, residual, *args):
            sizes.append(("exact", points.n_structures, points.n_points))
            super().__init__(points, residual, *args)

    class Sparse(SparseObjective):
        def __init__(self, points, residual, *args):
            sizes.append(("sparse", points.n_structures, points.n_points))
            super().__init__(points, residual, *args)

    monkeypatch.setattr(gpr_module, "ExactObjective", Exact)
    monkeypatch.setattr(gpr_module, "SparseObjective", Sparse)
    return sizes


def test_exact_subset_optimisation_matches_full_optimisation(objective_sizes):
    train, test = make(800, seed=11, noise=0.02), make(300, seed=101)
    full = DeltaGPR("global", max_opt_points=800, n_restarts=0, random_state=0).fit(train.X, train.y)
    sub = DeltaGPR("global", max_opt_points=300, n_restarts=0, random_state=0).fit(train.X, train.y)
    assert objective_sizes == [("exact", 800, 800), ("exact", 300, 300)]
    # the final solve uses all structures either way
    assert len(sub.support_) == len(full.support_) == 800 and sub.chol_.shape == (800, 800)
    # noise and the amplitude / length-scale combination that the data pin down (a / l², the curvature of
    # a long-length-scale RBF) agree; a and l alone slide along a flat ridge of the likelihood
    assert abs(np.log(sub.noise_level_ / full.noise_level_)) < 0.3
    assert abs(np.log((sub.amplitude_ / sub.length_scale_**2) / (full.amplitude_ / full.length_scale_**2))) < 0.35
    p_full, p_sub = full.predict(test.X), sub.predict(test.X)
    e_full, e_sub = rmse(p_full, test.y), rmse(p_sub, test.y)
    assert e_sub < 1.03 * e_full, (e_sub, e_full)
    assert rmse(p_sub, p_full) < 0.15 * e_full
    assert e_full < 0.5 * rmse(full.predict_baseline(test.X), test.y)  # the GP does learn something


def test_max_opt_points_defaults_and_counts_points(objective_sizes):
    train = make(700, seed=12)
    DeltaGPR("global", n_restarts=0, random_state=0).fit(train.X, train.y)  # default: 500 for exact
    assert objective_sizes.pop() == ("exact", 500, 500)
    DeltaGPR("global", n_restarts=0, random_state=0).fit(train.X[:400], train.y[:400])  # fewer: all of them
    assert objective_sizes.pop() == ("exact", 400, 400)
    # atomic: the budget counts atoms, whole structures are drawn; the final solve has every atom
    small = make(150, seed=13)
    model = DeltaGPR("atomic", max_opt_points=200, n_restarts=0, random_state=0).fit(small.X, small.y)
    kind, n_structures, n_points = objective_sizes.pop()
    assert kind == "exact" and 190 <= n_points <= 200 and n_structures < 150
    assert len(model.support_) == sum(len(n) for _, n in small.X)
    # sparse: the default budget is 10 000 points, so 20 structures are all used
    DeltaGPR("atomic", sparse=True, n_inducing=20, n_restarts=0, random_state=0).fit(small.X[:20], small.y[:20])
    assert objective_sizes.pop()[:2] == ("sparse", 20)
    with pytest.raises(ValueError, match="max_opt_points must be an integer >= 1"):
        DeltaGPR(max_opt_points=0).fit(train.X, train.y)


# ----------------------------------------------------------------------------- inducing points

def _atomic_points(n: int, seed: int) -> Points:
    return aggregate(structures_from_items(make(n, seed=seed).X), "atomic", np.array([16, 29]))


def test_cur_inducing_points_deterministic_distinct_and_stratified():
    points = _atomic_points(80, seed=6)
    a = select_inducing(points, 60, "cur", np.random.RandomState(0))
    b = select_inducing(points, 60, "cur", np.random.RandomState(0))
    c = select_inducing(points, 60, "cur", np.random.RandomState(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a)) == len(a) and len(np.unique(points.features[a], axis=0)) == len(a)
    for z in (16, 29):  # each species gets its share of the 60
        share = 60 * np.mean(points.species == z)
        assert abs(np.sum(points.species[a] == z) - share) <= 1
    # asking for more than there are gives every distinct point
    everything = select_inducing(points, 10 * points.n_points, "cur", np.random.RandomState(0))
    assert len(everything) == points.n_points
    # a model's inducing points are as reproducible
    train = make(60, seed=7)
    fit = lambda: DeltaGPR("atomic", sparse=True, inducing="cur", n_inducing=40, random_state=3,  # noqa: E731
                           **FIXED).fit(train.X, train.y)
    np.testing.assert_array_equal(fit().support_, fit().support_)


def test_cur_draws_by_leverage_score():
    rng = np.random.RandomState(0)
    bulk = np.zeros((400, 6))
    bulk[:, :4] = rng.normal(size=(400, 4))  # 400 points spread over four directions
    rare = np.zeros((2, 6))
    rare[0, 4] = rare[1, 5] = 0.5  # two points alone in their direction: leverage 1 each, the bulk ~0.01
    features = np.vstack([bulk, rare])
    points = Points(features, np.zeros(402, np.int64), np.arange(402), 402)
    hits = 0
    for seed in range(20):
        chosen = select_inducing(points, 20, "cur", np.random.RandomState(seed))
        assert len(chosen) == 20
        hits += int(400 in chosen) + int(401 in chosen)
    assert hits >= 36  # almost always drawn, though they are 0.5% of the points (a uniform draw: 5% of the time)


def test_unknown_inducing_method_is_refused(data):
    train, _ = data
    with pytest.raises(ValueError, match="inducing must be one of"):
        DeltaGPR("atomic", sparse=True, inducing="fps", **FIXED).fit(train.X, train.y)


def test_accepts_structure_embeddings_and_batches(data):
    train, _ = data
    items = [StructureEmbedding(0.0, e, n) for e, n in train.X]
    meta = EmbeddingMetadata("toy", "toy", "0", "0" * 64, "layer", 6)
    a = DeltaGPR("species", **FIXED).fit(train.X, train.y).predict(train.X[:5])
    b = DeltaGPR("species", **FIXED).fit(items, train.y).predict(items[:5])
    c = DeltaGPR("species", **FIXED).fit(EmbeddingBatch(items, meta), train.y).predict(EmbeddingBatch(items[:5], meta))
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, c)


@pytest.mark.parametrize("aggregation,kwargs", [
    ("global", {}), ("global", {"reduce": "mean"}), ("species", {}), ("species", {"reduce": "mean"}),
    ("atomic", {}), ("atomic", {"same_species": True}), ("atomic", {"sparse": True, "n_inducing": 60}),
])
def test_predict_torch_matches_predict_and_differentiates(data, aggregation, kwargs):
    torch = pytest.importorskip("torch")
    train, test = data
    model = DeltaGPR(aggregation, random_state=0, **FIXED, **kwargs).fit(train.X, train.y)
    emb, numbers = test.X[0]
    tensor = torch.tensor(emb, dtype=torch.float64, requires_grad=True)
    mean, std = model.predict_torch(tensor, numbers)
    expected_mean, expected_std = model.predict([(emb, numbers)], return_std=True)
    assert mean.dtype == torch.float64 and mean.ndim == 0
    assert float(mean.detach()) == pytest.approx(expected_mean[0], abs=1e-10)
    assert std == pytest.approx(expected_std[0], abs=1e-10)
    (grad,) = torch.autograd.grad(mean, tensor)
    h = 1e-5
    for i, j in [(0, 0), (1, 3), (len(numbers) - 1, 5)]:
        plus, minus = emb.copy(), emb.copy()
        plus[i, j] += h
        minus[i, j] -= h
        fd = (model.predict([(plus, numbers)])[0] - model.predict([(minus, numbers)])[0]) / (2 * h)
        assert float(grad[i, j]) == pytest.approx(fd, abs=1e-6)


# ----------------------------------------------------------------------------- errors

@pytest.fixture(scope="module")
def fitted(data):
    train, _ = data
    return {agg: DeltaGPR(agg, **FIXED).fit(train.X, train.y) for agg in ("global", "species", "atomic")}


def test_width_differs_at_predict(fitted):
    X = [(np.zeros((3, 7)), np.array([16, 29, 29]))]
    for model in fitted.values():
        with pytest.raises(DeltaModelError, match="width 7 differs from the width 6"):
            model.predict(X)
    torch = pytest.importorskip("torch")
    with pytest.raises(DeltaModelError, match="width"):
        fitted["atomic"].predict_torch(torch.zeros(3, 7, dtype=torch.float64), [16, 29, 29])


def test_species_unseen_in_training(fitted, data):
    train, _ = data
    X = [(np.zeros((2, 6)), np.array([29, 79]))]
    for model in fitted.values():  # per-species offset on
        with pytest.raises(DeltaModelError, match=r"element\(s\) Au not in the training data .* Cu"):
            model.predict(X)
        with pytest.raises(DeltaModelError, match="Au"):
            model.predict_baseline(X)
    no_offset = dict(FIXED, offset=False)
    with pytest.raises(DeltaModelError, match="Au"):
        DeltaGPR("species", **no_offset).fit(train.X, train.y).predict(X)
    with pytest.raises(DeltaModelError, match="Au"):
        DeltaGPR("atomic", same_species=True, **no_offset).fit(train.X, train.y).predict(X)
    # without offset and species-blind kernels an unseen element is only an unfamiliar embedding
    assert np.isfinite(DeltaGPR("global", **no_offset).fit(train.X, train.y).predict(X)).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_targets_and_features(data, bad):
    train, _ = data
    y = train.y.copy()
    y[3] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        DeltaGPR(**FIXED).fit(train.X, y)
    X = list(train.X)
    emb = X[2][0].copy()
    emb[1, 1] = bad
    X[2] = (emb, X[2][1])
    with pytest.raises(ValueError, match="structure 2: embedding contains NaN or inf"):
        DeltaGPR(**FIXED).fit(X, train.y)
    model = DeltaGPR(**FIXED).fit(train.X, train.y)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.predict(X[2:3])


def test_too_few_training_structures(data):
    train, _ = data
    with pytest.raises(ValueError, match="at least 2 training structures, got n_samples=1"):
        DeltaGPR(**FIXED).fit(train.X[:1], train.y[:1])
    X = [(np.zeros((2, 6)), np.array([16, 29])), (np.ones((1, 6)), np.array([47]))]
    with pytest.raises(ValueError, match="at least as many training structures as species: got 2 structures "
                                         "for 3 species"):
        DeltaGPR(**FIXED).fit(X, [0.0, 1.0])
    DeltaGPR(offset=False, **FIXED).fit(X, [0.0, 1.0])  # fine without the offset


def test_malformed_inputs(data):
    train, _ = data
    with pytest.raises(ValueError, match="numbers has shape"):
        DeltaGPR(**FIXED).fit([(np.zeros((3, 6)), np.array([16, 29]))] * 3, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="differs from 6 of structure 0"):
        DeltaGPR(**FIXED).fit([train.X[0], (np.zeros((2, 5)), np.array([16, 29]))], [0.0, 1.0])
    with pytest.raises(ValueError, match="got 120 structures but 119 targets"):
        DeltaGPR(**FIXED).fit(train.X, train.y[:-1])
    with pytest.raises(ValueError, match="requires y"):
        DeltaGPR(**FIXED).fit(train.X, None)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        DeltaGPR("sum", **FIXED).fit(train.X, train.y)
    with pytest.raises(ValueError, match="sparse must be"):
        DeltaGPR(sparse="yes").fit(train.X, train.y)
    with pytest.raises(ValueError, match="length_scale_bounds"):
        DeltaGPR(length_scale_bounds=(0, 1)).fit(train.X, train.y)


def test_not_positive_definite_is_a_clear_error():
    K = -np.eye(4)
    with pytest.raises(np.linalg.LinAlgError, match="non-positive"):
        cholesky_jittered(K)
    K = np.array([[1.0, 2.0], [2.0, 1.0]])  # indefinite: jitter up to 1e-2 cannot help
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite even with"):
        cholesky_jittered(K)
    L, added = cholesky_jittered(np.ones((3, 3)))  # singular: rescued by jitter
    assert added > 0 and np.all(np.isfinite(L))
