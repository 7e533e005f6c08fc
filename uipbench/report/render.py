"""``uipbench report``: Markdown and HTML report of a sweep, with tables (Markdown + CSV) and figures."""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from .._atomic import write_text_atomic
from ..harness.sweep import METADATA_FILE, PREDICTIONS_FILE, RESULTS_FILE, tidy
from . import figures
from .tables import MAE, full_markdown, headline, headline_markdown, summarise


class ReportError(ValueError):
    """The results folder cannot be reported on."""


def read_results(run: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    run = Path(run)
    path = run / RESULTS_FILE
    if not path.exists():
        raise ReportError(f"{path}: no results file (run `uipbench sweep` first)")
    try:
        results = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise ReportError(f"{path}: results file is empty") from None
    if results.empty:
        raise ReportError(f"{path}: results file has no rows")
    predictions = pd.read_csv(run / PREDICTIONS_FILE) if (run / PREDICTIONS_FILE).exists() else pd.DataFrame()
    metadata = json.loads((run / METADATA_FILE).read_text()) if (run / METADATA_FILE).exists() else {}
    return tidy(results), predictions, metadata


def write_report(run: Path, out: Path | None = None) -> Path:
    """Write report.md, report.html, tables/ and figures/ for the sweep in ``run``; returns report.md."""
    results, predictions, metadata = read_results(run)
    out = Path(out) if out else Path(run)
    fig_dir, table_dir = out / "figures", out / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)

    head = headline(results)
    summary = summarise(results, MAE)
    head.to_csv(table_dir / "headline.csv", index=False)
    summary.to_csv(table_dir / "energy_mae.csv", index=False)
    for metric in ("relative_energy_mae_mev", "spearman_within_composition", "lowest_found_fraction",
                   "force_mae_ev_per_angstrom"):
        summarise(results, metric).to_csv(table_dir / f"{metric}.csv", index=False)

    figs = {"learning": figures.learning_curves(results, fig_dir), "heatmap": figures.heatmap(results, fig_dir)}
    if not predictions.empty:
        figs["parity"] = figures.parity(results, predictions, fig_dir)
        figs["ss"] = figures.s_s_diagnosis(results, predictions, fig_dir)

    blocks = _blocks(results, head, summary, figs, metadata, out)
    write_text_atomic(out / "report.md", "\n\n".join(text for kind, text in blocks if kind != "html") + "\n")
    write_text_atomic(out / "report.html", _html(blocks))
    return out / "report.md"


def _rank_table(results: pd.DataFrame) -> str:
    largest = results.groupby("system")["train_size"].max()
    rows = []
    for metric, label in (("relative_energy_mae_mev", "relative-energy MAE (meV/structure)"),
                          ("spearman_within_composition", "Spearman ρ within compositions"),
                          ("lowest_found_fraction", "lowest structure found (fraction of groups)")):
        s = summarise(results, metric)
        s = s[s.train_size == s.system.map(largest)]
        s = s[(s.model == "raw") | (s.descriptor == "embedding")]
        for r in s.itertuples(index=False):
            rows.append((r.backbone, r.system, r.model if r.model == "raw" else f"Δ {r.aggregation}", label,
                         f"{r.mean:.2f} ± {0 if pd.isna(r.std) else r.std:.2f}"))
    lines = ["| backbone | system | model | metric | mean ± std |", "|---|---|---|---|---:|"]
    lines += [f"| {' | '.join(r)} |" for r in sorted(rows)]
    return "\n".join(lines)


def _blocks(results, head, summary, figs, metadata, out: Path) -> list[tuple[str, str]]:
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
        ("md", "## Learning curves"),
        ("md", f"![learning curves]({rel['learning']})"),
        ("md", "## Backbone × system"),
        ("md", f"![heatmap]({rel['heatmap']})"),
    ]
    if "parity" in rel:
        blocks += [("md", "## Parity"), ("md", f"![parity]({rel['parity']})"),
                   ("md", "## S–S vs metal–S diagnosis"),
                   ("md", "Signed error per atom against the number of bonded S–S pairs in a structure. A backbone "
                          "that over-binds S–S motifs (as reported for MPtrj-trained models) drifts negative as "
                          "S–S pairs increase; the Δ-model should flatten the curve."),
                   ("md", f"![S–S diagnosis]({rel['ss']})")]
    blocks += [("md", "## Ranking within compositions (largest training set)"), ("md", _rank_table(results)),
               ("md", "## All cells: energy MAE (meV/atom)"), ("md", full_markdown(summary)),
               ("md", "Tables as CSV in `tables/`; the tidy results in `results.csv`, per-structure predictions in "
                      "`predictions.csv`, provenance (versions, cards, data hashes, command) in `metadata.json`.")]
    errors = results[results.metric == "fit_error"]
    if not errors.empty:
        blocks.append(("md", f"**{len(errors)} cells could not be fitted**, e.g.: {errors.note.iloc[0]}"))
    return blocks


def _html(blocks: list[tuple[str, str]]) -> str:
    body = []
    for _, text in blocks:
        if text.startswith("# "):
            body.append(f"<h1>{html.escape(text[2:])}</h1>")
        elif text.startswith("## "):
            body.append(f"<h2>{html.escape(text[3:])}</h2>")
        elif text.startswith("!["):
            alt, src = text[2:].split("](")
            body.append(f'<p><img src="{html.escape(src[:-1])}" alt="{html.escape(alt)}" style="max-width:100%"></p>')
        elif text.startswith("|"):
            body.append(_html_table(text))
        else:
            body.append(f"<p>{html.escape(text)}</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
             "th{background:#f0f0f0}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>uipbench report</title><style>{style}</style>" \
           f"</head><body>{''.join(body)}</body></html>\n"


def _html_table(text: str) -> str:
    lines = [line.strip().strip("|").split("|") for line in text.splitlines()]
    head, rows = lines[0], lines[2:]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"
