"""Tables of sweep results: pure functions from the tidy results table to summary frames."""
from __future__ import annotations

import numpy as np
import pandas as pd

MAE = "energy_mae_mev_per_atom"
NONE = "-"


def summarise(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std and count over seeds of one metric, per backbone/system/model/descriptor/aggregation/size."""
    rows = results[(results.metric == metric) & np.isfinite(results.value)]
    keys = ["backbone", "system", "model", "descriptor", "aggregation", "train_size"]
    return rows.groupby(keys, as_index=False)["value"].agg(mean="mean", std="std", seeds="count")


def largest_size(results: pd.DataFrame) -> pd.Series:
    """Largest training size of each system."""
    return results.groupby("system")["train_size"].max()


def headline(results: pd.DataFrame, metric: str = MAE, descriptor: str = "embedding") -> pd.DataFrame:
    """Per backbone and system, at the largest training size: raw error, best Δ aggregation and its error."""
    summary = summarise(results, metric)
    largest = largest_size(results)
    summary = summary[summary.train_size == summary.system.map(largest)]
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
        row["ratio"] = row["delta_mean"] / row["raw_mean"] if row["raw_mean"] > 0 else np.nan
        soap = part[(part.model == "delta") & (part.descriptor == "soap")]
        if not soap.empty:
            s = soap.loc[soap["mean"].idxmin()]
            row.update(soap_aggregation=s.aggregation, soap_mean=float(s["mean"]), soap_std=float(s["std"]))
        out.append(row)
    return pd.DataFrame(out)


def fmt(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.1f} ± {std:.1f}" if np.isfinite(std) else f"{mean:.1f}"


def headline_markdown(table: pd.DataFrame) -> str:
    has_soap = "soap_mean" in table.columns
    head = "| backbone | system | n train | raw (meV/atom) | Δ best (meV/atom) | aggregation | Δ / raw |"
    sep = "|---|---|---:|---:|---:|---|---:|"
    if has_soap:
        head += " Δ on SOAP (meV/atom) |"
        sep += "---:|"
    lines = [head, sep]
    for r in table.itertuples(index=False):
        line = (f"| {r.backbone} | {r.system} | {r.train_size} | {fmt(r.raw_mean, r.raw_std)} | "
                f"{fmt(r.delta_mean, r.delta_std)} | {r.best_aggregation} | {r.ratio:.2f} |")
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
