"""Figures of a sweep (matplotlib, PNG and SVG, labelled axes with units)."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .tables import MAE, evidence_choice, headline, summarise  # noqa: E402

AGG_STYLE = {"global": ("tab:blue", "o"), "species": ("tab:orange", "s"), "atomic": ("tab:green", "^")}
SYSTEM_COLOURS = {"cu-s": "tab:orange", "ag-s": "tab:gray", "au-s": "goldenrod"}


def save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def learning_curves(results: pd.DataFrame, out: Path) -> Path:
    """Held-out energy MAE vs training size: rows backbones, columns systems; raw as a grey band."""
    summary = summarise(results, MAE)
    backbones, systems = sorted(summary.backbone.unique()), _system_order(summary.system.unique())
    fig, axes = plt.subplots(len(backbones), len(systems), figsize=(3.3 * len(systems), 2.6 * len(backbones)),
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
            ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(sizes))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([str(v) for v in sizes]))
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_title(f"{backbone} · {system}", fontsize=9)
            if j == 0:
                ax.set_ylabel("energy MAE (meV/atom)")
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
    fig, axes = plt.subplots(1, 2, figsize=(3.0 + 1.3 * len(systems) * 2, 1.2 + 0.55 * len(backbones)),
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
    fig.colorbar(im, ax=axes, label="held-out energy MAE (meV/atom)", shrink=0.9)
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
    fig, axes = plt.subplots(len(backbones), 2, figsize=(7.2, 3.3 * len(backbones)), squeeze=False)
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


def s_s_diagnosis(results: pd.DataFrame, predictions: pd.DataFrame, out: Path) -> Path:
    """Mean signed error vs number of S–S pairs (< 2.4 Å) per structure: raw and Δ-corrected."""
    best = _best_cells(results)
    choice = evidence_choice(results)
    systems = _system_order(best.system.unique())
    fig, axes = plt.subplots(1, len(systems), figsize=(3.6 * len(systems), 3.2), squeeze=False, sharey=True)
    for j, system in enumerate(systems):
        ax = axes[0][j]
        for k, r in enumerate(best[best.system == system].itertuples(index=False)):
            p = predictions[(predictions.backbone == r.backbone) & (predictions.system == system)
                            & (predictions.train_size == r.train_size)]
            colour = f"C{k}"
            for model, ls, part in (("raw", "-", p[p.model == "raw"]), ("Δ", "--", _delta_predictions(choice, p, r)[0])):
                err = 1000 * (part.energy_pred - part.energy_ref) / part.n_atoms
                g = err.groupby(part.n_ss_pairs).agg(["mean", "sem", "count"])
                ax.errorbar(g.index, g["mean"], yerr=g["sem"].fillna(0), color=colour, ls=ls, marker="o", ms=3,
                            capsize=2, label=f"{r.backbone} {model}")
        ax.axhline(0, color="k", lw=0.6)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(system, fontsize=10)
        ax.set_xlabel("S–S pairs in the structure (< 2.4 Å)")
        if j == 0:
            ax.set_ylabel("mean signed error (meV/atom)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.12))
    fig.suptitle("S–S diagnosis: signed error (prediction − DFT) vs S–S motifs; negative = S–S over-bound "
                 "(solid raw, dashed Δ)")
    fig.tight_layout()
    return save(fig, out, "s_s_diagnosis")[0]


def _system_order(systems) -> list[str]:
    order = ["cu-s", "ag-s", "au-s", "all"]
    return [s for s in order if s in set(systems)] + sorted(set(systems) - set(order))
