"""Force residuals as training labels of the Δ-GPR: the records and the design rows they add.

The sparse ``atomic`` model is a sum over atoms of a function of each atom's (standardised) embedding,
written on the inducing points ``u_m``::

    Δ(S) = Σ_i Σ_m A k(x_i, u_m) w_m,        k(x, u) = exp(-|x - u|² / 2l²)

so a force component is linear in the same weights::

    ΔF_{a,c} = -∂Δ/∂r_{a,c} = Σ_m A w_m Σ_i k(x_i, u_m) (x_i - u_m)·J_{i,a,c} / l²

with ``J_{i,a,c} = ∂x_i/∂r_{a,c}`` the Jacobian of atom i's embedding with respect to atom a's position
(standardised: divided by the feature scale).  A force residual ``F_DFT - F_backbone`` is therefore one
more row of the projected-process design matrix, beside the energy rows ``Σ_i k(x_i, u_m)``; the offset
and the prior mean carry no force.  Energies and forces get their own noise (eV² and eV²/Å²); the solve
divides each row by its noise's square root and uses unit noise (:func:`scaled_rows`).

Which atoms' forces are labels is the caller's choice (:class:`ForceLabels`.atoms): every atom, or the
adsorbate atoms only — the Jacobian costs one column per labelled coordinate (see
:mod:`uipbench.delta.jacobian`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .aggregation import Points
from .kernels import point_kernel


class ForceLabelError(ValueError):
    """Force labels that do not match their structure (shapes, atom indices, non-finite values)."""


@dataclass(frozen=True)
class ForceLabels:
    """Force residuals of one structure on some of its atoms, and the embedding's Jacobian there.

    ``atoms``     int [k]                 indices of the atoms whose forces are labels
    ``residual``  float [k, 3]            F_DFT − F_backbone on those atoms (eV/Å)
    ``jacobian``  float [k, 3, n, d]      ∂embedding[i, :] / ∂position[atoms[j], c] (raw embedding units/Å)
    """

    atoms: np.ndarray
    residual: np.ndarray
    jacobian: np.ndarray

    def check(self, n_atoms: int, width: int, where: str) -> "ForceLabels":
        atoms = np.asarray(self.atoms).reshape(-1)
        if atoms.size and atoms.dtype.kind not in "iu":
            raise ForceLabelError(f"{where}: labelled atoms must be integer indices, got dtype {atoms.dtype}")
        atoms = atoms.astype(np.int64)
        residual = np.asarray(self.residual, dtype=np.float64)
        jacobian = np.asarray(self.jacobian, dtype=np.float64)
        k = len(atoms)
        if k == 0:  # nothing labelled in this structure (a clean slab): no rows, whatever the empty arrays' shapes
            return ForceLabels(atoms, np.zeros((0, 3)), np.zeros((0, 3, n_atoms, width)))
        if residual.shape != (k, 3):
            raise ForceLabelError(f"{where}: force residual of shape {residual.shape}, expected ({k}, 3)")
        if jacobian.shape != (k, 3, n_atoms, width):
            raise ForceLabelError(f"{where}: Jacobian of shape {jacobian.shape}, expected ({k}, 3, {n_atoms}, {width})"
                                  f" for {k} labelled atoms of a {n_atoms}-atom structure of width {width}")
        if atoms.min() < 0 or atoms.max() >= n_atoms or len(np.unique(atoms)) != k:
            raise ForceLabelError(f"{where}: labelled atom indices must be distinct and in 0..{n_atoms - 1}, "
                                  f"got {atoms.tolist()}")
        for name, value in (("force residual", residual), ("Jacobian", jacobian)):
            if not np.all(np.isfinite(value)):
                raise ForceLabelError(f"{where}: {name} holds NaN or inf")
        return ForceLabels(atoms, residual, jacobian)

    @property
    def n_labels(self) -> int:
        return 3 * len(self.atoms)


def force_rows(features: np.ndarray, species: np.ndarray | None, labels: ForceLabels, scale: np.ndarray,
               inducing: np.ndarray, inducing_species: np.ndarray | None, length_scale: float) -> np.ndarray:
    """[3k, m] unit-amplitude design rows of one structure's labelled force components.

    ``features``: the structure's standardised atomic features [n, d]; ``scale``: the feature scale they were
    standardised with (the Jacobian is divided by it); ``species``/``inducing_species``: given for a
    same-species kernel.
    """
    K = point_kernel(features, inducing, length_scale, species, inducing_species)  # [n, m]
    J = labels.jacobian.reshape(labels.n_labels, *labels.jacobian.shape[2:]) / scale  # [q, n, d]
    xJ = np.einsum("nd,qnd->nq", features, J)  # x_i · J_i,q
    uJ = np.einsum("md,qnd->nmq", inducing, J)  # u_m · J_i,q
    rows = K.T @ xJ - np.einsum("nm,nmq->mq", K, uJ)  # Σ_i k_im (x_i - u_m)·J_i,q   [m, q]
    return rows.T / length_scale**2


def structure_rows(points: Points, labels: Sequence[ForceLabels | None], scale: np.ndarray, inducing: np.ndarray,
                   inducing_species: np.ndarray | None, length_scale: float) -> Iterator[tuple[int, np.ndarray]]:
    """``(s, rows)`` for each structure s with labelled atoms: its :func:`force_rows`; ``points``: the
    standardised atomic points, one structure's atoms after another."""
    bounds = points.bounds
    for s, lab in enumerate(labels):
        if lab is None or not lab.n_labels:
            continue
        a, b = bounds[s], bounds[s + 1]
        species = points.species[a:b] if inducing_species is not None else None
        yield s, force_rows(points.features[a:b], species, lab, scale, inducing, inducing_species, length_scale)


def force_design(points: Points, labels: Sequence[ForceLabels | None], scale: np.ndarray, inducing: np.ndarray,
                 inducing_species: np.ndarray | None, length_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Design rows [q_total, m] and targets [q_total] of every structure's force labels (structures without
    labels add none)."""
    found = list(structure_rows(points, labels, scale, inducing, inducing_species, length_scale))
    if not found:
        return np.zeros((0, len(inducing))), np.zeros(0)
    rows = np.concatenate([r for _, r in found])
    targets = np.concatenate([labels[s].residual.reshape(-1) for s, _ in found])
    return rows, targets


def scaled_rows(P_energy: np.ndarray, r_energy: np.ndarray, noise_energy: float, P_force: np.ndarray,
                r_force: np.ndarray, noise_force: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Energy and force rows stacked and whitened (each divided by its noise's square root), and the
    log-determinant term ``-½ Σ log noise`` that whitening removes from the log marginal likelihood."""
    se, sf = np.sqrt(noise_energy), np.sqrt(noise_force)
    P = np.concatenate([P_energy / se, P_force / sf])
    r = np.concatenate([r_energy / se, r_force / sf])
    correction = -0.5 * (len(r_energy) * np.log(noise_energy) + len(r_force) * np.log(noise_force))
    return P, r, float(correction)
