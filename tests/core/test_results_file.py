"""The results file: one reader/writer, a manifest written last, and a truncated file never taken as finished."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from uipbench.harness import sweep as sweep_module
from uipbench.harness.results import (KEY_COLUMNS, MANIFEST_FILE, PREDICTIONS_FILE, RESULTS_FILE, at_largest_size,
                                      finished_cells, largest_sizes, load_run, read_results)

from .test_sweep import _run, datasets_root, fake_backbone  # noqa: F401  (fixtures)

KEYS = [*KEY_COLUMNS, "metric"]
N_KEYS = len(KEY_COLUMNS)  # the key fields lead every line of results.csv


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(KEYS).reset_index(drop=True)


@pytest.fixture
def finished(datasets_root, fake_backbone, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    results = _run(datasets_root, tmp_path)
    return results, (tmp_path / "run" / RESULTS_FILE).read_bytes(), (tmp_path / "run" / PREDICTIONS_FILE).read_bytes()


def test_the_manifest_vouches_for_both_tables(finished, tmp_path):
    results, text, _ = finished
    manifest = json.loads((tmp_path / "run" / MANIFEST_FILE).read_text())
    assert manifest[RESULTS_FILE]["rows"] == len(results)
    loaded = load_run(tmp_path / "run")
    assert loaded.partial is None
    pd.testing.assert_frame_equal(loaded.results, results, check_dtype=False)
    (tmp_path / "run" / RESULTS_FILE).write_bytes(text.replace(b"\n", b"\r\n", 1))  # any edit is seen
    assert "differs from manifest.json" in load_run(tmp_path / "run").partial
    pd.testing.assert_frame_equal(read_results(tmp_path / "run")[0], results, check_dtype=False)


def _cut_inside_value(text: bytes) -> int:
    """An offset in the middle of the value of a row half-way down the file (after two of its digits)."""
    start = text.index(b"\n", len(text) // 2) + 1
    line = text[start:text.index(b"\n", start)]
    value_at = start + line.rindex(b",", 0, line.rindex(b",")) + 1
    return value_at + 3


def _cut_inside_metric(text: bytes) -> int:
    start = text.index(b"\n", len(text) // 2) + 1
    line = text[start:text.index(b"\n", start)]
    metric_at = start + len(b",".join(line.split(b",")[:N_KEYS])) + 1
    return metric_at + 4


def _cut_at_line_inside_cell(text: bytes) -> int:
    """After a full line whose successor belongs to the same cell (same key fields)."""
    lines = text.split(b"\n")
    offset = len(lines[0]) + 1
    for i in range(1, len(lines) - 1):
        offset += len(lines[i]) + 1
        if i > len(lines) // 2 and lines[i].split(b",")[:N_KEYS] == lines[i + 1].split(b",")[:N_KEYS]:
            return offset
    raise AssertionError("no cell with two rows")


@pytest.mark.parametrize("cut", [_cut_inside_value, _cut_inside_metric, _cut_at_line_inside_cell])
def test_a_truncated_results_file_is_recomputed_not_trusted(finished, datasets_root, tmp_path, monkeypatch, cut):  # noqa: F811,E501
    results, text, _ = finished
    path = tmp_path / "run" / RESULTS_FILE
    at = cut(text)
    path.write_bytes(text[:at])
    kept = load_run(tmp_path / "run")
    assert kept.partial and "cut short" in kept.partial
    # a complete cell is one whose rows are all there: the cut cell is not among them
    done = finished_cells(kept.results, kept.predictions)
    cut_key = tuple(text[text.rindex(b"\n", 0, at) + 1:].split(b"\n")[0].decode().split(",")[:N_KEYS])
    assert cut_key not in done
    calls = []
    original = sweep_module.run_task
    monkeypatch.setattr(sweep_module, "run_task", lambda task: calls.append(task) or original(task))
    with pytest.warns(UserWarning) as record:
        again = _run(datasets_root, tmp_path)
    messages = [str(w.message) for w in record]
    assert any(m.startswith(f"{path}: results.csv differs from manifest.json (cut short") for m in messages)
    assert any("1 cell(s) with missing rows" in m and ", ".join(cut_key) in m for m in messages), messages
    assert calls, "the missing cells are recomputed"
    pd.testing.assert_frame_equal(_sorted(again), _sorted(results), check_exact=False, rtol=1e-12, check_dtype=False)
    preds = pd.read_csv(tmp_path / "run" / PREDICTIONS_FILE)
    assert len(preds) == len(pd.read_csv(pd.io.common.BytesIO(finished[2])))
    assert load_run(tmp_path / "run").partial is None  # rewritten whole, with its manifest


def test_a_truncated_predictions_file_recomputes_its_cells(finished, datasets_root, tmp_path, monkeypatch):  # noqa: F811
    results, _, preds_text = finished
    (tmp_path / "run" / PREDICTIONS_FILE).write_bytes(preds_text[:len(preds_text) // 2])
    with pytest.warns(UserWarning) as record:
        again = _run(datasets_root, tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "predictions.csv differs from manifest.json" in messages and "with missing rows" in messages
    pd.testing.assert_frame_equal(_sorted(again), _sorted(results), check_exact=False, rtol=1e-12, check_dtype=False)
    full = pd.read_csv(pd.io.common.BytesIO(preds_text))
    assert len(pd.read_csv(tmp_path / "run" / PREDICTIONS_FILE)) == len(full)


def test_an_older_file_without_manifest_is_checked_cell_by_cell(finished, datasets_root, tmp_path,  # noqa: F811
                                                                 monkeypatch):
    results, _, _ = finished
    (tmp_path / "run" / MANIFEST_FILE).unlink()
    calls = []
    original = sweep_module.run_task
    monkeypatch.setattr(sweep_module, "run_task", lambda task: calls.append(task) or original(task))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # complete cells: nothing to warn about, nothing recomputed
        again = _run(datasets_root, tmp_path)
    assert calls == []
    pd.testing.assert_frame_equal(again, results, check_dtype=False)


def test_a_cell_with_a_duplicated_or_missing_metric_is_not_finished():
    base = dict(backbone="b", system="s", model="delta", descriptor="embedding", aggregation="global",
                train_size=4, seed=0, value=1.0, note="")
    from uipbench.harness.metrics import expected_metrics

    rows = [{**base, "metric": m} for m in sorted(expected_metrics("delta", False))]
    table = pd.DataFrame(rows)
    assert len(finished_cells(table)) == 1
    assert finished_cells(pd.concat([table, table.iloc[:1]])) == frozenset()
    assert finished_cells(table.iloc[1:]) == frozenset()
    foreign = pd.DataFrame([{**base, "metric": "a_metric_no_longer_registered"}])
    assert len(finished_cells(pd.concat([table, foreign]))) == 1
    assert len(finished_cells(pd.DataFrame([{**base, "metric": "fit_error", "value": np.nan}]))) == 1


def test_largest_size_is_one_function():
    table = pd.DataFrame({"system": ["a", "a", "b", "b"], "train_size": [5, 20, 5, 10], "value": [1, 2, 3, 4]})
    assert largest_sizes(table).to_dict() == {"a": 20, "b": 10}
    assert at_largest_size(table).value.tolist() == [2, 4]
