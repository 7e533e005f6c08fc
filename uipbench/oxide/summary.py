"""``uipbench oxide summary``: every backbone's phase diagram beside DFT's, on one page.

It reads what ``uipbench oxide phase-diagram`` wrote (``phases.json`` of each backbone's folder, through
:func:`uipbench.oxide.report.read_phases`) and the labelled oxide structures, and adds one more diagram:
**DFT over all labelled minima** (the lowest DFT single point of each composition, whichever backbone's search
found it, against the lowest DFT clean slab): the best the DFT data know.  Written: ``report.md`` /
``report.html`` (which phase wins where for each method, and the composition order at Δμ_O values measured
from each method's own Cu2O limit, where the methods' different O2 and Cu2O energies cancel) and
``winners.png`` (one strip per method).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from .._atomic import write_text_atomic
from .._lock import OutputLock
from ..report.html import Block, write_html
from .diagram import DFT, MethodDiagram, composition_counts, method_diagram
from .phase import CLEAN, Interval, Line, Phase
from .references import check_references, dft_references
from .report import JSON_FILE, markdown_table, read_phases, strip_axes
from .searches import single_points

POOLED = "DFT, all labelled minima"
FIGURE = "winners.png"
#: Δμ_O below each method's own Cu2O limit (eV) at which the composition order is tabulated
OFFSETS = (0.0, -0.3, -0.6)


@dataclass(frozen=True)
class SummaryMethod:
    """One method's diagram as the summary uses it."""

    label: str
    lines: list[Line]
    mu_range: tuple[float, float]
    winners: list[Interval]

    @classmethod
    def of(cls, label: str, method: MethodDiagram) -> "SummaryMethod":
        return cls(label, method.lines, method.mu_range, method.winners)

    def order(self, mu: float) -> list[str]:
        """The compositions from the lowest ΔG at ``mu`` up."""
        return [line.name for line in sorted(self.lines, key=lambda line: line.at(mu))]


def from_phases(data: dict) -> list[SummaryMethod]:
    """The methods of one ``phases.json``; DFT's labelled with the backbone whose minima it scored."""
    out = []
    for name, method in data["methods"].items():
        counts = {p["name"]: (p["n_cu"], p["n_o"]) for p in method["phases"]} | {CLEAN: (0, 0)}
        lines = [Line(ln["name"], *counts[ln["name"]], ln["intercept"], ln["slope"])
                 for ln in method["lines_ev_per_A2"]]
        winners = [Interval(w["name"], w["from"], w["to"]) for w in method["winners"]]
        label = f"DFT at {data['backbone']} minima" if name == DFT else name
        out.append(SummaryMethod(label, lines, tuple(method["mu_o_range"]), winners))
    return out


def pooled_dft(references: Sequence[Atoms], labelled: Sequence[Atoms], area: float, mu_min: float,
               where: str = "references.extxyz") -> MethodDiagram:
    """DFT's diagram over every labelled minimum: the lowest DFT single point per composition (``info["motif"]``;
    DFT relaxations left out, the clean slab being a single point too)."""
    protocols = {a.info.get("protocol") for a in labelled}
    if len(protocols) != 1:
        raise ValueError(f"the labelled oxide structures name {len(protocols)} protocols: {sorted(map(str, protocols))}")
    check_references(references, protocols.pop(), where)
    lowest: dict[str, Atoms] = {}
    for atoms in single_points(labelled):
        motif = str(atoms.info["motif"])
        if motif not in lowest or atoms.get_potential_energy() < lowest[motif].get_potential_energy():
            lowest[motif] = atoms
    if CLEAN not in lowest:
        raise ValueError("no DFT point of the clean slab among the labelled structures")
    clean = lowest.pop(CLEAN)
    phases = [Phase(m, *composition_counts(a, clean), a.get_potential_energy()) for m, a in sorted(lowest.items())]
    return method_diagram(POOLED, dft_references(references, DFT, where), clean.get_potential_energy(), phases, area,
                          mu_min, None)


def plot(methods: Sequence[SummaryMethod], path: Path) -> None:
    """One strip per method: which composition is the lowest over which Δμ_O."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..search.output import save_png

    names = sorted({line.name for m in methods for line in m.lines} - {CLEAN})
    colours = {CLEAN: "0.3"} | {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig, axes = plt.subplots(len(methods), 1, figsize=(7.0, 0.55 * len(methods) + 0.8), sharex=True)
    for ax, method in zip(np.atleast_1d(axes), methods):
        strip_axes(ax, method.winners, colours, method.label)
    ax.set_xlim(min(m.mu_range[0] for m in methods), max(m.mu_range[1] for m in methods))
    ax.set_xlabel("Δμ_O (eV); each strip ends at its method's Cu2O limit")
    save_png(fig, path)


def blocks(methods: Sequence[SummaryMethod]) -> list[Block]:
    rows = [[m.label, f"{m.mu_range[1]:.2f}",
             "; ".join(f"{w.name} {w.start:.2f} … {w.end:.2f}" for w in m.winners)] for m in methods]
    order = [[m.label, *(" < ".join(m.order(m.mu_range[1] + off)) for off in OFFSETS)] for m in methods]
    return [
        ("md", "## The '8' Cu oxide on Cu(111): every backbone against DFT"),
        ("md", "Each backbone's diagram uses its own energies of its own search minima and references; "
               "'backbone + Δ' is the leave-one-composition-out Δ-correction (`--corrected`); 'DFT at X minima' "
               "scores X's minima with DFT single points; '" + POOLED + "' takes, per composition, the lowest "
               "DFT point of any labelled minimum. Per-backbone pages: the folders listed below."),
        ("md", f"![winners]({FIGURE})"),
        ("md", markdown_table(["method", "Cu2O limit of Δμ_O (eV)", "lowest phase over Δμ_O (eV)"], rows)),
        ("md", "Composition order (lowest ΔG first) at Δμ_O measured from each method's own Cu2O limit:"),
        ("md", markdown_table(["method", *(f"limit {off:+.1f} eV" for off in OFFSETS)], order)),
    ]


def summary(diagrams: Sequence[Path], out: Path, references: Sequence[Atoms], labelled: Sequence[Atoms],
            mu_min: float, where: str = "references.extxyz") -> Path:
    """Write the summary of the ``diagrams`` folders (each a ``phase-diagram`` output) into ``out``."""
    methods, areas = [], set()
    for folder in diagrams:
        data = read_phases(Path(folder) / JSON_FILE)
        areas.add(round(float(data["area_A2"]), 6))
        methods += from_phases(data)
    if len(areas) != 1:
        raise ValueError(f"the diagrams are of different cells (areas {sorted(areas)} Å²)")
    methods.append(SummaryMethod.of(POOLED, pooled_dft(references, labelled, areas.pop(), mu_min, where)))
    with OutputLock(out, command=" ".join(["uipbench", *sys.argv[1:]])):
        out.mkdir(parents=True, exist_ok=True)
        plot(methods, out / FIGURE)
        section = blocks(methods) + [("md", "Diagrams: " + ", ".join(f"`{Path(d)}`" for d in diagrams))]
        write_text_atomic(out / "summary.json", json.dumps(
            {"methods": [{"label": m.label, "mu_o_range": list(m.mu_range),
                          "winners": [vars(w) for w in m.winners]} for m in methods],
             "diagrams": [str(d) for d in diagrams]}, indent=2) + "\n")
        write_text_atomic(out / "report.md", "\n\n".join(text for _, text in section) + "\n")
        write_html(section, out / "report.html", title="uipbench: the '8' Cu oxide, backbones against DFT")
    return out / "report.md"
