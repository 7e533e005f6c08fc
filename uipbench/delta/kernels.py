"""The kernel of the Δ-model: amplitude × RBF on standardised features, plus white noise.

    k(x, x') = amplitude · exp(-|x - x'|² / (2 length_scale²)) [· δ(species, species')]
    K_structures = S K_points Sᵀ + noise_level · I

where ``S`` sums points into structures (identity for the structure-level
aggregations).  The white noise acts on the structure energies (observation
noise of a residual), not on atoms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
from scipy.linalg import lapack

from .aggregation import Points

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class KernelParams:
    """Hyperparameters of the kernel; optimised as ``theta = log(params)``."""

    amplitude: float
    length_scale: float
    noise_level: float  # variance (eV²) of the white noise on structure energies

    @property
    def theta(self) -> np.ndarray:
        return np.log([self.amplitude, self.length_scale, self.noise_level])

    @classmethod
    def from_theta(cls, theta: np.ndarray) -> "KernelParams":
        a, l, s = np.exp(np.asarray(theta, np.float64))
        return cls(float(a), float(l), float(s))


@dataclass(frozen=True)
class Standardizer:
    """Feature-wise centring and scaling, statistics from the training points."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, enabled: bool = True) -> "Standardizer":
        width = features.shape[1]
        if not enabled:
            return cls(np.zeros(width), np.ones(width))
        scale = features.std(axis=0)
        scale[~(scale > 1e-12 * max(1.0, float(np.abs(features).max(initial=0.0))))] = 1.0
        return cls(features.mean(axis=0), scale)

    def transform(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.scale


def sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [len(a), len(b)] through one matrix product."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0, out=d2)


def rbf_from_sq_dist(d2: np.ndarray, length_scale: float) -> np.ndarray:
    return np.exp(d2 * (-0.5 / length_scale**2))


def species_mask(species_a: np.ndarray, species_b: np.ndarray) -> np.ndarray:
    return species_a[:, None] == species_b[None, :]


def point_kernel(a: np.ndarray, b: np.ndarray, length_scale: float, species_a: np.ndarray | None = None,
                 species_b: np.ndarray | None = None) -> np.ndarray:
    """Unit-amplitude RBF between point sets; zero across species when species are given."""
    k = rbf_from_sq_dist(sq_dist(a, b), length_scale)
    if species_a is not None and species_b is not None:
        k *= species_mask(species_a, species_b)
    return k


def summed_kernel(points: Points, support: np.ndarray, length_scale: float,
                  support_species: np.ndarray | None = None, chunk: int = 4096) -> np.ndarray:
    """[n_structures, n_support]: unit-amplitude kernel of each structure (sum over its points)
    with each support point, computed in chunks of points so memory stays bounded."""
    species = points.species if support_species is not None else None
    if points.one_per_structure:
        out = np.empty((points.n_structures, len(support)))
        for start in range(0, points.n_points, chunk):
            stop = min(start + chunk, points.n_points)
            out[start:stop] = point_kernel(points.features[start:stop], support, length_scale,
                                           None if species is None else species[start:stop], support_species)
        return out
    out = np.zeros((points.n_structures, len(support)))
    for start in range(0, points.n_points, chunk):
        stop = min(start + chunk, points.n_points)
        k = point_kernel(points.features[start:stop], support, length_scale,
                         None if species is None else species[start:stop], support_species)
        out += points.summing_matrix(start, stop) @ k
    return out


def self_kernel(points: Points, length_scale: float, same_species: bool) -> np.ndarray:
    """[n_structures] unit-amplitude k(structure, structure) = sum over its pairs of points."""
    if points.one_per_structure:
        return np.ones(points.n_structures)
    bounds = points.bounds
    out = np.empty(points.n_structures)
    for s in range(points.n_structures):
        x = points.features[bounds[s]:bounds[s + 1]]
        z = points.species[bounds[s]:bounds[s + 1]] if same_species else None
        out[s] = point_kernel(x, x, length_scale, z, z).sum()
    return out


def cholesky_jittered(K: np.ndarray, jitter: float = 1e-10, max_relative: float = 1e-2,
                      what: str = "kernel matrix") -> tuple[np.ndarray, float]:
    """Lower Cholesky factor of ``K``, adding growing jitter to the diagonal if needed.

    Returns ``(L, added)``.  Jitter starts at ``jitter`` × mean diagonal and grows
    tenfold up to ``max_relative`` × mean diagonal; past that a LinAlgError explains.
    """
    scale = float(np.mean(np.diag(K))) if K.size else 1.0
    if not np.isfinite(scale) or scale <= 0:
        raise np.linalg.LinAlgError(f"{what} has a non-positive or non-finite diagonal (mean {scale:.3g})")
    added = 0.0
    relative = jitter
    while True:
        try:
            L = scipy.linalg.cholesky(K + added * np.eye(len(K)) if added else K, lower=True,
                                      check_finite=False)
            if np.all(np.isfinite(L)):
                return L, added
        except np.linalg.LinAlgError:
            pass
        if relative > max_relative:
            raise np.linalg.LinAlgError(
                f"{what} ({len(K)}×{len(K)}) is not positive definite even with {added:.3g} "
                f"({relative / 10:.0e} × mean diagonal) added to its diagonal; the features probably hold "
                f"(near-)duplicate points under a too long length scale with too little noise: raise "
                f"noise_level or its lower bound, or shorten the length scale"
            )
        added = relative * scale
        relative *= 10.0


def lower_inverse_from_cholesky(L: np.ndarray) -> np.ndarray:
    """Lower triangle of the inverse of ``L Lᵀ`` (strict upper triangle zero) from its lower Cholesky
    factor (LAPACK potri; ``L``'s strict upper triangle must be zero)."""
    inv, info = lapack.dpotri(L, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"inverse from Cholesky factor failed (LAPACK info {info})")
    return inv


def solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    return scipy.linalg.solve_triangular(L, B, lower=True, check_finite=False)


def point_kernel_torch(a: "torch.Tensor", b: "torch.Tensor", length_scale: float,
                       mask: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Torch twin of :func:`point_kernel` (differentiable in ``a``)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    k = (d2.clamp_min(0.0) * (-0.5 / length_scale**2)).exp()
    return k if mask is None else k * mask
