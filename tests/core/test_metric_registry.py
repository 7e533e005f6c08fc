"""One registry of metrics: a metric registered once is scored by the sweep and labelled in the report."""
from __future__ import annotations

import numpy as np
import pytest

from uipbench.harness import metrics as M

from .test_sweep import _run, datasets_root, fake_backbone  # noqa: F401  (fixtures)


def _worst(split: M.ScoredSplit) -> float:
    return float(np.max(np.abs(split.errors)))


WORST = M.Metric("max_abs_energy_error_mev_per_atom", "meV/atom", "largest energy error", True, _worst)


def test_every_metric_the_sweep_writes_is_one_registry_entry():
    names = [m.name for m in M.metrics()]
    assert names == ["energy_mae_mev_per_atom", "energy_rmse_mev_per_atom", "relative_energy_mae_mev",
                     "spearman_within_composition", "lowest_found_fraction", "n_test",
                     "force_mae_ev_per_angstrom", "log_marginal_likelihood", "fit_error"]
    assert M.get_metric(M.MAE).axis_label == "energy MAE (meV/atom)"
    assert M.get_metric(M.SPEARMAN).lower_is_better is False and M.get_metric(M.N_TEST).lower_is_better is None
    assert M.expected_metrics("delta", True) == frozenset(names) - {"force_mae_ev_per_angstrom", "fit_error"}
    assert M.expected_metrics("raw", False) == frozenset(names[:6])
    with pytest.raises(ValueError, match="unknown metric 'nope'; known: energy_mae"):
        M.get_metric("nope")
    with pytest.raises(ValueError, match="registered already"):
        M.register(M.Metric(M.MAE, "", "", True, _worst))


def test_scores_of_a_split_follow_the_registry():
    split = M.ScoredSplit("raw", np.array([1.0, 2.0, 3.5]), np.array([1.1, 2.0, 3.0]), np.array([10, 10, 10]),
                          ["a", "a", "a"], [np.ones((10, 3))] * 3, [np.zeros((10, 3))] * 3)
    scores = M.score_split(split)
    assert scores["energy_mae_mev_per_atom"] == pytest.approx(1000 * 0.6 / 3 / 10)
    assert scores["force_mae_ev_per_angstrom"] == 1.0 and "log_marginal_likelihood" not in scores
    with M.registered(WORST):
        assert M.score_split(split)[WORST.name] == pytest.approx(50.0)
    assert WORST.name not in M.score_split(split), "registered only inside the with block"


def test_a_registered_metric_is_scored_by_the_sweep_and_labelled_in_the_report(datasets_root, fake_backbone,  # noqa: F811,E501
                                                                               tmp_path, monkeypatch):
    from uipbench.report.render import write_report

    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    with M.registered(WORST):
        results = _run(datasets_root, tmp_path)
        report = write_report(tmp_path / "run").read_text()
    worst = results[results.metric == WORST.name]
    mae = results[results.metric == M.MAE]
    assert len(worst) == len(mae) > 0 and set(worst.model) == {"raw", "delta"}
    assert np.all(worst.value.to_numpy() >= mae.value.to_numpy())
    assert "largest energy error (meV/atom)" in report
    assert (tmp_path / "run" / "tables" / f"{WORST.name}.csv").exists()
