"""The results of a sweep on disk: schema, the one reader and writer, completeness and staleness.

A run folder holds ``results.csv`` (tidy: one row per backbone, system, model, descriptor,
aggregation, training size, seed, evaluation and metric), ``predictions.csv`` (one row per held-out
structure of every cell), ``metadata.json`` (provenance) and ``manifest.json``, written last,
with the row count and sha256 of both tables.  A table that differs from its manifest was cut
short or edited: its cells are then checked one by one, and only complete cells count as done.

``evaluation`` says what a cell is scored on: ``split`` (a random split of the training data) or
``validation`` (trained on all of it, scored on the system's independent validation set).  Files of
an older uipbench have no such column: their rows are ``split`` rows, read as such.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .._atomic import write_json_atomic, write_text_atomic
from .metrics import FIT_ERROR, LML, MAE, N_TEST, expected_metrics

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["NONE", "KEY_COLUMNS", "RESULT_COLUMNS", "RESULTS_FILE", "PREDICTIONS_FILE", "METADATA_FILE",
           "MANIFEST_FILE", "RESULTS_SCHEMA", "LML", "MAE", "ResultsError", "RunResults", "tidy", "cell_key",
           "finished_cells", "load_run", "read_results", "write_results", "delta_params", "stale_reason",
           "largest_sizes", "at_largest_size", "EVALUATION", "SPLIT", "VALIDATION", "with_evaluation",
           "split_rows", "validation_rows", "stale_validation", "validation_shas"]

#: descriptor and aggregation of a cell that has none (the raw backbone)
NONE = "-"
#: what a cell is scored on: a random split of the training data, or the independent validation set
EVALUATION, SPLIT, VALIDATION = "evaluation", "split", "validation"
KEY_COLUMNS = ["backbone", "system", "model", "descriptor", "aggregation", "train_size", "seed", EVALUATION]
RESULT_COLUMNS = [*KEY_COLUMNS, "metric", "value", "note"]
RESULTS_FILE, PREDICTIONS_FILE, METADATA_FILE = "results.csv", "predictions.csv", "metadata.json"
MANIFEST_FILE = "manifest.json"
#: version of what a results table holds; results of another version are recomputed, not mixed in
#: (2: Δ cells record the log marginal likelihood of their fit)
RESULTS_SCHEMA = 2


class ResultsError(ValueError):
    """A results folder cannot be read (missing, empty or corrupt files)."""


@dataclass
class RunResults:
    """The tables of a run folder; ``partial`` says why they are not the files their manifest describes;
    ``vouched``: a manifest matches them (False for files of an older uipbench, which wrote none)."""

    results: pd.DataFrame
    predictions: pd.DataFrame
    metadata: dict
    partial: str | None = None
    vouched: bool = False


def cell_key(*parts: Any) -> tuple[str, ...]:
    """The key of one cell (the values of :data:`KEY_COLUMNS`), as strings."""
    return tuple(str(p) for p in parts)


def with_evaluation(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with an ``evaluation`` column (``split`` where a table of an older uipbench has none)."""
    if EVALUATION in table.columns:
        return table
    table = table.copy()
    at = table.columns.get_loc("seed") + 1 if "seed" in table.columns else len(table.columns)
    table.insert(at, EVALUATION, SPLIT)  # where the writer puts it: after the other key columns
    return table


def split_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows scored on random splits of the training data (every row of an older table)."""
    table = with_evaluation(table)
    return table[table[EVALUATION] == SPLIT]


def validation_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows trained on all training data and scored on the validation set."""
    table = with_evaluation(table)
    return table[table[EVALUATION] == VALIDATION]


def tidy(results: pd.DataFrame) -> pd.DataFrame:
    """Column types of a results table (values float, sizes and seeds int, notes str; ``evaluation``
    filled in where an older table has none)."""
    import pandas as pd

    results = with_evaluation(results).copy()
    results["value"] = pd.to_numeric(results["value"], errors="coerce").astype(float)
    results["train_size"] = results["train_size"].astype(int)
    results["seed"] = results["seed"].astype(int)
    results["note"] = _notes(results["note"])
    return results.reset_index(drop=True)


