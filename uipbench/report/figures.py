"""Figures of a sweep (matplotlib, PNG and SVG, labelled axes with units).

Figures are ``matplotlib.figure.Figure`` objects, drawn without pyplot: no backend is chosen
(nor changed for the caller) and nothing stays open; matplotlib is imported when a figure is drawn.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..harness.metrics import get_metric
from .tables import MAE, evidence_choice, headline, summarise

AGG_STYLE = {"global": ("tab:blue", "o"), "species": ("tab:orange", "s"), "atomic": ("tab:green", "^")}
SYSTEM_COLOURS = {"cu-s": "tab:orange", "ag-s": "tab:gray", "au-s": "goldenrod"}


def subplots(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Any, Any]:
    """``(figure, axes)`` like ``pyplot.subplots``, on a Figure of its own (no pyplot, no backend)."""
    from matplotlib.figure import Figure

    fig_kw = {k: kw.pop(k) for k in ("figsize", "dpi") if k in kw}
    fig = Figure(**fig_kw)
    return fig, fig.subplots(nrows, ncols, **kw)


def save(fig, out: Path, name: str) -> list[Path]:
    """Write ``fig`` as PNG and SVG; a pyplot figure (of a caller using pyplot) is closed after."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    return paths


def learning_curves(results: pd.DataFrame, out: Path) -> Path:
    """Held-out energy MAE vs training size: rows backbones, columns systems; raw as a grey band."""
    from matplotlib import ticker

    summary = summarise(results, MAE)
    backbones, systems = sorted(summary.backbone.unique()), _system_order(summary.system.unique())
    fig, axes = subplots(len(backbones), len(systems), figsize=(3.3 * len(systems), 2.6 * len(backbones)),
                             squeeze=False, sharex="col")
    for i, backbone in enumerate(backbones):
        for j, system in enumerate(systems):
            ax = axes[i][j]
            part = summary[(summary.backbone == backbone) & (summary.system == system)]
            raw = part[part.model == "raw"].sort_values("train_size")
            if not raw.empty:
                ax.plot(raw.train_size, raw["mean"], color="0.4", ls="--", marker="x", label="raw (offset only)")
                ax.fill_between(raw.train_size, raw["mean"] - raw["std"].fillna(0), raw["mean"] + raw["std"].fillna(0),
                                color="0.85")
            for descriptor, ls in (("embedding", "-"), ("soap", ":")):
                for agg, (colour, marker) in AGG_STYLE.items():
                    d = part[(part.model == "delta") & (part.descriptor == descriptor) & (part.aggregation == agg)]
                    d = d.sort_values("train_size")
                    if d.empty:
                        continue
                    ax.errorbar(d.train_size, d["mean"], yerr=d["std"].fillna(0), color=colour, marker=marker, ms=3,
                                ls=ls, capsize=2, lw=1, label=f"Δ {agg}" + (" (SOAP)" if descriptor == "soap" else ""))
            ax.set_xscale("log")
            sizes = sorted(summary[summary.system == system].train_size.unique())
            ax.xaxis.set_major_locator(ticker.FixedLocator(sizes))
            ax.xaxis.set_major_formatter(ticker.FixedFormatter([str(v) for v in sizes]))
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            ax.set_title(f"{backbone} · {system}", fontsize=9)
            if j == 0:
                ax.set_ylabel(get_metric(MAE).axis_label)
            if i == len(backbones) - 1:
                ax.set_xlabel("training structures")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 7), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0 + 0.12 / len(backbones)))
    fig.suptitle("Held-out energy error vs training-set size (mean ± std over seeds)", y=1.0 + 0.22 / len(backbones))
    fig.tight_layout()
    return save(fig, out, "learning_curves")[0]


