"""What ``uipbench oxide phase-diagram`` writes: the figure, the ΔG table, ``phases.json`` and the report section.

``OUT/phase_diagram.png`` – ΔG(Δμ_O) of every composition, the backbone's lines solid and DFT's dashed
(one colour per composition), each method's Cu2O limit dotted, and under it two strips: which phase is
the lowest over which Δμ_O, for each method.  ``OUT/delta_g.csv`` – ΔG (meV/Å²) at chosen Δμ_O values.
``OUT/phases.json`` – everything the diagram is made of.  ``OUT/report.md`` and ``OUT/report.html`` – the
oxide's report section (:mod:`uipbench.report.html`).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

from ase import Atoms

from .._atomic import write_text_atomic
from ..report.html import Block, write_html
from .diagram import CompositionRow, MethodDiagram, PhaseDiagram, delta_g_table, table_mus
from .phase import Interval

FIGURE, TABLE, JSON_FILE, MINIMA_FIGURE = "phase_diagram.png", "delta_g.csv", "phases.json", "minima.png"
METHOD_TEXT = ("ΔG(Δμ_O) = [E_slab − E_clean − ΔN_Cu·E_Cu(bulk) − N_O(½E_O2 + Δμ_O)] / A, each method with its own "
               "energies (protocol {protocol}; A = {area:.2f} Å², the '8' cell). The backbone line of a composition "
               "is its lowest search minimum; the DFT line the lowest DFT single point among its labelled minima, "
               "at the backbone's geometry (no DFT relaxation). Δμ_O runs from the O-poor end to each method's "
               "Cu2O limit. O2 is the spin-polarised triplet; its GGA overbinding is not corrected.")


def _colours(names: Sequence[str]) -> dict[str, str]:
    return {name: "0.3" if name == "clean" else f"C{i % 10}" for i, name in enumerate(names)}


def strip_axes(ax, winners: list[Interval], colours: dict[str, str], label: str) -> None:
    for w in winners:
        ax.axvspan(w.start, w.end, color=colours.get(w.name, "0.8"), alpha=0.6)
        ax.text(0.5 * (w.start + w.end), 0.5, w.name, ha="center", va="center", fontsize=7)
    ax.set_yticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)


def plot(diagram: PhaseDiagram, path: Path) -> None:
    """The figure (see the module docstring), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = diagram.methods
    names = [line.name for line in diagram.backbone_diagram.lines]
    colours = _colours(names)
    lo = min(m.mu_range[0] for m in methods)
    hi = max(m.mu_range[1] for m in methods)
    fig, axes = plt.subplots(1 + len(methods), 1, figsize=(6.4, 4.6 + 0.4 * len(methods)), sharex=True,
                             gridspec_kw={"height_ratios": [8] + [1] * len(methods)})
    ax = axes[0]
    for method in methods:
        style = "--" if method is diagram.dft else "-." if method is diagram.corrected else "-"
        mu = np.linspace(*method.mu_range, 50)
        for line in method.lines:
            ax.plot(mu, 1000.0 * line.at(mu), style, color=colours.get(line.name, "k"),
                    label=f"{line.name} ({method.method})")
        ax.axvline(method.mu_range[1], ls=":", color="0.5", lw=0.8)
    ax.set_ylabel("ΔG (meV/Å²)")
    corrected = f", {diagram.corrected.method} (dash-dot)" if diagram.corrected else ""
    ax.set_title(f"{diagram.backbone} (solid){corrected} and DFT (dashed), '8' cell, {diagram.area:.1f} Å²",
                 fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    for strip, method in zip(axes[1:], methods):
        strip_axes(strip, method.winners, colours, method.method)
    axes[-1].set_xlim(lo, hi)
    axes[-1].set_xlabel("Δμ_O (eV)")
    from ..search.output import save_png

    save_png(fig, path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _winners_text(method: MethodDiagram) -> str:
    spans = "; ".join(f"{w.name} from {w.start:.2f} to {w.end:.2f} eV" for w in method.winners)
    return f"{method.method}: {spans}."


def _composition_table(rows: list[CompositionRow]) -> str:
    return markdown_table(
        ["problem", "phase", "ΔN_Cu", "N_O", "minima", "backbone E (eV)", "DFT lowest E (eV)",
         "backbone rank of the DFT-lowest", "minima with DFT"],
        [[r.problem, r.name, r.n_cu, r.n_o, r.minima, _f(r.backbone_energy, 4), _f(r.dft_energy, 4),
          r.dft_rank if r.dft_rank is not None else "–", r.labelled] for r in rows])


def _references_table(methods: list[MethodDiagram]) -> str:
    return markdown_table(
        ["method", "E_Cu(bulk) (eV/atom)", "E(O2) (eV)", "O2 bond (Å)", "E(Cu2O) (eV/f.u.)", "Cu2O a (Å)",
         "Cu2O limit of Δμ_O (eV)", "E_clean (eV)"],
        [[m.method, _f(m.refs.cu_bulk, 4), _f(m.refs.o2, 4), _f(m.refs.minima.get("O2")),
          _f(m.refs.cu2o, 4), _f(m.refs.minima.get("Cu2O")), _f(m.refs.mu_o_max), _f(m.clean_energy, 4)]
         for m in methods])


def picture_panels(diagram: PhaseDiagram, minima: dict[str, list[Atoms]]) -> list[tuple[Atoms, str]]:
    """Top views for the report: each composition's lowest backbone minimum, and beside it the DFT-lowest of
    its labelled minima where that is another one (``minima``: each problem's minima, backbone order)."""
    panels: list[tuple[Atoms, str]] = []
    for row in diagram.rows:
        found = minima.get(row.problem) or []
        if not found:
            continue
        if row.dft_rank == 1:
            panels.append((found[0], f"{row.name}: backbone #1\n= DFT-lowest of {row.labelled} labelled"))
            continue
        panels.append((found[0], f"{row.name}: backbone #1" + ("\n(no DFT point)" if row.dft_rank is None else "")))
        if row.dft_rank is not None and row.dft_rank <= len(found):
            panels.append((found[row.dft_rank - 1], f"{row.name}: DFT-lowest\n(backbone #{row.dft_rank})"))
    return panels


def blocks(diagram: PhaseDiagram, table: list[dict], pictures: bool = False) -> list[Block]:
    """The report section as blocks (heading, paragraphs, tables, the figures)."""
    methods = diagram.methods
    mu_columns = [k for k in table[0] if k.endswith(" eV")] if table else []
    out: list[Block] = [
        ("md", f"## The '8' Cu oxide on Cu(111): surface phase diagram, {diagram.backbone} against DFT"),
        ("md", METHOD_TEXT.format(protocol=diagram.protocol, area=diagram.area)),
        ("md", "Lowest phase over Δμ_O: " + " ".join(_winners_text(m) for m in methods)),
        ("md", f"![phase diagram]({FIGURE})"),
        ("md", _composition_table(diagram.rows)),
        ("md", _references_table(methods)),
        ("md", markdown_table(["method", "phase", *(f"ΔG (meV/Å²) at {k}" for k in mu_columns)],
                               [[r["method"], r["phase"], *(f"{r[k]:.1f}" for k in mu_columns)]
                                for r in table])),
    ]
    if pictures:
        out.append(("md", f"Top views of the minima (Cu brown, O red; the slab wrapped into the '8' cell):\n\n"
                          f"![minima]({MINIMA_FIGURE})"))
    if diagram.corrected is not None:
        out += [("md", CORRECTED_TEXT.format(method=diagram.corrected.method)), ("md", _held_out_table(diagram))]
    out += [("md", note) for note in diagram.notes]
    return out


CORRECTED_TEXT = ("{method}: the backbone plus a Δ-GPR (atomic aggregation, sparse, per-species offset) fitted on "
                  "E_DFT − E_backbone of the labelled oxide structures (references, and DFT points of minima). "
                  "Each composition's line comes **entirely** from a model fitted **without** that composition's "
                  "labelled structures (leave one composition out): it corrects all of that composition's minima "
                  "(the lowest corrected one is the phase) and the references and clean slab that are the line's "
                  "zero. The Δμ_O range and the listed references come from the model fitted on everything. "
                  "Held-out errors of each model on its composition's labelled structures:")


def _held_out_table(diagram: PhaseDiagram) -> str:
    return markdown_table(
        ["problem", "phase", "fitted on", "held out", "held-out MAE (meV/atom)", "held-out mean signed (meV/atom)",
         "backbone rank of the corrected lowest", "corrected E (eV)"],
        [[h.problem, h.name, h.training, h.held_out, _f(h.held_out_mae, 1), _f(h.held_out_signed, 1), h.rank,
          _f(h.energy, 4)] for h in diagram.held_out])


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def read_phases(path: Path) -> dict:
    """``phases.json`` as :func:`write_outputs` wrote it (a clear error naming the file otherwise)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: not found; run `uipbench oxide phase-diagram --out {Path(path).parent}` first") \
            from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a phase-diagram file ({error})") from None
    missing = [k for k in ("backbone", "area_A2", "methods") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a phase-diagram file (no {', '.join(missing)})")
    return data


def _json(diagram: PhaseDiagram, table: list[dict], provenance: dict) -> dict:
    return {"backbone": diagram.backbone, "protocol": diagram.protocol, "area_A2": diagram.area,
            "methods": {m.method: m.to_dict() for m in diagram.methods},
            "held_out": [vars(h) for h in diagram.held_out],
            "compositions": [vars(r) for r in diagram.rows], "delta_g_meV_per_A2": table, "notes": diagram.notes,
            "provenance": provenance}


def write_outputs(diagram: PhaseDiagram, out: Path, provenance: dict, mus: Sequence[float] | None = None,
                  minima: dict[str, list[Atoms]] | None = None) -> Path:
    """Every output file in ``out``; returns ``report.md``.  ``minima``: each problem's minima in backbone order,
    for the top views (``minima.png``)."""
    out.mkdir(parents=True, exist_ok=True)
    table = delta_g_table(diagram, mus if mus is not None else table_mus(diagram))
    plot(diagram, out / FIGURE)
    panels = picture_panels(diagram, minima or {})
    if panels:
        from ..search.output import plot_top_views

        plot_top_views(out / MINIMA_FIGURE, panels, f"'8' Cu oxide minima, {diagram.backbone}")
    write_text_atomic(out / TABLE, _csv(table))
    write_text_atomic(out / JSON_FILE, json.dumps(_json(diagram, table, provenance), indent=2) + "\n")
    section = blocks(diagram, table, pictures=bool(panels))
    write_text_atomic(out / "report.md", "\n\n".join(text for _, text in section) + "\n")
    write_html(section, out / "report.html", title=f"uipbench: the '8' Cu oxide, {diagram.backbone}")
    return out / "report.md"
