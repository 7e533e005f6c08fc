"""``uipbench report``: Markdown and HTML report of a sweep, with tables (Markdown + CSV) and figures."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import write_text_atomic
from ..harness.metrics import FIT_ERROR, LOWEST_FOUND, MAE, N_TEST, RELATIVE_MAE, SPEARMAN, get_metric, metrics
from ..harness.results import (RESULTS_FILE, ResultsError, largest_sizes, load_run,  # noqa: F401
                               read_results, split_rows)  # (read_results re-exported)
from . import figures
from .html import to_html as _html  # noqa: F401  (the regress report's writer until it imports report.html)
from .html import write_html
from .tables import full_markdown, headline, headline_markdown, summarise, validation_markdown, validation_table

#: the results folder cannot be reported on (the results reader's error)
ReportError = ResultsError
#: the ranking metrics of the report's ranking table
RANKING_METRICS = (RELATIVE_MAE, SPEARMAN, LOWEST_FOUND)


def write_report(run: Path, out: Path | None = None) -> Path:
    """Write report.md, report.html, tables/ and figures/ for the sweep in ``run``; returns report.md.

    ``out`` (default ``run``) is locked while the report is written (:mod:`uipbench._lock`): a sweep
    still running in that folder, or another report being written there, makes it refuse.
    """
    from .._lock import OutputLock

    results, predictions, metadata = _read(Path(run))
    out = Path(out) if out else Path(run)
    with OutputLock(out, command=f"uipbench report {run}"):
        return _write(out, results, predictions, metadata)


def _read(run: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The run's tables; a warning when they are cut short, an error when no cell has a value to show."""
    partial = load_run(run).partial
    if partial:
        warnings.warn(f"{run / RESULTS_FILE}: {partial}; the report shows the rows it holds, so some cells may "
                      f"be incomplete (run the sweep again to complete them)", stacklevel=3)
    results, predictions, metadata = read_results(run)
    if not np.isfinite(results.loc[results.metric == MAE, "value"].to_numpy(dtype=float)).any():
        raise ResultsError(f"{run / RESULTS_FILE}: no cell has a finite {MAE} (every fit failed, or the values "
                           f"are NaN); nothing to report")
    return results, predictions, metadata


def _write(out: Path, results: pd.DataFrame, predictions: pd.DataFrame, metadata: dict) -> Path:
    fig_dir, table_dir = out / "figures", out / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)

    head = headline(results)  # of the random splits (headline selects them)
    validation = validation_table(results, split_head=head)
    if not validation.empty:
        validation.to_csv(table_dir / "validation.csv", index=False)
    # every other table and figure is of the random splits
    results = split_rows(results)
    predictions = split_rows(predictions) if not predictions.empty else predictions
    summary = summarise(results, MAE)
    head.to_csv(table_dir / "headline.csv", index=False)
    summary.to_csv(table_dir / "energy_mae.csv", index=False)
    for metric in _tabled_metrics(results):
        summarise(results, metric).to_csv(table_dir / f"{metric}.csv", index=False)

    figs = {"learning": figures.learning_curves(results, fig_dir), "heatmap": figures.heatmap(results, fig_dir)}
    if not predictions.empty:
        figs["parity"] = figures.parity(results, predictions, fig_dir)
        figs["ss"] = figures.s_s_diagnosis(results, predictions, fig_dir)

    blocks = _blocks(results, head, summary, figs, metadata, out, _validation_blocks(validation, metadata))
    write_text_atomic(out / "report.md", "\n\n".join(text for kind, text in blocks if kind != "html") + "\n")
    write_html(blocks, out / "report.html")
    return out / "report.md"


def _tabled_metrics(results: pd.DataFrame) -> list[str]:
    """Every scored metric of the results with a table of its own (energy MAE has energy_mae.csv)."""
    present = set(results.metric)
    return [m.name for m in metrics() if m.name in present and m.name not in (MAE, FIT_ERROR, N_TEST)
            and m.lower_is_better is not None]


def _other_metrics(results: pd.DataFrame) -> tuple[str, ...]:
    """Scored metrics the report shows in no other table (energy RMSE, force MAE, any metric registered)."""
    return tuple(m for m in _tabled_metrics(results) if m not in RANKING_METRICS)


def _rank_table(results: pd.DataFrame, ranking: tuple[str, ...] = RANKING_METRICS) -> str:
    largest = largest_sizes(results)
    rows = []
    for metric in ranking:
        label = get_metric(metric).axis_label
        s = summarise(results, metric)
        s = s[s.train_size == s.system.map(largest)]
        s = s[(s.model == "raw") | (s.descriptor == "embedding")]
        for r in s.itertuples(index=False):
            rows.append((r.backbone, r.system, r.model if r.model == "raw" else f"Δ {r.aggregation}", label,
                         f"{r.mean:.2f} ± {0 if pd.isna(r.std) else r.std:.2f}"))
    lines = ["| backbone | system | model | metric | mean ± std |", "|---|---|---|---|---:|"]
    lines += [f"| {' | '.join(r)} |" for r in sorted(rows)]
    return "\n".join(lines)


