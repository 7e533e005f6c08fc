"""Bad input a search refuses before it relaxes anything, each with a message naming the problem.

* the template: no fixed atoms (the slab would drift), or two atoms closer than the problem's
  minimum distance for their elements (overlapping atoms);
* the composition cannot fit the cell: more adsorbates than disks of diameter d_min (the
  smallest adsorbate–adsorbate minimum distance) pack hexagonally in the surface cell, times
  the layers of spacing d_min the height range holds, or more of one element than fit at its
  like-pair distance – a necessary condition; one candidate is then drawn as a probe, which
  fails (:class:`CandidateError`) when placement is still impossible;
* the backbone: an element it does not support, or too little vacuum for its cutoff;
* the Δ-model: fitted on another backbone or other weights (the provenance ``uipbench.delta.load``
  attaches; a model fitted in this process has none and is taken as it is), or never trained on
  an element of the problem.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms

from .candidates import CandidateGenerator, region_box
from .problem import SearchProblem, overfilled


class SearchInputError(ValueError):
    """Input a search cannot run with; raised before any relaxation."""


def check_template(problem: SearchProblem, template: Atoms) -> None:
    from ase.constraints import FixAtoms

    fixed = [i for c in template.constraints if isinstance(c, FixAtoms) for i in c.get_indices()]
    if not fixed:
        raise SearchInputError(f"{problem.name}: the template slab has no fixed atoms (FixAtoms); fix at least "
                               f"the bottom layer (fixed_layers >= 1), or the slab drifts during relaxation")
    symbols = template.get_chemical_symbols()
    pairs = dict(problem.min_distances)
    unknown = sorted({tuple(sorted((a, b))) for a in set(symbols) for b in set(symbols)} - set(pairs))
    if unknown:
        raise SearchInputError(f"{problem.name}: no minimum distance for the template's element pair(s) "
                               + ", ".join(f"{a}-{b}" for a, b in unknown))
    d = template.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    limit = np.array([[pairs[tuple(sorted((a, b)))] for b in symbols] for a in symbols])
    close = np.argwhere(np.triu(d < limit, 1))
    if len(close):
        i, j = close[0]
        raise SearchInputError(f"{problem.name}: template atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) overlap: "
                               f"{d[i, j]:.2f} Å apart, minimum {limit[i, j]} Å ({len(close)} such pair(s))")


def template_area(template: Atoms) -> float:
    """In-plane area (Å²) of the template's cell."""
    cell = template.cell.array
    return float(np.linalg.norm(np.cross(cell[0], cell[1])))


def check_fits(problem: SearchProblem, template: Atoms) -> None:
    """The packing bound of :func:`uipbench.search.problem.overfilled` on the template's area, then a probe."""
    why = overfilled(problem, template_area(template))
    if why:
        raise SearchInputError(f"{problem.name}: {why}; use a larger cell or fewer adsorbates")
    CandidateGenerator(problem, template).random(np.random.default_rng(0))  # the probe


def check_backbone(problem: SearchProblem, template: Atoms, backbone: Any) -> None:
    from ase.data import atomic_numbers

    supported = getattr(backbone, "supported_numbers", None)
    elements = sorted({*template.get_chemical_symbols(), *problem.adsorbate_symbols})
    if supported is not None:
        missing = [e for e in elements if atomic_numbers[e] not in supported]
        if missing:
            raise SearchInputError(f"{problem.name}: element(s) {', '.join(missing)} not supported by backbone "
                                   f"{backbone.name}")
    prepare = getattr(backbone, "prepare", None)
    if prepare is not None:  # vacuum against the cutoff, with adsorbates at the top of the region
        p0, vectors = region_box(problem, template)
        top = [p0 + vectors[2]] if problem.n_adsorbates else []  # a clean slab: the template alone
        probe = template + Atoms(problem.adsorbate_symbols[:1], positions=top)
        prepare(probe, where=f"search problem {problem.name}")


def _check_provenance(provenance: Any, meta: Any) -> None:
    from ..delta.io import BackboneMismatchError

    if provenance.backbone != meta.backbone:
        raise BackboneMismatchError(f"the Δ-model was fitted on backbone {provenance.backbone!r}, not "
                                    f"{meta.backbone!r}")
    if provenance.weights_sha256 != meta.weights_sha256:
        raise BackboneMismatchError(f"the Δ-model was fitted on {provenance.backbone} weights "
                                    f"{provenance.weights_sha256[:12]}…, these are {meta.weights_sha256[:12]}…; "
                                    f"refit it for these weights")


def check_delta(problem: SearchProblem, template: Atoms, backbone: Any, delta: Any) -> None:
    from ase.data import atomic_numbers, chemical_symbols

    provenance = getattr(delta, "provenance_", None)  # set by uipbench.delta.load; absent when fitted here
    if provenance is not None:
        _check_provenance(provenance, backbone.metadata())
    species = {int(z) for z in getattr(delta, "species_", ())}
    elements = {atomic_numbers[e] for e in (*template.get_chemical_symbols(), *problem.adsorbate_symbols)}
    unseen = sorted(elements - species)
    if unseen:
        raise SearchInputError(f"{problem.name}: the Δ-model was not trained on "
                               f"{', '.join(chemical_symbols[z] for z in unseen)} (trained on "
                               f"{', '.join(chemical_symbols[z] for z in sorted(species))})")


def check_inputs(problem: SearchProblem, backbone: Any, delta: Any = None) -> Atoms:
    """Every check above; returns the template."""
    template = problem.template()
    check_template(problem, template)
    check_backbone(problem, template, backbone)
    if delta is not None:
        check_delta(problem, template, backbone, delta)
    check_fits(problem, template)
    return template
