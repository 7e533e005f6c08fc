"""The embedding's Jacobian with respect to atomic positions, and the force labels of the Δ-fit made from it.

``J[j, c, i, :] = ∂ embedding_i / ∂ r_{a_j, c}`` for the labelled atoms ``a_j`` is taken by central
differences of the backbone's own embedding, ``(x(r + h e) − x(r − h e)) / 2h`` with ``h = 1e-3 Å``::

* it needs nothing but :meth:`Backbone.embed`, so it is the same code for every family, runs in the
  backbone's environment through the worker like any embedding, and is cached like one: the displaced
  copies are structures of their own in the embedding cache (:func:`uipbench.cache.cached_embed`), so a
  Jacobian is computed once per structure, backbone, weights and precision;
* it is cheaper here than autograd: for a 14-atom Cu(111)+S slab, CHGNet 0.3.0 (float32) took 10 CPU-s
  for all 84 displaced embeddings (batched), against 78 CPU-s for the 42 double-backward passes of the
  autograd Jacobian (create_graph, one pass per position coordinate; 55 s with torch's batched
  ``is_grads_batched``), on the loaded 2-core machine;
* its error is small against the signal: the float32 and float64 CHGNet Jacobians of that slab differ by
  at most 0.0023 of a largest element 0.43 (0.5 %); autograd and central differences by 2e-4 of 0.07.

Which atoms' forces become labels (:func:`labelled_atoms`): ``"adsorbate"`` (default) — the atoms that
are not of the structure's most abundant element, the slab's metal: the S (or O) atoms whose bonding the
backbone gets wrong, at 6 displaced embeddings each (a clean slab has none and adds no force rows; a structure
whose adsorbate outnumbered the metal would have the metal labelled instead: use ``"all"`` there);
``"all"`` — every atom, 6N embeddings per structure.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Sequence

import numpy as np
from ase import Atoms

from ..harness.defaults import FORCE_LABELS as LABELLED
from .forces import ForceLabels

if TYPE_CHECKING:
    from ..adapters.interface import Backbone
    from ..cache import EmbeddingCache

DEFAULT_STEP = 1e-3  # Å


def check_labelled(which: str) -> None:
    """Refuse a choice of labelled atoms that is neither ``"adsorbate"`` nor ``"all"``."""
    if which not in LABELLED:
        raise ValueError(f"force labels on {which!r} atoms: choose one of {', '.join(LABELLED)}")


def labelled_atoms(atoms: Atoms, which: str = "adsorbate") -> np.ndarray:
    """Indices of the atoms whose forces are labels: ``"adsorbate"`` (not of the most abundant element) or
    ``"all"``."""
    check_labelled(which)
    numbers = np.asarray(atoms.numbers)
    if which == "all":
        return np.arange(len(numbers))
    metal = Counter(numbers.tolist()).most_common(1)[0][0]
    return np.flatnonzero(numbers != metal)


def displaced_copies(atoms: Atoms, labelled: np.ndarray, step: float = DEFAULT_STEP) -> list[Atoms]:
    """For each labelled atom and direction, the copy moved by +step then the one moved by −step."""
    if not step > 0:
        raise ValueError(f"finite-difference step must be positive, got {step!r}")
    base = atoms.copy()
    base.calc = None
    out = []
    for a in labelled:
        for c in range(3):
            for sign in (1.0, -1.0):
                moved = base.copy()
                moved.positions[a, c] += sign * step
                out.append(moved)
    return out


def jacobian_from_displaced(embeddings: Sequence[np.ndarray], n_labelled: int,
                            step: float = DEFAULT_STEP) -> np.ndarray:
    """[k, 3, n, d] central differences from the embeddings of :func:`displaced_copies`, in its order."""
    if len(embeddings) != 6 * n_labelled:
        raise ValueError(f"{len(embeddings)} displaced embeddings for {n_labelled} labelled atoms (need 6 each)")
    if n_labelled == 0:  # no atom, no column (ForceLabels.check gives it its structure's shape)
        return np.zeros((0, 3, 0, 0))
    stacked = np.stack([np.asarray(e, np.float64) for e in embeddings])  # [6k, n, d]
    stacked = stacked.reshape(n_labelled, 3, 2, *stacked.shape[1:])
    return (stacked[:, :, 0] - stacked[:, :, 1]) / (2.0 * step)


def force_labels(backbone: "Backbone", structures: Sequence[Atoms], dft_forces: Sequence[np.ndarray],
                 backbone_forces: Sequence[np.ndarray], which: str = "adsorbate", step: float = DEFAULT_STEP,
                 cache: "EmbeddingCache | None" = None) -> list[ForceLabels]:
    """The force labels of ``structures`` for the Δ-fit: residuals ``F_DFT − F_backbone`` on the labelled
    atoms and the embedding's Jacobian there, all displaced copies embedded in one (cached) call."""
    from ..cache import cached_embed

    if not (len(structures) == len(dft_forces) == len(backbone_forces)):
        raise ValueError(f"{len(structures)} structures, {len(dft_forces)} DFT and {len(backbone_forces)} "
                         f"backbone force arrays: one each per structure")
    chosen = [labelled_atoms(a, which) for a in structures]
    copies = [displaced_copies(a, idx, step) for a, idx in zip(structures, chosen)]
    flat = [c for group in copies for c in group]
    embedded = cached_embed(backbone, flat, cache).structures if flat else []
    out, start = [], 0
    for idx, group, f_dft, f_bb in zip(chosen, copies, dft_forces, backbone_forces):
        part = [e.embedding for e in embedded[start:start + len(group)]]
        start += len(group)
        J = jacobian_from_displaced(part, len(idx), step)
        residual = np.asarray(f_dft, np.float64)[idx] - np.asarray(f_bb, np.float64)[idx]
        out.append(ForceLabels(idx, residual, J))
    return out
