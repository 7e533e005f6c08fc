"""Headline tables: the Δ column's aggregation is chosen by evidence (training data), not by test error."""
import numpy as np
import pandas as pd
import pytest

from uipbench.harness.sweep import LML as SWEEP_LML
from uipbench.report.tables import LML, MAE, evidence_choice, headline, headline_markdown


def _rows(seed, agg, mae, lml=None, model="delta", size=20):
    base = dict(backbone="b", system="cu-s", model=model, descriptor="embedding" if model == "delta" else "-",
                aggregation=agg, train_size=size, seed=seed, note="")
    rows = [{**base, "metric": MAE, "value": mae}]
    if lml is not None:
        rows.append({**base, "metric": LML, "value": lml})
    return rows


@pytest.fixture
def results():
    rows = []
    # seed 0: global has the higher evidence but the worse test error; seed 1: atomic wins both
    rows += _rows(0, "global", 12.0, lml=-3.0) + _rows(0, "atomic", 8.0, lml=-5.0) + _rows(0, "-", 20.0, model="raw")
    rows += _rows(1, "global", 14.0, lml=-9.0) + _rows(1, "atomic", 10.0, lml=-4.0) + _rows(1, "-", 22.0, model="raw")
    rows += _rows(0, "global", 30.0, lml=0.0, size=5)  # a smaller training size never enters the headline
    return pd.DataFrame(rows)


def test_evidence_choice_takes_the_highest_lml_per_seed(results):
    chosen = evidence_choice(results)
    big = chosen[chosen.train_size == 20].sort_values("seed")
    assert list(big.aggregation) == ["global", "atomic"]
    assert list(big.value) == [12.0, 10.0]


def test_headline_reports_evidence_choice_and_best_on_test_separately(results):
    row = headline(results).iloc[0]
    assert row.chosen_mean == pytest.approx(11.0) and row.chosen_std == pytest.approx(np.std([12, 10], ddof=1))
    assert row.chosen_aggregation in ("global×1, atomic×1", "atomic×1, global×1")
    assert row.best_aggregation == "atomic" and row.delta_mean == pytest.approx(9.0)
    assert row.raw_mean == pytest.approx(21.0) and row.ratio == pytest.approx(11.0 / 21.0)
    text = headline_markdown(headline(results))
    assert "11.0 ± 1.4" in text and "9.0 ± 1.4 (atomic)" in text and "optimistic" in text


def test_results_without_evidence_fall_back_to_best_on_test(results):
    old = results[results.metric != LML]
    row = headline(old).iloc[0]
    assert np.isnan(row.chosen_mean) and row.ratio == pytest.approx(9.0 / 21.0)
    assert "| – |" in headline_markdown(headline(old))


def test_metric_name_is_shared_with_the_sweep():
    assert LML == SWEEP_LML


def test_soap_column_uses_the_same_evidence_rule(results):
    soap = results[results.model == "delta"].assign(descriptor="soap")
    soap.loc[soap.metric == MAE, "value"] += 1.0
    row = headline(pd.concat([results, soap], ignore_index=True)).iloc[0]
    assert row.soap_mean == pytest.approx(12.0) and row.chosen_mean == pytest.approx(11.0)
