"""scikit-learn's own estimator checks on DeltaGPR.

A plain 2-D array is accepted as X (each row: one structure of one atom of species 0),
so every generic check applies and none is marked as an expected failure.  The only skips
are scikit-learn's own: its array-API checks skip themselves unless SCIPY_ARRAY_API=1 is
set (and DeltaGPR is NumPy-only anyway).  The structure-list input is tested in
test_delta_gpr.py.
"""
from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from uipbench.delta import DeltaGPR

ESTIMATORS = [
    DeltaGPR("global", n_restarts=1, random_state=0),
    DeltaGPR("species", offset=False, prior_mean="zero", random_state=0),
    DeltaGPR("atomic", same_species=True, optimize=False, random_state=0),
    DeltaGPR("atomic", sparse=True, n_inducing=20, random_state=0),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    check(estimator)