VALIDATION_TITLE = "## Trained on the shipped data, scored on the validation set (energy MAE, meV/atom)"


def _validation_blocks(table: pd.DataFrame, metadata: dict) -> list[tuple[str, str]]:
    """The validation table and what it means; nothing when no system had a validation set."""
    if table.empty:
        return []
    counts = ", ".join(f"{m}: {v['validation']['structures']}" for m, v in metadata.get("data", {}).items()
                       if isinstance(v.get("validation"), dict))
    return [("md", VALIDATION_TITLE), ("md", validation_markdown(table)),
            ("md", f"Each model is trained on every shipped training structure of the system and scored on its "
                   f"independent validation set ({counts or 'validation structures'}; made by "
                   f"`uipbench.datasets.validation`: other cells, free S positions, wider heights, rattled metal; "
                   f"never fitted on and never used to choose anything). One fit per cell (seed 0), so no spread. "
                   f"*Δ* takes the aggregation of the highest evidence on the training data; every aggregation is "
                   f"listed after it. *Δ / raw on random splits* is the headline's ratio, for comparison: a "
                   f"correction that transfers keeps it.")]


def _blocks(results, head, summary, figs, metadata, out: Path,
            validation: list[tuple[str, str]]) -> list[tuple[str, str]]:
    rel = {k: p.relative_to(out).as_posix() for k, p in figs.items()}
    cfg = metadata.get("config", {})
    data = metadata.get("data", {})
    data_line = ", ".join(f"{k}: {v.get('structures')} structures" for k, v in data.items())
    blocks = [
        ("md", "# uipbench report: raw and Δ-corrected backbones on S adatoms on Cu/Ag/Au(111)"),
        ("md", f"Reference: DFT protocol `{metadata.get('protocol', {}).get('name', '?')}` ({data_line}). "
               f"Seeds: {cfg.get('seeds')}; test fraction {cfg.get('test_fraction')}; training sizes "
               f"{cfg.get('sizes')}. Errors are on held-out structures. *Raw* = the backbone after a per-species "
               f"energy offset fitted on the same training split; *Δ* = Δ-GPR on the backbone's own embedding; "
               f"*Δ on SOAP* = the same GPR on a SOAP descriptor instead of the embedding."),
        ("md", "## Headline: energy MAE at the largest training set (meV/atom, mean ± std over seeds)"),
        ("md", headline_markdown(head) if not head.empty else "_no complete cells_"),
        ("md", "*Δ* uses, for each seed, the aggregation whose fit has the highest log marginal likelihood "
               "(the GP's evidence, computed on the training structures only), so the choice never sees the "
               "test set. *Δ best on test* is the aggregation with the lowest mean held-out error: choosing on "
               "the data it is scored on flatters it, the more so the smaller the test sets; it is shown for "
               "reference only. Every aggregation is listed in the full table below."),
        *validation,
        ("md", "## Learning curves"),
        ("md", f"![learning curves]({rel['learning']})"),
        ("md", "## Backbone × system"),
        ("md", f"![heatmap]({rel['heatmap']})"),
    ]
    if "parity" in rel:
        blocks += [("md", "## Parity"), ("md", f"![parity]({rel['parity']})"),
                   ("md", "## S–S vs metal–S diagnosis"),
                   ("md", "Signed error per atom against the number of bonded S–S pairs in a structure, one "
                          "panel per backbone, the raw backbone (grey) and its Δ-correction (blue) side by side at "
                          "each count; n is the number of held-out structures behind each pair of points. A "
                          "backbone that over-binds S–S motifs (as reported for MPtrj-trained models) drifts "
                          "negative as S–S pairs increase; the Δ-model should flatten the trend."),
                   ("md", f"![S–S diagnosis]({rel['ss']})")]
    blocks += [("md", "## Ranking within compositions (largest training set)"), ("md", _rank_table(results))]
    if _other_metrics(results):
        blocks += [("md", "## Other metrics (largest training set)"),
                   ("md", _rank_table(results, _other_metrics(results)))]
    blocks += [
               ("md", f"## All cells: {get_metric(MAE).axis_label}"), ("md", full_markdown(summary)),
               ("md", "Tables as CSV in `tables/`; the tidy results in `results.csv`, per-structure predictions in "
                      "`predictions.csv`, provenance (versions, cards, data hashes, command) in `metadata.json`.")]
    errors = results[results.metric == FIT_ERROR]
    if not errors.empty:
        blocks.append(("md", f"**{len(errors)} cells could not be fitted**, e.g.: {errors.note.iloc[0]}"))
    return blocks
