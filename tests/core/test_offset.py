"""The per-species offset shared by DeltaGPR and the sweep's raw scores."""
import numpy as np
import pytest

from uipbench.delta import DeltaGPR
from uipbench.delta.offset import fit_species_offset, offset_prediction, species_count_matrix


def test_offset_recovers_per_species_energies_exactly():
    rng = np.random.default_rng(0)
    numbers = [np.array([29] * int(rng.integers(8, 14)) + [16] * int(rng.integers(1, 5))) for _ in range(12)]
    true = {29: -0.31, 16: 0.87}
    y = np.array([sum(true[z] for z in n) for n in numbers])
    species = np.array([16, 29])
    coef, constant = fit_species_offset(species_count_matrix(numbers, species), y)
    np.testing.assert_allclose(coef, [true[16], true[29]], atol=1e-10)
    assert constant == pytest.approx(0.0, abs=1e-10)


def test_offset_prediction_equals_delta_gpr_baseline():
    rng = np.random.default_rng(1)
    numbers = [np.array([47] * 12 + [16] * int(k)) for k in rng.integers(1, 5, size=10)]
    features = [rng.normal(size=(len(n), 4)) for n in numbers]
    y = rng.normal(size=10)
    X = list(zip(features, numbers))
    model = DeltaGPR("global", optimize=False).fit(X[:7], y[:7])
    np.testing.assert_allclose(offset_prediction(numbers[:7], y[:7], numbers[7:]),
                               model.predict_baseline(X[7:]), atol=1e-12)


def test_offset_refuses_unseen_species_and_too_few_structures():
    numbers = [np.array([29, 29, 16]), np.array([29, 16, 16])]
    with pytest.raises(ValueError, match=r"species \[79\]"):
        offset_prediction(numbers, np.zeros(2), [np.array([79, 16])])
    with pytest.raises(ValueError, match="at least as many training structures as species"):
        offset_prediction(numbers[:1], np.zeros(1), numbers)


def test_offset_switches():
    numbers = [np.array([29, 16]), np.array([29, 29, 16])]
    y = np.array([1.0, 2.0])
    counts = species_count_matrix(numbers, np.array([16, 29]))
    coef, constant = fit_species_offset(counts, y, offset=False, prior_mean="mean")
    assert np.all(coef == 0) and constant == pytest.approx(1.5)
    coef, constant = fit_species_offset(counts, y, offset=True, prior_mean="zero")
    assert constant == 0.0
    np.testing.assert_allclose(counts @ coef, y, atol=1e-12)
