"""Δ-GPR: Gaussian-process regression of E_DFT − E_backbone on the backbone's own embedding.

Model of a structure's residual (Christiansen & Hammer, arXiv 2502.21179)::

    Δ(S) = Σ_z n_z(S) c_z  +  μ  +  f(S),      f ~ GP(0, k)

* ``c_z`` – per-species linear offset fitted first by least squares on the
  training residuals (``offset=True``; rank deficiency handled by lstsq);
* ``μ``   – constant prior mean: the mean of what the offset leaves (``prior_mean="mean"``) or 0;
* ``f``   – GP on the aggregated, standardised embedding with kernel
  amplitude × RBF (+ white noise on the structure energies), see :mod:`.kernels`.

Exact GPR (Cholesky) is used for small problems; ``sparse`` switches to a
projected-process (DTC) approximation on inducing points chosen among the
training points by k-means (snapped to the nearest training point), by CUR
(leverage-score sampling of the feature matrix) or at random.
With the ``atomic`` aggregation the structure energy is a sum over its atoms, so the
structure–inducing covariance is ``S K_atoms,inducing`` with ``S`` the per-structure
summing matrix.

Hyperparameters (amplitude, length scale, noise level) maximise the log marginal
likelihood (L-BFGS-B on their logarithms, analytic gradients, ``n_restarts`` extra
starts drawn uniformly in the log bounds), or are kept fixed (``optimize=False``).
The likelihood is maximised on a random subset of training structures holding at most
``max_opt_points`` kernel points (default 500 for exact GPR, whose every likelihood
evaluation costs a Cholesky factorisation and an inverse; 10 000 for the sparse model,
same inducing points), then the model is solved once on all data with those
hyperparameters.  On 1 000 structures (``global``, d = 64) the exact model's fit is
~4.5× faster this way than with the likelihood optimised on all of them, and its held-out error is
0.3% higher on average (at most 2%, 17 synthetic data sets; benchmarks/bench_delta.py).
``max_opt_points`` ≥ the number of points optimises on all data.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import scipy.linalg
import scipy.optimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from threadpoolctl import threadpool_limits

from .aggregation import AGGREGATIONS, REDUCTIONS, Points, Structures, aggregate, aggregate_torch, \
    is_structure_list, structures_from_items
from .kernels import KernelParams, Standardizer, cholesky_jittered, lower_inverse_from_cholesky, point_kernel, \
    point_kernel_torch, rbf_from_sq_dist, self_kernel, solve_lower, species_mask, sq_dist, summed_kernel
from .offset import fit_species_offset

if TYPE_CHECKING:
    import torch

#: beyond this many points an exact fit would need tens of GB; ask for the sparse model instead
EXACT_MAX_POINTS = 20_000
#: ``max_opt_points=None``: kernel points on which the exact / the sparse model maximises its likelihood
EXACT_OPT_POINTS = 500
SPARSE_OPT_POINTS = 10_000
_LOG_2PI = math.log(2.0 * math.pi)
_FAILED = 1e300  # objective value reported where the kernel matrix cannot be factorised


class DeltaModelError(ValueError):
    """Input that a fitted Δ-model cannot use (species unseen in training, wrong width, ...)."""


# ----------------------------------------------------------------------------- objectives

class _ExactObjective:
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
            return _FAILED, np.zeros(3)
        r = self.r
        alpha = scipy.linalg.cho_solve((L, True), r, check_finite=False)
        lml = -0.5 * r @ alpha - np.log(np.diag(L)).sum() - 0.5 * n * _LOG_2PI
        diag_inv = np.diag(inv_lower)
        tr_inv = float(diag_inv.sum())
        aa = float(alpha @ alpha)
        s_all = s + added  # the diagonal that was factorised
        g_a = 0.5 * (r @ alpha - s_all * aa - (n - s_all * tr_inv))
        g_s = 0.5 * s * (aa - tr_inv)
        tr_rd = 2.0 * float(np.einsum("ij,ij->", inv_lower, RD)) - float(diag_inv @ np.diag(RD))
        g_l = 0.5 * a / l2 * (alpha @ (RD @ alpha) - tr_rd)
        return -lml, -np.array([g_a, g_l, g_s])


class _SparseObjective:
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
            sol = _sparse_solve(P, Rmm, self.r, p, self.jitter)
        except np.linalg.LinAlgError:
            return _FAILED, np.zeros(3)
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
class _SparseSolution:
    Lm: np.ndarray  # chol(R_mm + jitter)
    La: np.ndarray  # chol(s I + A Vᵀ V)
    V: np.ndarray  # P Lm⁻ᵀ
    c: np.ndarray  # (s I + A VᵀV)⁻¹ Vᵀ r
    alpha: np.ndarray  # C⁻¹ r
    lml: float


def _sparse_solve(P: np.ndarray, Rmm: np.ndarray, r: np.ndarray, p: KernelParams, jitter: float) -> _SparseSolution:
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
    lml = float(-0.5 * r @ alpha - 0.5 * logdet - 0.5 * n * _LOG_2PI)
    return _SparseSolution(Lm, La, V, c, alpha, lml)


def _optimise(objective: Callable[[np.ndarray], tuple[float, np.ndarray]], theta0: np.ndarray,
              bounds: np.ndarray, n_restarts: int, rng: np.random.RandomState) -> np.ndarray:
    """Minimise ``objective`` from ``theta0`` and ``n_restarts`` random starts in ``bounds``."""
    starts = [np.clip(theta0, bounds[:, 0], bounds[:, 1])]
    starts += [rng.uniform(bounds[:, 0], bounds[:, 1]) for _ in range(n_restarts)]
    best_theta, best_value = starts[0], np.inf
    objective = _remember_last(objective)  # L-BFGS-B first evaluates the start again
    for start in starts:
        # L-BFGS-B takes a unit step along -gradient first when every variable is bounded; scaling the
        # objective so that the first gradient has norm <= 1 keeps that step inside the basin it starts in
        scale = max(1.0, float(np.linalg.norm(objective(start)[1])))
        scaled = lambda theta: tuple(v / scale for v in objective(theta))  # noqa: E731
        result = scipy.optimize.minimize(scaled, start, jac=True, method="L-BFGS-B", bounds=bounds)
        value = result.fun * scale
        if np.isfinite(value) and value < best_value:
            best_theta, best_value = result.x, value
    if not best_value < _FAILED:
        raise np.linalg.LinAlgError("hyperparameter optimisation failed: the kernel matrix could not be factorised "
                                    "at any start; widen noise_level_bounds or set optimize=False")
    return np.asarray(best_theta)


def _remember_last(objective: Callable[[np.ndarray], tuple[float, np.ndarray]]
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

def select_inducing(points: Points, n_inducing: int, method: str, rng: np.random.RandomState) -> np.ndarray:
    """Indices of the inducing points among ``points``, stratified by species.

    ``kmeans``: k-means on (a sample of) each species' points, each centre snapped to its
    nearest training point; ``cur``: CUR row selection, a draw without replacement weighted by the
    statistical leverage of each point in its species' feature matrix; ``random``: a uniform draw.
    Asking for at least as many points as there are gives all distinct points.  Deterministic
    given ``rng``'s state.
    """
    chosen: list[np.ndarray] = []
    total = points.n_points
    for z in np.unique(points.species):
        group = np.flatnonzero(points.species == z)
        k = max(1, int(round(n_inducing * len(group) / total)))
        if k >= len(group):
            _, first = np.unique(points.features[group], axis=0, return_index=True)
            chosen.append(group[np.sort(first)])
        elif method == "random":
            chosen.append(np.sort(rng.choice(group, k, replace=False)))
        elif method == "cur":
            chosen.append(_cur_indices(points.features, group, k, rng))
        else:
            chosen.append(_kmeans_indices(points.features, group, k, rng))
    return np.concatenate(chosen)


def _cur_indices(features: np.ndarray, group: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    """CUR row selection (Mahoney & Drineas, PNAS 2009): ``k`` points of ``group`` drawn without replacement
    with probability proportional to their leverage score, the squared norm of their row of ``U`` in the
    thin SVD ``X = U Σ Vᵀ`` of the group's feature matrix (numerical rank kept; the scores sum to it).

    AGOX's ``CUR`` sparsifier uses the same scores (from a full SVD).  Here they come from the
    eigendecomposition ``XᵀX = V Σ² Vᵀ`` (``U = X V Σ⁻¹``), O(n d²) with a small constant.  Points with
    identical features are kept once, so fewer than ``k`` may come back.
    """
    x = features[group]
    eigval, eigvec = np.linalg.eigh(x.T @ x)
    keep = eigval > max(float(eigval[-1]) if eigval.size else 0.0, 0.0) * x.shape[1] * np.finfo(np.float64).eps
    if keep.any():
        u = x @ (eigvec[:, keep] / np.sqrt(eigval[keep]))
        score = np.einsum("ij,ij->i", u, u)
    else:  # all-zero features: no leverage anywhere
        score = np.ones(len(group))
    positive = np.flatnonzero(score > 0)
    if len(positive) >= k:
        pick = rng.choice(len(group), k, replace=False, p=score / score.sum())
    else:  # zero rows carry no leverage: fill up uniformly among them
        rest = np.setdiff1d(np.arange(len(group)), positive)
        pick = np.concatenate([positive, rng.choice(rest, k - len(positive), replace=False)])
    pick = np.sort(pick)
    _, first = np.unique(x[pick], axis=0, return_index=True)
    return group[pick[np.sort(first)]]


def _kmeans_indices(features: np.ndarray, group: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
    """k-means++ seeding (one trial per centre) then 10 Lloyd iterations on a sample of at most
    max(10 k, 2000) ≤ 10 000 points; each centre snapped to its nearest sampled training point."""
    from sklearn.cluster import KMeans, kmeans_plusplus

    size = min(len(group), min(max(10 * k, 2000), 10_000))
    sample = group if size == len(group) else np.sort(rng.choice(group, size, replace=False))
    x = features[sample]
    seed = rng.randint(2**31 - 1)
    centres, _ = kmeans_plusplus(x, k, n_local_trials=1, random_state=seed)
    km = KMeans(n_clusters=k, init=centres, n_init=1, max_iter=10, random_state=seed).fit(x)
    nearest = np.argmin(sq_dist(km.cluster_centers_, x), axis=1)
    return np.unique(sample[nearest])


# ----------------------------------------------------------------------------- estimator

def _blas_limited(method: Callable) -> Callable:
    """Run ``method`` with at most ``self.blas_threads`` BLAS/OpenMP threads (None: the defaults)."""

    @functools.wraps(method)
    def wrapper(self: "DeltaGPR", *args: Any, **kwargs: Any) -> Any:
        limit = (contextlib.nullcontext() if self.blas_threads is None
                 else threadpool_limits(limits=int(self.blas_threads)))
        with limit:
            return method(self, *args, **kwargs)

    return wrapper


#: ``length_scale_bounds="auto"``: this factor range times the median distance between training
#: points.  Without a floor, the atomic kernel on a few structures drifts to a length scale far
#: below any distance in the data — an interpolating table whose energy surface is spiky at every
#: training geometry (forces useless, relaxations trapped) — and the noise to zero.
AUTO_LENGTH_BOUNDS = (0.1, 100.0)


class DeltaGPR(RegressorMixin, BaseEstimator):
    """Gaussian-process Δ-model on a backbone's per-atom embedding (see module doc).

    Parameters
    ----------
    aggregation : {"global", "species", "atomic"}
        How atomic embeddings become kernel points (see :mod:`.aggregation`).
    reduce : {"sum", "mean"}
        Sum or mean over atoms for the ``global`` and ``species`` aggregations.
    same_species : bool
        ``atomic`` only: compare atoms of the same species only.
    standardize : bool
        Centre and scale each feature with training statistics before the kernel.
    offset : bool
        Fit the per-species linear offset first.
    prior_mean : {"mean", "zero"}
        Constant prior mean of the GP on what the offset leaves.
    amplitude, length_scale, noise_level : float or None
        Kernel hyperparameters (start values when ``optimize``).  ``noise_level`` is a
        variance in eV².  ``None``: the median distance between training points for the
        length scale, the variance ``v`` of the targets (after offset and prior mean) over
        the mean structure self-kernel for the amplitude, ``v / 100`` for the noise.
    amplitude_bounds, length_scale_bounds, noise_level_bounds : (float, float)
        Bounds for the optimisation.  ``length_scale_bounds="auto"`` (default): 0.1–100 times the
        median distance between training points (see ``AUTO_LENGTH_BOUNDS``).  The noise variance
        is kept above 1e-6 eV² (1 meV), the order of the reference data's own convergence noise.
    optimize : bool
        Maximise the log marginal likelihood; otherwise keep the hyperparameters.
    n_restarts : int
        Extra optimiser starts drawn uniformly in the log bounds.
    sparse : bool or "auto"
        Projected-process approximation; ``"auto"``: when there are more than
        ``sparse_threshold`` kernel points (atoms for ``atomic``, else structures).
    n_inducing : int
        Number of inducing points of the sparse model.
    inducing : {"kmeans", "cur", "random"}
        How the inducing points are chosen among the training points (per species, in proportion
        to its points): k-means centres snapped to the nearest training point, CUR (a draw weighted
        by the leverage scores of the feature matrix, as AGOX's ``CUR`` sparsifier), or uniformly.
    max_opt_points : int or None
        Optimise the hyperparameters on a random subset of training structures holding at most
        this many kernel points (atoms for ``atomic``, else structures), then solve once on all
        data with them.  None: 500 for the exact model (each likelihood evaluation is O(n³): on
        1 000 structures the fit is ~4.5× faster than optimising on all of them, for ~0.3% more
        held-out error on average), 10 000 for the sparse model.  A value at least the number of
        points optimises on all data.
    jitter : float
        First diagonal jitter (relative to the mean diagonal) tried when a
        Cholesky factorisation fails; it grows tenfold up to 1e-2.
    random_state : int, RandomState or None
        For restarts, subsets and k-means.
    blas_threads : int or None
        BLAS and OpenMP threads inside fit/predict (threadpoolctl).  The default 1 is fastest on a
        small or busy machine, where threaded BLAS on small matrices spins; None keeps
        the BLAS default.
    """

    def __init__(self, aggregation: str = "global", *, reduce: str = "sum", same_species: bool = False,
                 standardize: bool = True, offset: bool = True, prior_mean: str = "mean",
                 amplitude: float | None = None, length_scale: float | None = None, noise_level: float | None = None,
                 amplitude_bounds: tuple[float, float] = (1e-6, 1e6),
                 length_scale_bounds: tuple[float, float] | str = "auto",
                 noise_level_bounds: tuple[float, float] = (1e-6, 1e2),
                 optimize: bool = True, n_restarts: int = 1, sparse: bool | str = "auto",
                 sparse_threshold: int = 2000, n_inducing: int = 500, inducing: str = "kmeans",
                 max_opt_points: int | None = None, jitter: float = 1e-10, random_state: Any = None,
                 blas_threads: int | None = 1):
        self.aggregation = aggregation
        self.reduce = reduce
        self.same_species = same_species
        self.standardize = standardize
        self.offset = offset
        self.prior_mean = prior_mean
        self.amplitude = amplitude
        self.length_scale = length_scale
        self.noise_level = noise_level
        self.amplitude_bounds = amplitude_bounds
        self.length_scale_bounds = length_scale_bounds
        self.noise_level_bounds = noise_level_bounds
        self.optimize = optimize
        self.n_restarts = n_restarts
        self.sparse = sparse
        self.sparse_threshold = sparse_threshold
        self.n_inducing = n_inducing
        self.inducing = inducing
        self.max_opt_points = max_opt_points
        self.jitter = jitter
        self.random_state = random_state
        self.blas_threads = blas_threads

    # ------------------------------------------------------------------ fit

    @_blas_limited
    def fit(self, X: Any, y: Any) -> "DeltaGPR":
        """Fit the offset, the prior mean and the GP on residuals ``y`` (eV) of structures ``X``."""
        self._reset()
        self._check_params()
        structures, y = self._validate(X, y, reset=True)
        n = structures.n_structures
        if n < 2:
            raise ValueError(f"DeltaGPR needs at least 2 training structures, got n_samples={n}")
        self.species_ = np.unique(structures.numbers)
        counts = structures.species_counts(self.species_)
        self.offset_coef_, self.prior_mean_ = fit_species_offset(counts, y, self.offset, self.prior_mean)
        residual = y - counts @ self.offset_coef_ - self.prior_mean_

        raw = aggregate(structures, self.aggregation, self.species_, self.reduce)
        scaler = Standardizer.fit(raw.features, self.standardize)
        self.feature_mean_, self.feature_scale_ = scaler.mean, scaler.scale
        points = raw.with_features(scaler.transform(raw.features))
        self.sparse_ = bool(self.sparse is True or (self.sparse == "auto" and points.n_points > self.sparse_threshold))
        if not self.sparse_ and points.n_points > EXACT_MAX_POINTS:
            raise ValueError(f"{points.n_points} kernel points are too many for exact GPR (at most "
                             f"{EXACT_MAX_POINTS}); use sparse=True or sparse='auto'")
        rng = check_random_state(self.random_state)
        start = self._start_params(points, residual, rng)
        if self.sparse_:
            self._fit_sparse(points, residual, start, rng)
        else:
            self._fit_exact(points, residual, start, rng)
        return self

    def _reset(self) -> None:
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)

    def _check_params(self) -> None:
        def one_of(name: str, allowed: tuple) -> None:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

        one_of("aggregation", AGGREGATIONS)
        one_of("reduce", REDUCTIONS)
        one_of("prior_mean", ("mean", "zero"))
        one_of("inducing", ("kmeans", "cur", "random"))
        if self.sparse not in (True, False, "auto"):
            raise ValueError(f"sparse must be True, False or 'auto', got {self.sparse!r}")
        for name in ("amplitude_bounds", "length_scale_bounds", "noise_level_bounds"):
            if name == "length_scale_bounds" and self.length_scale_bounds == "auto":
                continue
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi < np.inf:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        for name in ("amplitude", "length_scale", "noise_level"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number or None, got {value!r}")
        for name, low in (("n_restarts", 0), ("n_inducing", 1), ("sparse_threshold", 0), ("max_opt_points", 1)):
            if name == "max_opt_points" and self.max_opt_points is None:
                continue
            if int(getattr(self, name)) < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")

    def _bounds(self) -> np.ndarray:
        length_bounds = self.length_scale_bounds
        if length_bounds == "auto":
            unit = self.median_distance_
            length_bounds = (AUTO_LENGTH_BOUNDS[0] * unit, AUTO_LENGTH_BOUNDS[1] * unit)
        return np.log([self.amplitude_bounds, length_bounds, self.noise_level_bounds])

    def _start_params(self, points: Points, residual: np.ndarray, rng: np.random.RandomState) -> KernelParams:
        sample = points.features[rng.choice(points.n_points, min(points.n_points, 512), replace=False)]
        d2 = sq_dist(sample, sample)[np.triu_indices(len(sample), 1)]
        median = float(np.sqrt(np.median(d2))) if d2.size else 1.0
        self.median_distance_ = median if np.isfinite(median) and median > 0 else 1.0
        length = self.length_scale
        if length is None:
            length = self.median_distance_
        amplitude = self.amplitude
        if amplitude is None:
            take = np.sort(rng.choice(points.n_structures, min(points.n_structures, 256), replace=False))
            diag = self_kernel(_subset(points, take), length, self._mask_species)
            variance = float(np.var(residual))
            amplitude = variance / float(np.mean(diag)) if variance > 0 else 1.0
        noise = self.noise_level
        if noise is None:
            variance = float(np.var(residual))
            noise = variance / 100.0 if variance > 0 else 1e-4
        bounds = np.exp(self._bounds())
        return KernelParams(*(float(np.clip(v, lo, hi)) for v, (lo, hi) in
                              zip((amplitude, length, noise), bounds)))

    @property
    def _mask_species(self) -> bool:
        return self.aggregation == "atomic" and bool(self.same_species)

    def _set_params(self, params: KernelParams) -> None:
        self.amplitude_ = params.amplitude
        self.length_scale_ = params.length_scale
        self.noise_level_ = params.noise_level

    def _fit_exact(self, points: Points, residual: np.ndarray, start: KernelParams,
                   rng: np.random.RandomState) -> None:
        params = start
        if self.optimize:
            budget = EXACT_OPT_POINTS if self.max_opt_points is None else int(self.max_opt_points)
            sub, sub_residual = points, residual
            if points.n_points > budget:
                take = _structure_subset(points, budget, rng)
                sub, sub_residual = _subset(points, take), residual[take]
            objective = _ExactObjective(sub, sub_residual, self._mask_species, self.jitter)
            params = KernelParams.from_theta(_optimise(objective, start.theta, self._bounds(),
                                                       int(self.n_restarts), rng))
        self._set_params(params)
        species = points.species if self._mask_species else None
        R = point_kernel(points.features, points.features, params.length_scale, species, species)
        if not points.one_per_structure:
            S = points.summing_matrix()
            R = np.asarray(S @ np.asarray(S @ R).T).T
        C = params.amplitude * R
        C[np.diag_indices(len(C))] += params.noise_level
        L, _ = cholesky_jittered(C, self.jitter, what="training kernel matrix")
        alpha = scipy.linalg.cho_solve((L, True), residual, check_finite=False)
        self.log_marginal_likelihood_value_ = float(-0.5 * residual @ alpha - np.log(np.diag(L)).sum()
                                                    - 0.5 * len(residual) * _LOG_2PI)
        self.support_ = points.features
        self.support_species_ = points.species
        self.support_owner_ = points.owner
        self.weights_ = params.amplitude * (alpha[points.owner])  # Sᵀ α, times the amplitude
        self.chol_ = L

    def _fit_sparse(self, points: Points, residual: np.ndarray, start: KernelParams,
                    rng: np.random.RandomState) -> None:
        idx = select_inducing(points, int(self.n_inducing), self.inducing, rng)
        inducing = points.features[idx]
        inducing_species = points.species[idx]
        mask = inducing_species if self._mask_species else None
        params = start
        if self.optimize:
            budget = SPARSE_OPT_POINTS if self.max_opt_points is None else int(self.max_opt_points)
            take = _structure_subset(points, budget, rng)
            sub = _subset(points, take)
            objective = _SparseObjective(sub, residual[take], inducing, mask, self.jitter)
            params = KernelParams.from_theta(_optimise(objective, start.theta, self._bounds(),
                                                       int(self.n_restarts), rng))
        self._set_params(params)
        P = summed_kernel(points, inducing, params.length_scale, mask)
        Rmm = point_kernel(inducing, inducing, params.length_scale, mask, mask)
        sol = _sparse_solve(P, Rmm, residual, params, self.jitter)
        self.log_marginal_likelihood_value_ = sol.lml
        self.support_ = inducing
        self.support_species_ = inducing_species
        self.weights_ = params.amplitude * scipy.linalg.solve_triangular(sol.Lm.T, sol.c, lower=False)
        self.chol_inducing_ = sol.Lm
        self.chol_ = sol.La

    # ------------------------------------------------------------------ predict

    @_blas_limited
    def predict(self, X: Any, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Δ-energy (eV) of each structure; with ``return_std`` also the GP's std (eV) of the latent Δ
        (observation noise not included)."""
        check_is_fitted(self)
        structures, _ = self._validate(X, None, reset=False)
        return self._predict(structures, return_std)

    @_blas_limited
    def predict_baseline(self, X: Any) -> np.ndarray:
        """The Δ without the GP: per-species offset + prior mean (eV); ``y - predict_baseline(X)``
        is the raw error left after the offset."""
        check_is_fitted(self)
        structures, _ = self._validate(X, None, reset=False)
        self._check_species(structures)
        return self._baseline(structures)

    def _predict(self, structures: Structures, return_std: bool) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        self._check_species(structures)
        points = self._points(structures)
        K = summed_kernel(points, self.support_, self.length_scale_,
                          self.support_species_ if self._mask_species else None)
        mean = self._baseline(structures) + K @ self.weights_
        if not return_std:
            return mean
        return mean, np.sqrt(np.maximum(self._variance(points, K), 0.0))

    def _baseline(self, structures: Structures) -> np.ndarray:
        return structures.species_counts(self.species_) @ self.offset_coef_ + self.prior_mean_

    def _points(self, structures: Structures) -> Points:
        raw = aggregate(structures, self.aggregation, self.species_, self.reduce)
        return raw.with_features((raw.features - self.feature_mean_) / self.feature_scale_)

    def _variance(self, points: Points, K: np.ndarray) -> np.ndarray:
        a = self.amplitude_
        prior = a * self_kernel(points, self.length_scale_, self._mask_species)
        if not self.sparse_:
            train = Points(self.support_, self.support_species_, self.support_owner_, len(self.chol_))
            Kst_T = K.T if train.one_per_structure else np.asarray(train.summing_matrix() @ K.T)
            v = solve_lower(self.chol_, a * Kst_T)
            return prior - np.sum(v * v, axis=0)
        Vs = solve_lower(self.chol_inducing_, K.T)  # [m, n*]
        w = solve_lower(self.chol_, Vs)
        return prior - a * np.sum(Vs * Vs, axis=0) + a * self.noise_level_ * np.sum(w * w, axis=0)

    @_blas_limited
    def predict_torch(self, embedding: "torch.Tensor", numbers: Any) -> tuple["torch.Tensor", float]:
        """Δ-energy of one structure from a torch embedding [n_atoms, d] (float64, differentiable).

        Returns ``(mean, std)``: ``mean`` a scalar tensor connected to ``embedding`` (so autograd
        reaches the positions), equal to ``predict``; ``std`` the GP std as a float.
        """
        import torch

        check_is_fitted(self)
        numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        if embedding.ndim != 2 or embedding.shape[0] != len(numbers) or len(numbers) == 0:
            raise ValueError(f"embedding must be [n_atoms, d] with n_atoms = len(numbers) = {len(numbers)} > 0, "
                             f"got shape {tuple(embedding.shape)}")
        emb = embedding.to(torch.float64)
        detached = emb.detach().cpu().numpy()
        structures, _ = self._validate([(detached, numbers)], None, reset=False)
        self._check_species(structures)
        baseline = float(self._baseline(structures)[0])
        x = aggregate_torch(emb, numbers, self.aggregation, self.species_, self.reduce)
        as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float64, device=emb.device)  # noqa: E731
        x = (x - as_tensor(self.feature_mean_)) / as_tensor(self.feature_scale_)
        mask = None
        if self._mask_species:
            mask = as_tensor(species_mask(numbers, self.support_species_))
        K = point_kernel_torch(x, as_tensor(self.support_), self.length_scale_, mask)
        mean = baseline + (K @ as_tensor(self.weights_)).sum()
        _, std = self._predict(structures, return_std=True)
        return mean, float(std[0])

    # ------------------------------------------------------------------ input checks

    def _validate(self, X: Any, y: Any, reset: bool) -> tuple[Structures, np.ndarray | None]:
        if is_structure_list(X):
            structures = structures_from_items(X)
            if reset:
                self.n_features_in_ = structures.width
            elif structures.width != self.n_features_in_:
                raise DeltaModelError(
                    f"embedding width {structures.width} differs from the width {self.n_features_in_} this "
                    f"Δ-model was fitted on; the embedding must come from the same backbone and layer")
            if reset:
                y = self._check_targets(y, structures.n_structures)
            return structures, y
        if reset:
            X, y = validate_data(self, X, y, reset=True, dtype=np.float64, y_numeric=True)
            y = np.asarray(y, np.float64)
        else:
            X = validate_data(self, X, reset=False, dtype=np.float64)
        return Structures.from_rows(X), y

    @staticmethod
    def _check_targets(y: Any, n: int) -> np.ndarray:
        if y is None:
            raise ValueError("DeltaGPR requires y to be passed, but the target y is None")
        y = column_or_1d(np.asarray(y, dtype=np.float64), warn=True)
        if len(y) != n:
            raise ValueError(f"got {n} structures but {len(y)} targets")
        if not np.all(np.isfinite(y)):
            bad = np.flatnonzero(~np.isfinite(y))[:5].tolist()
            raise ValueError(f"target y contains NaN or inf (structures {bad})")
        return y

    def _check_species(self, structures: Structures) -> None:
        unseen = np.setdiff1d(np.unique(structures.numbers), self.species_)
        if unseen.size == 0:
            return
        if self.offset or self.aggregation == "species" or self._mask_species:
            raise DeltaModelError(f"element(s) {_names(unseen)} not in the training data of this Δ-model "
                                  f"(trained on {_names(self.species_)}); it cannot correct them")


def _names(numbers: np.ndarray) -> str:
    from ase.data import chemical_symbols

    return ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in numbers)


def _subset(points: Points, structures: np.ndarray) -> Points:
    """The points of the given (sorted) structures, renumbered 0..len(structures)-1."""
    if points.one_per_structure:
        return Points(points.features[structures], points.species[structures],
                      np.arange(len(structures), dtype=np.int64), len(structures))
    keep = np.isin(points.owner, structures)
    owner = np.searchsorted(structures, points.owner[keep])
    return Points(points.features[keep], points.species[keep], owner, len(structures))


def _structure_subset(points: Points, max_points: int, rng: np.random.RandomState) -> np.ndarray:
    """Sorted random structures holding at most ``max_points`` points (at least two structures)."""
    sizes = np.bincount(points.owner, minlength=points.n_structures)
    order = rng.permutation(points.n_structures)
    n_take = max(2, int(np.searchsorted(np.cumsum(sizes[order]), max_points, side="right")))
    return np.sort(order[:n_take])