def _notes(notes: pd.Series) -> pd.Series:
    """Notes as strings, "" where there is none (an all-empty column reads as float NaN)."""
    return notes.astype(object).fillna("").astype(str)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_results(run: Path, results: pd.DataFrame, predictions: pd.DataFrame) -> None:
    """Write both tables atomically, then the manifest that vouches for them."""
    run = Path(run)
    results = results.copy()
    if len(results):  # one line per row: a note never spans lines, so every complete line is a complete row
        results["note"] = _notes(results["note"]).str.replace(r"\s*[\r\n]+\s*", " ", regex=True)
    manifest: dict[str, Any] = {"results_schema": RESULTS_SCHEMA}
    for name, table in ((RESULTS_FILE, results), (PREDICTIONS_FILE, predictions)):
        text = table.to_csv(index=False)
        write_text_atomic(run / name, text)
        manifest[name] = {"rows": len(table), "sha256": _sha256(text.encode())}
    write_json_atomic(run / MANIFEST_FILE, manifest)


def _check_manifest(run: Path, raw: dict[str, bytes]) -> str | None:
    """Why the tables are not what the manifest describes; None when they are, or when there is no manifest."""
    path = run / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{path.name} unreadable"
    for name, data in raw.items():
        if _sha256(data) != manifest.get(name, {}).get("sha256"):
            return f"{name} differs from {path.name} (cut short or edited)"
    return None


