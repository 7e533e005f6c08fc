"""Log marginal likelihood of the exact and the sparse (projected-process) Δ-GPR, with analytic
gradients, and the optimiser that maximises it (L-BFGS-B on log-hyperparameters, restarts)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg
import scipy.optimize

from .aggregation import Points
from .kernels import (KernelParams, cholesky_jittered, lower_inverse_from_cholesky, rbf_from_sq_dist, solve_lower,
                      species_mask, sq_dist)

LOG_2PI = math.log(2.0 * math.pi)
FAILED = 1e300  # objective value reported where the kernel matrix cannot be factorised


class ExactObjective:
    """Negative log marginal likelihood of exact GPR and its gradient in log-parameters.

    ``C = A R + s I``.  The amplitude and noise derivatives need only ``α = C⁻¹ r`` and ``tr C⁻¹``
    (``tr(C⁻¹ A R) = n − s tr C⁻¹``); the length scale one needs ``tr(C⁻¹ ∂R)``, taken from the lower
    triangle of ``C⁻¹`` (LAPACK potri) without forming the full symmetric inverse or ``ααᵀ``.
    """

    def __init__(self, points: Points, residual: np.ndarray, same_species: bool, jitter: float):
        self.d2 = sq_dist(points.features, points.features)
        self.mask = species_mask(points.species, points.species) if same_species else None
        self.summing = None if points.one_per_structure else points.summing_matrix()
        self.r = residual
        self.jitter = jitter

    def _sum(self, K: np.ndarray) -> np.ndarray:
        if self.summing is None:
            return K
        SK = self.summing @ K
        return np.ascontiguousarray(np.asarray(self.summing @ SK.T).T)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        p = KernelParams.from_theta(theta)
        a, s, l2 = p.amplitude, p.noise_level, p.length_scale**2
        R = rbf_from_sq_dist(self.d2, p.length_scale)
        if self.mask is not None:
            R *= self.mask
        RD = self._sum(R * self.d2)  # l² ∂R/∂log l
        C = self._sum(R)
        C *= a
        n = len(self.r)
        C[np.diag_indices(n)] += s
        try:
            L, added = cholesky_jittered(C, self.jitter)
            inv_lower = lower_inverse_from_cholesky(L)
        except np.linalg.LinAlgError:
            return FAILED, np.zeros(3)
        r = self.r
        alpha = scipy.linalg.cho_solve((L, True), r, check_finite=False)
        lml = -0.5 * r @ alpha - np.log(np.diag(L)).sum() - 0.5 * n * LOG_2PI
        diag_inv = np.diag(inv_lower)
        tr_inv = float(diag_inv.sum())
        aa = float(alpha @ alpha)
        s_all = s + added  # the diagonal that was factorised
        g_a = 0.5 * (r @ alpha - s_all * aa - (n - s_all * tr_inv))
        g_s = 0.5 * s * (aa - tr_inv)
        tr_rd = 2.0 * float(np.einsum("ij,ij->", inv_lower, RD)) - float(diag_inv @ np.diag(RD))
        g_l = 0.5 * a / l2 * (alpha @ (RD @ alpha) - tr_rd)
        return -lml, -np.array([g_a, g_l, g_s])


class SparseObjective:
    """Negative DTC (projected-process) log marginal likelihood and its gradient.

    ``C = A P R_mm⁻¹ Pᵀ + s I`` with ``P = S R_nm`` (unit-amplitude kernels), handled
    through the Woodbury identity so nothing larger than [n_structures, m] is formed.
    """

    def __init__(self, points: Points, residual: np.ndarray, inducing: np.ndarray,
                 inducing_species: np.ndarray | None, jitter: float):
        self.d2nm = sq_dist(points.features, inducing)
        self.d2mm = sq_dist(inducing, inducing)
        self.mask_nm = None if inducing_species is None else species_mask(points.species, inducing_species)
        self.mask_mm = None if inducing_species is None else species_mask(inducing_species, inducing_species)
        self.summing = None if points.one_per_structure else points.summing_matrix()
        self.r = residual
        self.jitter = jitter

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        p = KernelParams.from_theta(theta)
        a, s, l2 = p.amplitude, p.noise_level, p.length_scale**2
        Rnm = rbf_from_sq_dist(self.d2nm, p.length_scale)
        Rmm = rbf_from_sq_dist(self.d2mm, p.length_scale)
        if self.mask_nm is not None:
            Rnm *= self.mask_nm
            Rmm *= self.mask_mm
        P = Rnm if self.summing is None else np.asarray(self.summing @ Rnm)
        try:
            sol = sparse_solve(P, Rmm, self.r, p, self.jitter)
        except np.linalg.LinAlgError:
            return FAILED, np.zeros(3)
        n, m = P.shape
        r, alpha, V = self.r, sol.alpha, sol.V
        # tr(C⁻¹) = (n − A ‖La⁻¹ Vᵀ‖²) / s
        tr_cinv = (n - a * np.sum(solve_lower(sol.La, V.T) ** 2)) / s
        aa = alpha @ alpha
        g_a = 0.5 * (r @ alpha - n - s * (aa - tr_cinv))
        g_s = 0.5 * s * (aa - tr_cinv)
        # length scale: ½ tr(W dC), W = ααᵀ − C⁻¹, dC = A (dP M⁻¹Pᵀ + P M⁻¹dPᵀ − P M⁻¹ dM M⁻¹Pᵀ)
        VtP = V.T @ P
        cinv_P = (P - a * V @ scipy.linalg.cho_solve((sol.La, True), VtP, check_finite=False)) / s
        WP = np.outer(alpha, alpha @ P) - cinv_P
        Z = scipy.linalg.cho_solve((sol.Lm, True), WP.T, check_finite=False).T  # W P M⁻¹
        Y = scipy.linalg.cho_solve((sol.Lm, True), P.T @ Z, check_finite=False)  # M⁻¹ Pᵀ W P M⁻¹
        SZ = Z if self.summing is None else np.asarray(self.summing.T @ Z)
        term_nm = np.sum(SZ * Rnm * self.d2nm) / l2
        term_mm = np.sum(Y * Rmm * self.d2mm) / l2
        g_l = a * (term_nm - 0.5 * term_mm)
        return -sol.lml, -np.array([g_a, g_l, g_s])


@dataclass(frozen=True)
class SparseSolution:
    Lm: np.ndarray  # chol(R_mm + jitter)
    La: np.ndarray  # chol(s I + A Vᵀ V)
    V: np.ndarray  # P Lm⁻ᵀ
    c: np.ndarray  # (s I + A VᵀV)⁻¹ Vᵀ r
    alpha: np.ndarray  # C⁻¹ r
    lml: float


def sparse_solve(P: np.ndarray, Rmm: np.ndarray, r: np.ndarray, p: KernelParams, jitter: float) -> SparseSolution:
    n, m = P.shape
    a, s = p.amplitude, p.noise_level
    Lm, _ = cholesky_jittered(Rmm, jitter, what="inducing-point kernel matrix")
    V = solve_lower(Lm, P.T).T
    M = a * (V.T @ V)
    M[np.diag_indices(m)] += s
    La, _ = cholesky_jittered(M, jitter, what="sparse GP system matrix")
    b = V.T @ r
    c = scipy.linalg.cho_solve((La, True), b, check_finite=False)
    alpha = (r - a * (V @ c)) / s
    logdet = (n - m) * math.log(s) + 2.0 * np.log(np.diag(La)).sum()
    lml = float(-0.5 * r @ alpha - 0.5 * logdet - 0.5 * n * LOG_2PI)
    return SparseSolution(Lm, La, V, c, alpha, lml)


def optimise(objective: Callable[[np.ndarray], tuple[float, np.ndarray]], theta0: np.ndarray,
              bounds: np.ndarray, n_restarts: int, rng: np.random.RandomState) -> np.ndarray:
    """Minimise ``objective`` from ``theta0`` and ``n_restarts`` random starts in ``bounds``."""
    starts = [np.clip(theta0, bounds[:, 0], bounds[:, 1])]
    starts += [rng.uniform(bounds[:, 0], bounds[:, 1]) for _ in range(n_restarts)]
    best_theta, best_value = starts[0], np.inf
    objective = remember_last(objective)  # L-BFGS-B first evaluates the start again
    for start in starts:
        # L-BFGS-B takes a unit step along -gradient first when every variable is bounded; scaling the
        # objective so that the first gradient has norm <= 1 keeps that step inside the basin it starts in
        scale = max(1.0, float(np.linalg.norm(objective(start)[1])))
        scaled = lambda theta: tuple(v / scale for v in objective(theta))  # noqa: E731
        result = scipy.optimize.minimize(scaled, start, jac=True, method="L-BFGS-B", bounds=bounds)
        value = result.fun * scale
        if np.isfinite(value) and value < best_value:
            best_theta, best_value = result.x, value
    if not best_value < FAILED:
        raise np.linalg.LinAlgError("hyperparameter optimisation failed: the kernel matrix could not be factorised "
                                    "at any start; widen noise_level_bounds or set optimize=False")
    return np.asarray(best_theta)


def remember_last(objective: Callable[[np.ndarray], tuple[float, np.ndarray]]
                   ) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``objective`` that returns its previous result when called again with the same theta."""
    last: list = [None, None]

    def wrapper(theta: np.ndarray) -> tuple[float, np.ndarray]:
        key = np.asarray(theta, np.float64).tobytes()
        if last[0] != key:
            value, grad = objective(theta)
            last[:] = [key, (value, np.array(grad, copy=True))]
        value, grad = last[1]
        return value, grad.copy()

    return wrapper


# ----------------------------------------------------------------------------- inducing points