def heatmap(results: pd.DataFrame, out: Path) -> Path:
    """Backbone × system: raw error and Δ error (evidence-chosen aggregation; best on test where the
    results hold no evidence) at the largest training size."""
    table = headline(results)
    if not table.empty:
        table["delta_shown"] = table.chosen_mean.where(np.isfinite(table.chosen_mean), table.delta_mean)
    backbones, systems = sorted(table.backbone.unique()), _system_order(table.system.unique())
    fig, axes = subplots(1, 2, figsize=(3.0 + 1.3 * len(systems) * 2, 1.2 + 0.55 * len(backbones)),
                             sharey=True)
    vmax = float(np.nanmax(table.raw_mean)) if not table.empty else 1.0
    for ax, column, title in ((axes[0], "raw_mean", "raw (per-species offset)"),
                              (axes[1], "delta_shown", "Δ-corrected (aggregation by evidence)")):
        grid = np.full((len(backbones), len(systems)), np.nan)
        for r in table.itertuples(index=False):
            grid[backbones.index(r.backbone), systems.index(r.system)] = getattr(r, column)
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        for (a, b), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(b, a, f"{v:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if v < 0.6 * vmax else "black")
        ax.set_xticks(range(len(systems)), systems)
        ax.set_yticks(range(len(backbones)), backbones)
        ax.tick_params(axis="y", labelleft=ax is axes[0])
        ax.set_xlabel("system")
        ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=axes, label=f"held-out {get_metric(MAE).axis_label}", shrink=0.9)
    return save(fig, out, "heatmap")[0]


def _best_cells(results: pd.DataFrame) -> pd.DataFrame:
    table = headline(results)
    return table[["backbone", "system", "train_size", "best_aggregation", "chosen_aggregation"]]


def _delta_predictions(choice: pd.DataFrame, p: pd.DataFrame, cell) -> tuple[pd.DataFrame, str]:
    """Δ predictions of one headline cell, each seed with its evidence-chosen aggregation (``choice``:
    :func:`evidence_choice` of the results; best on test where it has no row), and a label for it."""
    delta = p[(p.model == "delta") & (p.descriptor == "embedding")]
    chosen = choice[(choice.backbone == cell.backbone) & (choice.system == cell.system)
                    & (choice.train_size == cell.train_size)]
    if chosen.empty:
        return delta[delta.aggregation == cell.best_aggregation], f"{cell.best_aggregation}, best on test"
    picked = delta.merge(chosen[["seed", "aggregation"]], on=["seed", "aggregation"], how="inner")
    return picked, f"{cell.chosen_aggregation}, by evidence"


def parity(results: pd.DataFrame, predictions: pd.DataFrame, out: Path, system: str | None = None) -> Path:
    """DFT vs predicted energy per atom on held-out structures, raw and Δ-corrected (best aggregation,
    largest training size, all seeds)."""
    best = _best_cells(results)
    choice = evidence_choice(results)
    system = system or ("all" if "all" in set(best.system) else sorted(best.system)[0])
    best = best[best.system == system]
    backbones = sorted(best.backbone)
    fig, axes = subplots(len(backbones), 2, figsize=(7.2, 3.3 * len(backbones)), squeeze=False)
    for i, r in enumerate(best.itertuples(index=False)):
        p = predictions[(predictions.backbone == r.backbone) & (predictions.system == system)
                        & (predictions.train_size == r.train_size)]
        raw = p[p.model == "raw"]
        delta, label = _delta_predictions(choice, p, r)
        centre = (p.energy_ref / p.n_atoms).groupby(p.member_system).mean()
        for ax, part, title in ((axes[i][0], raw, "raw"), (axes[i][1], delta, f"Δ ({label})")):
            shift = part.member_system.map(centre)
            x = 1000 * (part.energy_ref / part.n_atoms - shift)
            y = 1000 * (part.energy_pred / part.n_atoms - shift)
            for member, colour in SYSTEM_COLOURS.items():
                m = part.member_system == member
                if m.any():
                    ax.scatter(x[m], y[m], s=10, alpha=0.6, color=colour, label=member)
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
            err = np.mean(np.abs(y - x))
            ax.set_title(f"{r.backbone} · {title}: MAE {err:.1f} meV/atom", fontsize=9)
            ax.set_xlabel("E_DFT − ⟨E_DFT⟩ (meV/atom)")
            ax.set_ylabel("E_predicted − ⟨E_DFT⟩ (meV/atom)")
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Parity on held-out structures ({system}, largest training set, all seeds;\n"
                 "energies per atom relative to each system's mean DFT value)")
    fig.tight_layout()
    return save(fig, out, "parity")[0]