def _parse(path: Path, data: bytes, partial: bool, **options) -> pd.DataFrame:
    import pandas as pd

    if partial and data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]  # a file cut inside its last line: that line is not a row
    try:
        return pd.read_csv(io.BytesIO(data), **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise ResultsError(f"{path}: corrupt results file ({exc})") from exc


def load_run(run: str | Path, missing_ok: bool = False) -> RunResults:
    """Read a run folder; ``missing_ok``: no results file gives empty tables instead of an error."""
    import pandas as pd

    run = Path(run)
    path = run / RESULTS_FILE
    if not path.exists():
        if missing_ok:
            return RunResults(pd.DataFrame(columns=RESULT_COLUMNS), pd.DataFrame(), _metadata(run))
        raise ResultsError(f"{path}: no results file (run `uipbench sweep` first)")
    raw = {RESULTS_FILE: path.read_bytes()}
    if (run / PREDICTIONS_FILE).exists():
        raw[PREDICTIONS_FILE] = (run / PREDICTIONS_FILE).read_bytes()
    partial = _check_manifest(run, raw)
    vouched = partial is None and (run / MANIFEST_FILE).exists()
    if not raw[RESULTS_FILE].strip():
        raise ResultsError(f"{path}: results file is empty (a corrupt results file; remove it to start over)")
    results = _parse(path, raw[RESULTS_FILE], not vouched, keep_default_na=False, na_values=[""])
    results = with_evaluation(results)  # an older file: every row a split row
    missing = set(RESULT_COLUMNS) - set(results.columns)
    if missing:
        raise ResultsError(f"{path}: not a sweep results table (missing columns {sorted(missing)})")
    preds = pd.DataFrame()
    if raw.get(PREDICTIONS_FILE, b"").strip():
        preds = with_evaluation(_parse(run / PREDICTIONS_FILE, raw[PREDICTIONS_FILE], not vouched))
    try:
        results = tidy(results)
    except (ValueError, TypeError) as exc:
        raise ResultsError(f"{path}: corrupt results file ({exc})") from exc
    return RunResults(results, preds, _metadata(run), partial, vouched)


def _metadata(run: Path) -> dict:
    path = run / METADATA_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: unreadable metadata ({exc})") from exc


def read_results(run: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(results, predictions, metadata) of a finished run folder, for reports; an error when there are none."""
    loaded = load_run(run)
    if loaded.results.empty:
        raise ResultsError(f"{Path(run) / RESULTS_FILE}: results file has no rows")
    return loaded.results, loaded.predictions, loaded.metadata


def finished_cells(results: pd.DataFrame, predictions: pd.DataFrame | None = None,
                   expected: Mapping[tuple, frozenset[str]] | None = None) -> frozenset[tuple]:
    """Keys (:func:`cell_key`) of the cells whose rows are complete.

    A cell is complete when it holds exactly one ``fit_error`` row, or every metric of
    ``expected[key]`` (default: what a cell of its model holds without forces), each once (rows of
    metrics no longer registered may be there too); and, where ``predictions`` are given, one
    prediction per held-out structure (its ``n_test``).
    """
    if results.empty:
        return frozenset()
    results = with_evaluation(results)
    predictions = with_evaluation(predictions) if predictions is not None and not predictions.empty else predictions
    counts = _prediction_counts(predictions)
    done = []
    for key, part in results.groupby(KEY_COLUMNS, sort=False):
        key = cell_key(*key)
        names = list(part.metric)
        if names == [FIT_ERROR]:
            done.append(key)
            continue
        if len(set(names)) != len(names) or not _expected_set(key, set(names), expected):
            continue
        if counts is not None and N_TEST in names:
            n_test = float(part.value[part.metric == N_TEST].iloc[0])
            if counts.get(key, 0) != n_test:
                continue
        done.append(key)
    return frozenset(done)


def _expected_set(key: tuple, names: set[str], expected: Mapping[tuple, frozenset[str]] | None) -> bool:
    if expected is not None and key in expected:
        return names >= expected[key]
    return names >= expected_metrics(key[KEY_COLUMNS.index("model")], False)


def _prediction_counts(predictions: pd.DataFrame | None) -> dict[tuple, int] | None:
    if predictions is None:
        return None
    if predictions.empty or not set(KEY_COLUMNS) <= set(predictions.columns):
        return {}
    return {cell_key(*k): int(n) for k, n in predictions.groupby(KEY_COLUMNS, sort=False).size().items()}


def delta_params(gpr: dict[str, Any]) -> dict[str, Any]:
    """Every DeltaGPR hyperparameter a sweep uses (defaults included), JSON-ready."""
    from ..delta import DeltaGPR

    params = DeltaGPR(**gpr).get_params()
    return json.loads(json.dumps(params, default=str))


def _stored_metadata(out: Path) -> dict[str, Any] | str | None:
    """The metadata of the results stored in ``out``; None when there are none, a reason when unreadable."""
    out = Path(out)
    meta_path = out / METADATA_FILE
    if not (out / RESULTS_FILE).exists() or not meta_path.exists():
        return None
    try:
        return json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"unreadable {meta_path.name}"


def stale_reason(out: Path, systems: Mapping[str, Any], gpr: dict[str, Any]) -> str | None:
    """Why the results in ``out`` belong to other data or other Δ-model settings (None when they do not).

    ``systems``: the :class:`~uipbench.harness.data.SystemData` of the sweep, by name.
    """
    meta = _stored_metadata(out)
    if meta is None or isinstance(meta, str):
        return meta
    stored = meta.get("data", {})
    now = {m: sha for s in systems.values() for m, sha in s.file_sha256.items()}
    count = {m: s.system_of.count(m) for s in systems.values() for m in s.members}
    reasons = []
    for m in sorted(set(now) | set(stored)):
        if m not in now:
            reasons.append(f"{m} no longer used")
        elif m not in stored:
            reasons.append(f"{m} added ({count[m]} structures)")
        elif stored[m].get("sha256") != now[m]:
            reasons.append(f"{m} changed ({stored[m].get('structures')} → {count[m]} structures)")
    if meta.get("delta_params") != delta_params(gpr):
        reasons.append("Δ-GPR settings changed")
    if meta.get("results_schema", 1) != RESULTS_SCHEMA:
        reasons.append(f"results of an older uipbench (schema {meta.get('results_schema', 1)}, now {RESULTS_SCHEMA})")
    return ", ".join(reasons) or None


def validation_shas(systems: Mapping[str, Any]) -> dict[str, str]:
    """sha256 of the validation file of every member system that has one (``systems``: SystemData by name)."""
    return {m: sha for s in systems.values() if getattr(s, "validation", None) is not None
            for m, sha in s.validation.file_sha256.items()}


def stale_validation(out: Path, systems: Mapping[str, Any]) -> str | None:
    """Why the validation cells in ``out`` were scored on other validation sets than ``systems`` now have
    (None when they were not, or when there are no stored results): those cells alone are recomputed."""
    meta = _stored_metadata(out)
    if meta is None or isinstance(meta, str):
        return meta
    stored = meta.get("data", {})
    now = validation_shas(systems)
    before = {m: v["validation"]["sha256"] for m, v in stored.items() if isinstance(v.get("validation"), dict)}
    changed = sorted(m for m in set(now) | set(before) if now.get(m) != before.get(m))
    return f"validation set of {', '.join(changed)} changed" if changed else None


def largest_sizes(results: pd.DataFrame) -> pd.Series:
    """The largest training size of each system (index: system)."""
    return results.groupby("system")["train_size"].max()


def at_largest_size(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` (any frame with ``system`` and ``train_size``) at each system's largest size."""
    return table[table.train_size == table.system.map(largest_sizes(table))]
