"""The benchmark's figures: success rate against CPU time, and the predicted minima beside the DFT-lowest."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

from .collect import RunResult
from .labelling import DftPoint, PointKey
from .score import METRICS, CellScore, ProblemReference, RunScore

METHOD_MARKERS = {"raw": "o", "delta": "s", "al": "^"}
METHOD_LABELS = {"raw": "raw", "delta": "Δ", "al": "active learning"}
#: panels of one problem's picture besides the DFT-lowest structure
N_PREDICTED_PICTURED = 5


def success_vs_cpu(cells: Sequence[CellScore], out: Path) -> Path:
    """One panel per problem: success rate against median CPU seconds per run, one marker per
    (method, backbone): the shape is the method, the colour the backbone.  A cell whose cost is unknown
    (a Δ-model this benchmark did not fit) is left out; the table shows it."""
    from ...report.figures import save, subplots

    problems = list(dict.fromkeys(c.problem for c in cells))
    backbones = list(dict.fromkeys(c.backbone for c in cells))
    colours = {b: f"C{i % 10}" for i, b in enumerate(backbones)}
    fig, axes = subplots(1, max(1, len(problems)), figsize=(3.6 * max(1, len(problems)), 3.4), squeeze=False,
                         sharey=True)
    x_metric, y_metric = METRICS["cpu_seconds"], METRICS["success_rate"]
    for ax, problem in zip(axes[0], problems):
        for c in (c for c in cells if c.problem == problem and c.n and math.isfinite(c.median_cpu_seconds)):
            ax.scatter([c.median_cpu_seconds], [c.success_rate], marker=METHOD_MARKERS.get(c.method, "x"), color=colours[c.backbone],
                       s=45, label=f"{c.backbone} · {METHOD_LABELS.get(c.method, c.method)}", alpha=0.85,
                       edgecolors="k", linewidths=0.5)
        ax.set_title(problem, fontsize=9)
        ax.set_xlabel(f"median {x_metric.axis_label}")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(y_metric.label)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 4), fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, 1.12))
    return save(fig, out, "success_vs_cpu")[0]


def _who(scores: Sequence[RunScore]) -> str:
    counts: dict[str, int] = {}
    for s in scores:
        name = f"{s.spec.backbone} {METHOD_LABELS.get(s.spec.method, s.spec.method)}"
        counts[name] = counts.get(name, 0) + 1
    return textwrap.fill(", ".join(f"{name} ×{n}" for name, n in counts.items()), width=34)


def minima_picture(problem: str, reference: ProblemReference, scores: Sequence[RunScore],
                   runs: dict, points: dict[PointKey, DftPoint], out: Path) -> Path:
    """Top views of ``problem``'s DFT-lowest structure, then of the runs' predicted minima, one per DFT
    rank (the lowest first), each captioned with its DFT energy above the minimum, its S–S bonds and the
    runs that predicted it."""
    from ..output import plot_top_views

    lowest = points[(problem, reference.lowest_hash)]
    panels = [(lowest.atoms, f"DFT-lowest found\nE = {lowest.energy:.3f} eV, {reference.lowest_bonds} S–S bond(s)")]
    by_rank: dict[int, list[RunScore]] = {}
    for s in scores:
        if s.spec.problem == problem and s.status == "scored" and s.dft_rank is not None:
            by_rank.setdefault(s.dft_rank, []).append(s)
    for rank in sorted(by_rank)[:N_PREDICTED_PICTURED]:
        first = by_rank[rank][0]
        run: RunResult = runs[first.spec]
        panels.append((run.candidates[0].atoms, f"predicted minimum, DFT rank {rank}\n+{first.dft_above_minimum:.3f} "
                       f"eV, {first.bonds_predicted} S–S\n{_who(by_rank[rank])}"))
    path = out / f"minima-{problem}.png"
    plot_top_views(path, panels, f"{problem}: predicted minima (backbone geometry) vs the DFT-lowest found")
    return path
