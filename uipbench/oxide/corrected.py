"""The Δ-corrected phase diagram: backbone + Δ, each composition predicted by a Δ-model that never saw it.

Δ-models (:func:`uipbench.harness.fit.fit_residuals`, the suite's defaults: atomic aggregation, sparse) are
fitted on E_DFT − E_backbone of the labelled oxide structures: the references (bulk Cu, the O2 scan, the Cu2O
scan) and the DFT single points of search minima (``datasets/cu-o/structures.extxyz``, whichever backbone's
search found them, DFT relaxations included).  **Leave one composition out:** the line of a composition comes
from a model fitted without any labelled structure of that composition, all of it: that model corrects every
pooled minimum of the composition (the lowest corrected one is the phase, so the correction may also reorder
the backbone's minima) and, for the line's zero, the references and the clean slab (in every model's
training set).  The Δμ_O range (the Cu2O limit) and the diagram's listed references come from the model
fitted on all labelled structures.  So each composition's line is a prediction for a composition the Δ never
saw, which is what a Δ-model fitted on some phases can say about a new one; the held-out error of each model
on its composition's labelled structures is reported beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from ase import Atoms

from ..embedding import StructureEmbedding
from ..harness.fit import dft_energy, fit_residuals
from ..harness.metrics import energy_errors_per_atom_mev, mae
from .diagram import MethodDiagram, composition_counts, method_diagram
from .phase import Phase, clean_line, formation_line
from .references import ReferenceEnergies, reference_energies
from .searches import ProblemMinima

#: the backbone's view of structures, in order (each with its energy)
Embed = Callable[[Sequence[Atoms]], Sequence[StructureEmbedding]]
#: fits a Δ-model (with ``predict``) on embeddings and residuals (eV)
Fit = Callable[[list[StructureEmbedding], np.ndarray], Any]


class CorrectionError(ValueError):
    """The Δ-corrected diagram cannot be made from these inputs."""


@dataclass(frozen=True)
class HeldOut:
    """One composition's leave-one-composition-out model and what it predicts."""

    problem: str
    name: str
    training: int  # labelled structures the model was fitted on
    held_out: int  # labelled structures of this composition, left out of its fit
    held_out_mae: float | None  # meV/atom, |E_backbone + Δ − E_DFT| on those
    held_out_signed: float | None  # meV/atom, mean signed error on those
    rank: int  # the backbone's rank of the minimum the corrected energies put lowest
    energy: float  # its corrected energy (eV)


def _default_fit(embeddings: list[StructureEmbedding], residual: np.ndarray) -> Any:
    return fit_residuals(embeddings, residual)


def corrected_method(pooled: dict[str, ProblemMinima], references: Sequence[Atoms], labelled: Sequence[Atoms],
                     embed: Embed, area: float, method: str, *, mu_min: float, mu_max: float | None = None,
                     where: str = "references.extxyz", fit: Fit | None = None
                     ) -> tuple[MethodDiagram, list[HeldOut]]:
    """The corrected method's diagram and one :class:`HeldOut` per composition (see the module docstring).
    ``labelled``: DFT points of minima, each with ``info["problem"]``; ``embed``: the backbone's view."""
    fit = fit or _default_fit
    clean_name = next(name for name, p in pooled.items() if p.is_clean)
    slabs = [a for a in labelled if a.info.get("problem") in pooled]
    found = {a.info["problem"] for a in slabs}
    missing = [what for what, ok in (("the references (`uipbench oxide references`)", bool(references)),
                                     (f"a DFT point of the clean slab ({clean_name})", clean_name in found),
                                     ("a DFT point of any composition", bool(found - {clean_name}))) if not ok]
    if missing:
        raise CorrectionError(f"a Δ-corrected diagram fits on the labelled oxide structures; there is no "
                              f"{', no '.join(missing)} (label them first)")
    training = [*references, *slabs]
    minima = [(name, rank, atoms) for name, p in pooled.items() for rank, atoms in enumerate(p.minima, 1)]
    views = list(embed([*training, *(atoms for _, _, atoms in minima)]))
    train_views, minima_views = views[:len(training)], views[len(training):]
    residual = np.array([dft_energy(a) for a in training]) - np.array([v.energy for v in train_views])
    owner = [None] * len(references) + [a.info["problem"] for a in slabs]
    clean_view = next(v for (name, rank, _), v in zip(minima, minima_views) if name == clean_name and rank == 1)
    clean_atoms = pooled[clean_name].minima[0]

    def model_without(problem: str | None):
        keep = [i for i, o in enumerate(owner) if o is None or o != problem]
        return fit([train_views[i] for i in keep], residual[keep]), len(keep)

    def zero(model) -> tuple[ReferenceEnergies, float]:
        """A model's references and clean slab: the zero of every line it draws."""
        delta = model.predict([*train_views[:len(references)], clean_view])
        refs = reference_energies(references, [v.energy + d for v, d in zip(train_views, delta)], method, where)
        return refs, float(clean_view.energy + delta[-1])

    full, _ = model_without(None)
    refs, clean_energy = zero(full)
    phases, lines, held = [], [clean_line()], []
    for name, problem in pooled.items():
        if problem.is_clean:
            continue
        model, n_train = model_without(name) if name in owner else (full, len(owner))
        views_c = [v for (n, _, _), v in zip(minima, minima_views) if n == name]
        energies = np.array([v.energy for v in views_c]) + model.predict(views_c)
        best = int(np.argmin(energies))
        phase = Phase(problem.label, *composition_counts(problem.minima[best], clean_atoms), float(energies[best]))
        phases.append(phase)
        refs_c, clean_c = zero(model)  # the whole line from the model that never saw this composition
        lines.append(formation_line(phase, clean_c, refs_c, area))
        idx = [i for i, o in enumerate(owner) if o == name]
        errors = None
        if idx:
            predicted = np.array([train_views[i].energy for i in idx]) + model.predict([train_views[i] for i in idx])
            errors = energy_errors_per_atom_mev(predicted, np.array([dft_energy(training[i]) for i in idx]),
                                                np.array([len(training[i]) for i in idx]))
        held.append(HeldOut(name, problem.label, n_train, len(idx), None if errors is None else mae(errors),
                            None if errors is None else float(np.mean(errors)), best + 1, float(energies[best])))
    return method_diagram(method, refs, clean_energy, phases, area, mu_min, mu_max, lines), held
