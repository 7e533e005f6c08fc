"""Tables of sweep results: pure functions from the tidy results table to summary frames."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..harness.metrics import LML, MAE, N_TEST  # noqa: F401  (re-exported: tables are read by these names)
from ..harness.results import NONE, largest_sizes, split_rows, validation_rows  # noqa: F401


def summarise(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std and count over seeds of one metric, per backbone/system/model/descriptor/aggregation/size."""
    rows = results[(results.metric == metric) & np.isfinite(results.value)]
    keys = ["backbone", "system", "model", "descriptor", "aggregation", "train_size"]
    return rows.groupby(keys, as_index=False)["value"].agg(mean="mean", std="std", seeds="count")


#: the largest training size of each system (one definition: :func:`uipbench.harness.results.largest_sizes`)
largest_size = largest_sizes


def evidence_choice(results: pd.DataFrame, descriptor: str = "embedding", metric: str = MAE) -> pd.DataFrame:
    """Per backbone/system/size/seed: the Δ aggregation with the highest log marginal likelihood
    (training data only) and its held-out ``metric`` — a choice that never looks at the test set."""
    delta = results[(results.model == "delta") & (results.descriptor == descriptor)]
    keys = ["backbone", "system", "train_size", "seed"]
    lml = delta[(delta.metric == LML) & np.isfinite(delta.value)]
    if lml.empty:
        return pd.DataFrame(columns=[*keys, "aggregation", "value"])
    chosen = lml.loc[lml.groupby(keys)["value"].idxmax(), [*keys, "aggregation"]]
    scores = delta[delta.metric == metric][[*keys, "aggregation", "value"]]
    return chosen.merge(scores, on=[*keys, "aggregation"], how="inner")


def _aggregation_label(choices: pd.Series) -> str:
    counts = choices.value_counts()
    return ", ".join(f"{a}×{n}" if len(counts) > 1 else str(a) for a, n in counts.items())


def _chosen_summary(choice: pd.DataFrame, backbone: str, system: str, size: int) -> tuple[str, float, float]:
    """(aggregation label, mean, std over seeds) of one cell of :func:`evidence_choice`; ("", nan, nan) if absent."""
    cell = choice[(choice.backbone == backbone) & (choice.system == system) & (choice.train_size == size)]
    if cell.empty:
        return "", np.nan, np.nan
    return (_aggregation_label(cell.aggregation), float(cell.value.mean()),
            float(cell.value.std()) if len(cell) > 1 else np.nan)


def headline(results: pd.DataFrame, metric: str = MAE, descriptor: str = "embedding") -> pd.DataFrame:
    """Per backbone and system, at the largest training size: the raw error, the Δ error with the
    aggregation chosen per seed by the evidence (training data only), and, for reference, the best
    aggregation on the test set (optimistic: chosen on the data it is scored on).  Random splits only:
    the validation cells have a table of their own (:func:`validation_table`)."""
    results = split_rows(results)
    summary = summarise(results, metric)
    largest = largest_size(results)
    summary = summary[summary.train_size == summary.system.map(largest)]
    chosen = evidence_choice(results, descriptor, metric)
    soap_choice = evidence_choice(results, "soap", metric)
    out = []
    for (backbone, system), part in summary.groupby(["backbone", "system"], sort=True):
        raw = part[part.model == "raw"]
        delta = part[(part.model == "delta") & (part.descriptor == descriptor)]
        if raw.empty or delta.empty:
            continue
        best = delta.loc[delta["mean"].idxmin()]
        row = {
            "backbone": backbone, "system": system, "train_size": int(best.train_size),
            "raw_mean": float(raw["mean"].iloc[0]), "raw_std": float(raw["std"].iloc[0]),
            "best_aggregation": best.aggregation, "delta_mean": float(best["mean"]), "delta_std": float(best["std"]),
        }
        label, mean, std = _chosen_summary(chosen, backbone, system, row["train_size"])
        row.update(chosen_aggregation=label, chosen_mean=mean, chosen_std=std)
        corrected = row["chosen_mean"] if np.isfinite(row["chosen_mean"]) else row["delta_mean"]
        row["ratio"] = corrected / row["raw_mean"] if row["raw_mean"] > 0 else np.nan
        soap = part[(part.model == "delta") & (part.descriptor == "soap")]
        label, mean, std = _chosen_summary(soap_choice, backbone, system, row["train_size"])
        if label:  # the same rule as the embedding's Δ, so the two compare fairly
            row.update(soap_aggregation=label, soap_mean=mean, soap_std=std)
        elif not soap.empty:
            s = soap.loc[soap["mean"].idxmin()]
            row.update(soap_aggregation=f"{s.aggregation}, best on test", soap_mean=float(s["mean"]),
                       soap_std=float(s["std"]))
        out.append(row)
    return pd.DataFrame(out)