def s_s_diagnosis(results: pd.DataFrame, predictions: pd.DataFrame, out: Path, system: str | None = None) -> Path:
    """Mean signed error vs number of S–S pairs (< 2.4 Å) per structure: one panel per backbone, the raw
    backbone and its Δ-correction side by side at each count, with the number of structures of each point.

    ``system``: default the pooled system when the results have one (every metal), else the first.
    """
    from matplotlib import ticker

    best = _best_cells(results)
    choice = evidence_choice(results)
    if system is None and not best.empty:
        system = "all" if "all" in set(best.system) else _system_order(best.system.unique())[0]
    cells = best[best.system == system].sort_values("backbone")
    ncols = min(3, max(1, len(cells)))
    nrows = max(1, -(-len(cells) // ncols))
    fig, axes = subplots(nrows, ncols, figsize=(3.9 * ncols, 3.0 * nrows + 0.6), squeeze=False, sharey=True)
    for ax, r in zip(axes.flat, cells.itertuples(index=False)):
        p = predictions[(predictions.backbone == r.backbone) & (predictions.system == system)
                        & (predictions.train_size == r.train_size)]
        delta, label = _delta_predictions(choice, p, r)
        counts = _s_s_points(ax, p[p.model == "raw"], -0.15, "0.45", "raw")
        _s_s_points(ax, delta, 0.15, "tab:blue", f"Δ ({label})")
        _count_labels(ax, counts)
        ax.axhline(0, color="k", lw=0.6)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_title(f"{r.backbone} (n train {r.train_size})", fontsize=9)
        ax.set_xlabel("S–S pairs in the structure (< 2.4 Å)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left", frameon=False)
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("mean signed error (meV/atom)")
    where = "every system pooled ('all')" if system == "all" else system
    fig.suptitle(f"S–S diagnosis: signed error (prediction − DFT) vs S–S motifs, held-out structures of {where}, "
                 f"largest training set, all seeds;\nnegative = S–S over-bound; error bars: standard error over "
                 f"predictions; n = distinct structures per S–S count", fontsize=10)
    fig.tight_layout()
    return save(fig, out, "s_s_diagnosis")[0]


def _s_s_points(ax, part: pd.DataFrame, shift: float, colour: str, label: str) -> pd.Series:
    """One series of the S–S diagnosis: mean ± SEM per S–S count; returns the structures per count."""
    err = 1000 * (part.energy_pred - part.energy_ref) / part.n_atoms
    g = err.groupby(part.n_ss_pairs).agg(["mean", "sem"])
    ax.errorbar(g.index.to_numpy() + shift, g["mean"], yerr=g["sem"].fillna(0), color=colour, ls="none",
                marker="o", ms=4, capsize=2, label=label)
    return part.groupby("n_ss_pairs").structure.nunique()


def _count_labels(ax, counts: pd.Series) -> None:
    """``n = …`` structures above each S–S count (the raw and Δ points of a count share their structures)."""
    for x, n in counts.items():
        ax.text(x, 0.97, f"n={n}", transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=7,
                color="0.3")


def _system_order(systems) -> list[str]:
    order = ["cu-s", "ag-s", "au-s", "all"]
    return [s for s in order if s in set(systems)] + sorted(set(systems) - set(order))
