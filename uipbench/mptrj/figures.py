"""Figures of a count: bars per category and neighbour element, log scale, PNG and SVG.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no backend switch), so
drawing one changes nothing in the caller's matplotlib state.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .records import NO_NEIGHBOR, UNITS

_CATEGORY_COLORS = {
    "metal_only": "#1f77b4", "metal_and_center": "#9467bd", "any_metal": "#aec7e8",
    "center_only": "#d62728", "any_center": "#ff9896", "isolated": "#7f7f7f", "other": "#bcbd22",
}
_CATEGORY_LABELS = {
    "metal_only": "only M", "metal_and_center": "M + {c} only", "any_metal": "≥1 M",
    "center_only": "only {c}", "any_center": "≥1 {c}", "isolated": "none", "other": "other",
}
_GROUPS = (("metal_only", "any_metal", "metal_and_center"), ("center_only", "any_center"), ("isolated", "other"))

Group = tuple[str, list[tuple[str, str]]]   # (x label, [(category, neighbour), ...])


def new_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib Figure not registered with pyplot (nothing to close, no backend needed)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def save_figure(fig: Any, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``fig`` atomically as ``<stem>.png`` (150 dpi) and ``<stem>.svg``; return both paths."""
    from .._atomic import write_atomic

    stem = Path(stem)
    png, svg = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")
    write_atomic(png, lambda fh: fig.savefig(fh, format="png", dpi=150, bbox_inches="tight"), mode="wb")
    write_atomic(svg, lambda fh: fig.savefig(fh, format="svg", bbox_inches="tight"), mode="wb")
    return png, svg


def plain_log_labels(axis: Any) -> None:
    """Label a log axis with plain numbers (1, 10, 1,000) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _groups(sub: Any, center: str) -> list[Group]:
    metals = list(dict.fromkeys(sub.loc[sub["category"] == "metal_only", "neighbor"]))
    groups: list[Group] = [(m, [(c, m) for c in _GROUPS[0]]) for m in metals]
    groups.append((center, [(c, center) for c in _GROUPS[1]]))
    groups.append(("none/other", [(c, NO_NEIGHBOR) for c in _GROUPS[2]]))
    return groups


def _draw_panel(ax: Any, values: Any, groups: list[Group], center: str, unit: str) -> None:
    x, ticks, labels = 0.0, [], []
    for name, members in groups:
        start = x
        for category, neighbor in members:
            v = int(values.get((category, neighbor), 0))
            if v > 0:
                ax.bar(x, v, width=0.8, color=_CATEGORY_COLORS[category])
            ax.text(x, max(v, 1), f"{v:,}", ha="center", va="bottom", fontsize=6, rotation=90)
            x += 1
        ticks.append((start + x - 1) / 2)
        labels.append(name)
        x += 0.8
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    plain_log_labels(ax.yaxis)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels)
    ax.set_xlabel(f"neighbour element of {center} (M)")
    ax.set_ylabel(f"{unit} (log scale)")
    ax.set_title(f"counted in {unit}")


def plot_counts(table: Any, stem: str | os.PathLike, center: str = "S", title: str | None = None
                ) -> tuple[Path, Path]:
    """Bar chart, log scale: counts per category for each neighbour element, one panel per unit."""
    from matplotlib.patches import Patch

    sub = table[(table["center"] == center) & (table["category"] != "all")]
    groups = _groups(sub, center)
    fig = new_figure((4.2 * len(UNITS), 4.0))
    axes = fig.subplots(1, len(UNITS), squeeze=False)
    for ax, unit in zip(axes[0], UNITS):
        _draw_panel(ax, sub[sub["unit"] == unit].set_index(["category", "neighbor"])["count"], groups, center, unit)
    shown = [c for _, members in groups for c, _ in members]
    handles = [Patch(color=_CATEGORY_COLORS[c], label=_CATEGORY_LABELS[c].format(c=center))
               for c in dict.fromkeys(shown)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.06))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, stem)