def fmt(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if np.isfinite(std) else f"{mean:.1f}"


def headline_markdown(table: pd.DataFrame) -> str:
    """The headline as a markdown table; Δ/raw uses the evidence-chosen Δ."""
    has_soap = "soap_mean" in table.columns
    head = ("| backbone | system | n train | raw (meV/atom) | Δ (meV/atom) | aggregation (by evidence) | Δ / raw "
            "| Δ best on test (optimistic) |")
    sep = "|---|---|---:|---:|---:|---|---:|---:|"
    if has_soap:
        head += " Δ on SOAP (meV/atom, aggregation by evidence) |"
        sep += "---:|"
    lines = [head, sep]
    for r in table.itertuples(index=False):
        line = (f"| {r.backbone} | {r.system} | {r.train_size} | {fmt(r.raw_mean, r.raw_std)} | "
                f"{fmt(r.chosen_mean, r.chosen_std)} | {r.chosen_aggregation or '–'} | {r.ratio:.2f} | "
                f"{fmt(r.delta_mean, r.delta_std)} ({r.best_aggregation}) |")
        if has_soap:
            soap = getattr(r, "soap_mean", np.nan)
            line += f" {fmt(soap, getattr(r, 'soap_std', np.nan))} ({getattr(r, 'soap_aggregation', '')}) |"
        lines.append(line)
    return "\n".join(lines)


def full_markdown(summary: pd.DataFrame) -> str:
    lines = ["| backbone | system | model | descriptor | aggregation | n train | mean ± std (seeds) |",
             "|---|---|---|---|---|---:|---:|"]
    for r in summary.itertuples(index=False):
        lines.append(f"| {r.backbone} | {r.system} | {r.model} | {r.descriptor} | {r.aggregation} | "
                     f"{r.train_size} | {fmt(r.mean, r.std)} ({r.seeds}) |")
    return "\n".join(lines)


def validation_table(results: pd.DataFrame, metric: str = MAE, descriptor: str = "embedding",
                     split_head: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per backbone and system: trained on all shipped training data, scored on the validation set.

    The raw backbone (after the per-species offset fitted on the training data), the Δ with the
    aggregation of the highest evidence (training data only) and every aggregation, each with Δ/raw;
    beside them the evidence-chosen Δ/raw on the random splits (largest size), for comparison
    (``split_head``: :func:`headline` of ``results`` when the caller has it already).
    """
    val = validation_rows(results)
    scores = val[(val.metric == metric) & np.isfinite(val.value)]
    chosen = evidence_choice(val, descriptor, metric)
    split = headline(results, metric, descriptor) if split_head is None else split_head
    out = []
    for (backbone, system), part in scores.groupby(["backbone", "system"], sort=True):
        raw = part[part.model == "raw"]
        delta = part[(part.model == "delta") & (part.descriptor == descriptor)]
        if raw.empty or delta.empty:
            continue
        raw_mae = float(raw.value.iloc[0])
        n_val = val[(val.backbone == backbone) & (val.system == system) & (val.model == "raw") & (val.metric == N_TEST)]
        row = {"backbone": backbone, "system": system, "train_size": int(delta.train_size.iloc[0]),
               "n_validation": int(n_val.value.iloc[0]) if not n_val.empty else np.nan, "raw_mean": raw_mae}
        label, mean, _ = _chosen_summary(chosen, backbone, system, row["train_size"])
        row.update(chosen_aggregation=label, chosen_mean=mean, ratio=_ratio(mean, raw_mae))
        for r in delta.itertuples(index=False):
            row[f"delta_{r.aggregation}"], row[f"ratio_{r.aggregation}"] = float(r.value), _ratio(r.value, raw_mae)
        on_split = split[(split.backbone == backbone) & (split.system == system)] if not split.empty else split
        row["split_ratio"] = float(on_split.ratio.iloc[0]) if len(on_split) else np.nan
        out.append(row)
    return pd.DataFrame(out)


def _ratio(delta: float, raw: float) -> float:
    return float(delta) / raw if raw > 0 and np.isfinite(delta) else np.nan


def _r(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "–"


def validation_markdown(table: pd.DataFrame) -> str:
    """:func:`validation_table` as markdown: one column per aggregation after the evidence-chosen Δ."""
    aggregations = [c[len("delta_"):] for c in table.columns if c.startswith("delta_")]
    head = ("| backbone | system | n train | n validation | raw (meV/atom) | Δ (meV/atom) | aggregation (by evidence) "
            "| Δ / raw | Δ / raw on random splits |" + "".join(f" Δ {a} (Δ / raw) |" for a in aggregations))
    lines = [head, "|---|---|---:|---:|---:|---:|---|---:|---:|" + "---:|" * len(aggregations)]
    for r in table.to_dict("records"):
        line = (f"| {r['backbone']} | {r['system']} | {r['train_size']} | {r['n_validation']} | {r['raw_mean']:.1f} | "
                f"{fmt(r['chosen_mean'], np.nan)} | {r['chosen_aggregation'] or '–'} | {_r(r['ratio'])} | "
                f"{_r(r['split_ratio'])} |")
        line += "".join(f" {fmt(r.get(f'delta_{a}', np.nan), np.nan)} ({_r(r.get(f'ratio_{a}', np.nan))}) |"
                        for a in aggregations)
        lines.append(line)
    return "\n".join(lines)
