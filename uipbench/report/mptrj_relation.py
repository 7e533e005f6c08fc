"""Training-set coverage against error: MPtrj environment counts next to each backbone's raw error.

The counts come from :func:`uipbench.mptrj.count_environments` (its tidy table); the errors from a
sweep's results table.  This module is the one part of the MPtrj work that knows the sweep's results
schema, so it lives with the report.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..mptrj.figures import new_figure, plain_log_labels, save_figure

RELATION_COLUMNS = ["backbone", "system", "metal", "center", "category", "unit", "env_count", "metric",
                    "error_mean", "error_std", "error_min", "error_max", "n_values"]
_COUNT_COLUMNS = {"center", "category", "neighbor", "unit", "count"}
_SWEEP_COLUMNS = {"backbone", "system", "metric", "value"}
# axis labels of the two raw-error metrics this figure is drawn for (until the metrics registry has them)
_METRIC_LABELS = {"energy_mae_mev_per_atom": "raw backbone energy MAE (meV/atom)",
                  "energy_rmse_mev_per_atom": "raw backbone energy RMSE (meV/atom)"}
_CATEGORY_TEXT = {"any_metal": "≥1 M neighbour", "metal_only": "only M neighbours",
                  "metal_and_center": "M + {c} neighbours"}


def _metal_of_system(system: str, center: str) -> str | None:
    """``"cu-s"`` → ``"Cu"`` for centre S; None for a system that is not ``<metal>-<centre>``."""
    from ase.data import atomic_numbers

    parts = str(system).split("-")
    if len(parts) != 2 or parts[1].lower() != center.lower():
        return None
    metal = parts[0].capitalize()
    return metal if metal in atomic_numbers else None


def _check_columns(counts_df: Any, sweep_results_df: Any) -> None:
    for name, df, need in (("counts_df", counts_df, _COUNT_COLUMNS),
                           ("sweep_results_df", sweep_results_df, _SWEEP_COLUMNS)):
        missing = need - set(df.columns)
        if missing:
            raise ValueError(f"{name} lacks column(s) {sorted(missing)}")


def _raw_errors(sweep_results_df: Any, metric: str) -> Any:
    """The rows of ``metric`` for the raw backbone (model ``raw`` where the table has a model column)."""
    sweep = sweep_results_df[sweep_results_df["metric"] == metric]
    if "model" in sweep.columns:  # the sweep's tidy table: raw = backbone after the per-species offset
        sweep = sweep[sweep["model"] == "raw"]
    if "evaluation" in sweep.columns:  # the random splits, as in the report's headline (not the validation cells)
        sweep = sweep[sweep["evaluation"] == "split"]
    if sweep.empty:
        raise ValueError(f"no sweep results with metric {metric!r}; present: "
                         f"{sorted(map(str, sweep_results_df['metric'].unique()))}")
    return sweep


def relate_to_errors(counts_df: Any, sweep_results_df: Any, *, center: str = "S", category: str = "any_metal",
                     unit: str = "atoms", metric: str = "energy_mae_mev_per_atom",
                     systems: Mapping[str, str] | None = None) -> Any:
    """Put each backbone's raw error on a system next to the count of the matching metal–centre environment.

    ``counts_df`` is the table of :func:`uipbench.mptrj.tally_to_table` (center, category, neighbor,
    unit, count); ``sweep_results_df`` the sweep's tidy results (backbone, system, aggregation,
    train_size, seed, metric, value).  Rows with ``metric`` are averaged per (backbone, system) – a raw
    (uncorrected) error does not depend on train_size, seed or aggregation, so the spread is reported to
    show it.  ``systems`` maps system → metal (default: ``"cu-s"`` → ``"Cu"`` for centre S).  Returns one
    row per backbone and system with the columns of ``RELATION_COLUMNS``.
    """
    import numpy as np
    import pandas as pd

    _check_columns(counts_df, sweep_results_df)
    counts = counts_df[(counts_df["center"] == center) & (counts_df["category"] == category)
                       & (counts_df["unit"] == unit)]
    if counts.empty:
        raise ValueError(f"no counts for center={center!r}, category={category!r}, unit={unit!r}")
    by_metal = dict(zip(counts["neighbor"], counts["count"]))
    sweep = _raw_errors(sweep_results_df, metric)
    mapping = dict(systems) if systems is not None else {
        s: m for s in sweep["system"].unique() if (m := _metal_of_system(s, center)) is not None}
    sweep = sweep[sweep["system"].isin(list(mapping))]
    if sweep.empty:
        return pd.DataFrame(columns=RELATION_COLUMNS)
    grouped = sweep.groupby(["backbone", "system"], sort=True)["value"]
    agg = grouped.agg(error_mean="mean", error_std="std", error_min="min", error_max="max",
                      n_values="count").reset_index()
    agg["metal"] = agg["system"].map(mapping)
    agg["env_count"] = agg["metal"].map(lambda m: by_metal.get(m, np.nan))
    agg["center"], agg["category"], agg["unit"], agg["metric"] = center, category, unit, metric
    agg["error_std"] = agg["error_std"].fillna(0.0)
    return agg[RELATION_COLUMNS].reset_index(drop=True)


def _draw_backbones(ax: Any, relation_df: Any) -> None:
    markers = "osD^v<>ph*"
    for i, (backbone, rows) in enumerate(relation_df.groupby("backbone", sort=True)):
        rows = rows.sort_values("env_count")
        x = rows["env_count"].clip(lower=0.8)
        ax.errorbar(x, rows["error_mean"], yerr=rows["error_std"], marker=markers[i % len(markers)],
                    linestyle="-", capsize=3, label=str(backbone))
        for xi, yi, metal, n in zip(x, rows["error_mean"], rows["metal"], rows["env_count"]):
            label = f"{metal} (0, drawn at 0.8)" if n == 0 else str(metal)
            ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)


def plot_relation(relation_df: Any, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Scatter: environment count in the training set (log x) against each backbone's raw error."""
    if relation_df.empty:
        raise ValueError("nothing to plot: the relation table is empty")
    first = relation_df.iloc[0]
    fig = new_figure((6.0, 4.5))
    ax = fig.subplots()
    _draw_backbones(ax, relation_df)
    ax.set_xscale("log")
    plain_log_labels(ax.xaxis)
    cat = _CATEGORY_TEXT.get(first["category"], first["category"]).format(c=first["center"])
    ax.set_xlabel(f"{first['center']} environments with {cat} in the training set ({first['unit']}, log scale)")
    metric = str(first["metric"])
    ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
    ax.set_title(f"raw backbone error vs training-set coverage of M–{first['center']}")
    ax.legend(title="backbone", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem)
