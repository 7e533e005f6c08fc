"""What a search leaves in its folder: the distinct minima (extxyz + table) and two figures."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from .._atomic import write_atomic, write_text_atomic
from .engine import Evaluation
from .minima import Minimum, adsorbate_bonds

#: minima pictured in ``best_minima.png``
N_PICTURED = 6


def minimum_rows(minima: list[Minimum], n_slab: int) -> list[dict[str, Any]]:
    """One row per minimum, lowest first: what ``minima.csv`` holds."""
    best = minima[0].energy if minima else 0.0
    rows = []
    for rank, m in enumerate(minima, start=1):
        heights = m.atoms.positions[n_slab:, 2] - m.atoms.positions[:n_slab, 2].max()
        rows.append({"rank": rank, "energy": m.energy, "energy_above_best": m.energy - best,
                     "energy_std": m.energy_std, "evaluation": m.evaluation,
                     "first_evaluation": min(m.hits, default=m.evaluation), "hits": len(m.hits),
                     "adsorbate_bonds": adsorbate_bonds(m.atoms, n_slab),
                     "mean_adsorbate_height": float(heights.mean()) if len(heights) else float("nan"),
                     "formula": m.atoms.get_chemical_formula()})
    return rows


def write_minima(out: Path, minima: list[Minimum], n_slab: int, provenance: dict[str, Any]) -> None:
    """``minima.extxyz`` (energy, σ and provenance in each structure's info) and ``minima.csv``."""
    import pandas as pd
    from ase.io import write

    rows = minimum_rows(minima, n_slab)
    structures = []
    for row, m in zip(rows, minima):
        atoms = m.atoms.copy()
        atoms.info = {key: value for key, value in provenance.items() if value is not None}
        atoms.info.update(rank=row["rank"], predicted_energy=m.energy, evaluation=m.evaluation,
                          first_evaluation=row["first_evaluation"], hits=len(m.hits),
                          adsorbate_bonds=row["adsorbate_bonds"])
        if m.energy_std is not None:
            atoms.info["predicted_energy_std"] = m.energy_std
        structures.append(atoms)
    buffer = io.StringIO()
    if structures:
        write(buffer, structures, format="extxyz")
    write_text_atomic(out / "minima.extxyz", buffer.getvalue())
    columns = list(rows[0]) if rows else ["rank", "energy"]
    write_text_atomic(out / "minima.csv", pd.DataFrame(rows, columns=columns).to_csv(index=False))


def save_png(fig: Any, path: Path) -> None:
    """Write a pyplot figure as PNG (120 dpi) atomically, and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, lambda fh: fh.write(buffer.getvalue()), mode="wb")


def plot_best_vs_evaluations(path: Path, evaluations: list[Evaluation], title: str) -> None:
    """Best energy found against evaluations, each evaluation's energy as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    energies = np.array([e.energy for e in evaluations])
    index = np.arange(1, len(energies) + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(index, energies, "o", ms=3, color="0.6", label="relaxed candidate")
    ax.step(index, np.minimum.accumulate(energies), where="post", color="C0", label="best so far")
    ax.set_xlabel("evaluations (relaxations)")
    ax.set_ylabel("energy (eV)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    save_png(fig, path)


def plot_top_views(path: Path, panels: Sequence[tuple[Atoms, str]], title: str) -> None:
    """One top view (ASE's plot_atoms, wrapped into the cell) per ``(structure, caption)``, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.visualize.plot import plot_atoms

    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.0 * max(len(panels), 1), 3.2), squeeze=False)
    for ax, (atoms, caption) in zip(axes[0], panels):
        shown = atoms.copy()
        shown.wrap()
        plot_atoms(shown, ax, rotation="0x,0y,0z", radii=0.6)
        ax.set_title(caption, fontsize=8)
        ax.set_axis_off()
    if not panels:
        axes[0][0].set_axis_off()
    lines = max((caption.count("\n") + 1 for _, caption in panels), default=1)
    fig.suptitle(title, fontsize=9, y=0.98 + 0.06 * max(0, lines - 2))  # above captions of more than two lines
    save_png(fig, path)


def plot_best_minima(path: Path, minima: list[Minimum], n_slab: int, title: str) -> None:
    """Top views of the lowest minima, with energy above the best and S–S bonds."""
    shown = minima[:N_PICTURED]
    plot_top_views(path, [(m.atoms, f"#{rank}  +{m.energy - shown[0].energy:.3f} eV\n"
                                    f"{adsorbate_bonds(m.atoms, n_slab)} adsorbate bond(s), found {len(m.hits)}x")
                          for rank, m in enumerate(shown, start=1)], title)
