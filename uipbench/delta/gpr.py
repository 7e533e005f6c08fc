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

This module is the estimator; the likelihood and its optimiser live in :mod:`.likelihood`, the
choice of inducing points and likelihood subsets in :mod:`.selection`.
"""
from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import scipy.linalg
import scipy.optimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from threadpoolctl import threadpool_limits

from .aggregation import AGGREGATIONS, REDUCTIONS, Points, Structures, aggregate, aggregate_torch, \
    is_structure_list, structures_from_items
from .kernels import KernelParams, Standardizer, cholesky_jittered, point_kernel, \
    point_kernel_torch, self_kernel, solve_lower, species_mask, sq_dist, summed_kernel
from .forces import ForceLabelError, ForceLabels, force_design, scaled_rows, structure_rows
from .likelihood import FAILED, LOG_2PI, ExactObjective, optimise, sparse_solve, SparseObjective
from .offset import fit_species_offset
from .selection import select_inducing, structure_subset, subset_points

if TYPE_CHECKING:
    import torch

#: beyond this many points an exact fit would need tens of GB; ask for the sparse model instead
EXACT_MAX_POINTS = 20_000
#: ``max_opt_points=None``: kernel points on which the exact / the sparse model maximises its likelihood
EXACT_OPT_POINTS = 500
SPARSE_OPT_POINTS = 10_000


class DeltaModelError(ValueError):
    """Input that a fitted Δ-model cannot use (species unseen in training, wrong width, ...)."""


# ----------------------------------------------------------------------------- objectives

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
    force_noise_level : float or None
        Variance (eV²/Å²) of the white noise on force labels (``fit(..., forces=...)``).  A value given
        with ``optimize=False`` is used as is; otherwise (``optimize``, or ``None``) it is chosen by the
        joint log marginal likelihood (the energy hyperparameters kept), within ``force_noise_level_bounds``.
    force_noise_level_bounds : (float, float)
        Bounds of that choice (default 1e-6 – 10 eV²/Å²: 1 meV/Å to 3 eV/Å).
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
                 blas_threads: int | None = 1, force_noise_level: float | None = None,
                 force_noise_level_bounds: tuple[float, float] = (1e-6, 1e1)):
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
        self.force_noise_level = force_noise_level
        self.force_noise_level_bounds = force_noise_level_bounds

    # ------------------------------------------------------------------ fit

    @_blas_limited
    def fit(self, X: Any, y: Any, forces: Sequence[ForceLabels | None] | None = None) -> "DeltaGPR":
        """Fit the offset, the prior mean and the GP on residuals ``y`` (eV) of structures ``X``.

        ``forces``: optionally, per structure, its force residuals and the embedding's Jacobian
        (:class:`~uipbench.delta.forces.ForceLabels`, or ``None`` for a structure without); they are
        fitted together with the energies (``atomic`` aggregation, sparse model: see :mod:`.forces`).
        """
        self._reset()
        self._check_params()
        structures, y = self._validate(X, y, reset=True)
        n = structures.n_structures
        if n < 2:
            raise ValueError(f"DeltaGPR needs at least 2 training structures, got n_samples={n}")
        labels = self._check_forces(forces, structures)
        self.species_ = np.unique(structures.numbers)
        counts = structures.species_counts(self.species_)
        self.offset_coef_, self.prior_mean_ = fit_species_offset(counts, y, self.offset, self.prior_mean)
        residual = y - counts @ self.offset_coef_ - self.prior_mean_

        raw = aggregate(structures, self.aggregation, self.species_, self.reduce)
        scaler = Standardizer.fit(raw.features, self.standardize)
        self.feature_mean_, self.feature_scale_ = scaler.mean, scaler.scale
        points = raw.with_features(scaler.transform(raw.features))
        self.sparse_ = bool(self.sparse is True or (self.sparse == "auto" and points.n_points > self.sparse_threshold)
                            or (labels is not None and self.sparse == "auto"))
        if not self.sparse_ and points.n_points > EXACT_MAX_POINTS:
            raise ValueError(f"{points.n_points} kernel points are too many for exact GPR (at most "
                             f"{EXACT_MAX_POINTS}); use sparse=True or sparse='auto'")
        rng = check_random_state(self.random_state)
        start = self._start_params(points, residual, rng)
        if self.sparse_:
            self._fit_sparse(points, residual, start, rng, labels)
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
        for name in ("amplitude_bounds", "length_scale_bounds", "noise_level_bounds", "force_noise_level_bounds"):
            if name == "length_scale_bounds" and self.length_scale_bounds == "auto":
                continue
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi < np.inf:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        for name in ("amplitude", "length_scale", "noise_level", "force_noise_level"):
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
            diag = self_kernel(subset_points(points, take), length, self._mask_species)
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
                take = structure_subset(points, budget, rng)
                sub, sub_residual = subset_points(points, take), residual[take]
            objective = ExactObjective(sub, sub_residual, self._mask_species, self.jitter)
            params = KernelParams.from_theta(optimise(objective, start.theta, self._bounds(),
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
                                                    - 0.5 * len(residual) * LOG_2PI)
        self.support_ = points.features
        self.support_species_ = points.species
        self.support_owner_ = points.owner
        self.weights_ = params.amplitude * (alpha[points.owner])  # Sᵀ α, times the amplitude
        self.chol_ = L

    def _check_forces(self, forces: Sequence[ForceLabels | None] | None,
                      structures: Structures) -> list[ForceLabels | None] | None:
        """The force labels of a fit checked against their structures, or ``None`` when there are none."""
        if forces is None:
            return None
        if self.aggregation != "atomic":
            raise ValueError(f"force labels need the 'atomic' aggregation (a sum over atoms), not "
                             f"{self.aggregation!r}")
        if self.sparse is False:
            raise ValueError("force labels are fitted by the sparse (projected-process) model; use sparse=True "
                             "or 'auto'")
        checked = _checked_labels(forces, structures)
        return checked if any(lab is not None and lab.n_labels for lab in checked) else None

    def _fit_sparse(self, points: Points, residual: np.ndarray, start: KernelParams,
                    rng: np.random.RandomState, labels: list[ForceLabels | None] | None = None) -> None:
        idx = select_inducing(points, int(self.n_inducing), self.inducing, rng)
        inducing = points.features[idx]
        inducing_species = points.species[idx]
        mask = inducing_species if self._mask_species else None
        params = start
        if self.optimize:
            budget = SPARSE_OPT_POINTS if self.max_opt_points is None else int(self.max_opt_points)
            take = structure_subset(points, budget, rng)
            sub = subset_points(points, take)
            objective = SparseObjective(sub, residual[take], inducing, mask, self.jitter)
            params = KernelParams.from_theta(optimise(objective, start.theta, self._bounds(),
                                                       int(self.n_restarts), rng))
        self._set_params(params)
        P = summed_kernel(points, inducing, params.length_scale, mask)
        Rmm = point_kernel(inducing, inducing, params.length_scale, mask, mask)
        if labels is None:
            sol = sparse_solve(P, Rmm, residual, params, self.jitter)
            self.log_marginal_likelihood_value_ = sol.lml
        else:
            sol = self._solve_with_forces(points, residual, labels, P, Rmm, inducing, mask, params)
        self.support_ = inducing
        self.support_species_ = inducing_species
        self.weights_ = params.amplitude * scipy.linalg.solve_triangular(sol.Lm.T, sol.c, lower=False)
        self.chol_inducing_ = sol.Lm
        self.chol_ = sol.La

    def _solve_with_forces(self, points: Points, residual: np.ndarray, labels: list[ForceLabels | None],
                           P: np.ndarray, Rmm: np.ndarray, inducing: np.ndarray, mask: np.ndarray | None,
                           params: KernelParams):
        """The projected-process solution on energy and force rows; the force noise maximises the joint
        log marginal likelihood with the energy hyperparameters kept (bounded search on its logarithm)."""
        PF, rF = force_design(points, labels, self.feature_scale_, inducing, mask, params.length_scale)
        unit = KernelParams(params.amplitude, params.length_scale, 1.0)

        def solve(noise_force: float):
            Pw, rw, correction = scaled_rows(P, residual, params.noise_level, PF, rF, noise_force)
            sol = sparse_solve(Pw, Rmm, rw, unit, self.jitter)
            return sol, sol.lml + correction

        lo, hi = np.log(self.force_noise_level_bounds)
        if self.force_noise_level is not None and not self.optimize:
            noise_force = float(self.force_noise_level)
        else:
            def objective(log_noise: float) -> float:
                try:
                    return -solve(float(np.exp(log_noise)))[1]
                except np.linalg.LinAlgError:
                    return FAILED
            found = scipy.optimize.minimize_scalar(objective, bounds=(lo, hi), method="bounded",
                                                   options={"xatol": 1e-3})
            noise_force = float(np.exp(found.x))
        sol, lml = solve(noise_force)
        self.force_noise_level_ = noise_force
        self.n_force_labels_ = int(len(rF))
        self.log_marginal_likelihood_value_ = float(lml)
        return sol

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

    @_blas_limited
    def predict_forces(self, X: Any, forces: Sequence[ForceLabels | None]) -> list[np.ndarray]:
        """Δ-forces (eV/Å, [k, 3]) on the labelled atoms of each structure of ``X``: ``forces`` gives, per
        structure, the atoms and the embedding's Jacobian there (:class:`~uipbench.delta.forces.ForceLabels`;
        its residual is not used; ``None``: no atoms).  The ``atomic`` aggregation only: the forces of
        ``predict``'s energy, without autograd (what the fit's force rows are, times the weights)."""
        check_is_fitted(self)
        if self.aggregation != "atomic":
            raise ValueError(f"Δ-forces from force labels need the 'atomic' aggregation, not {self.aggregation!r}")
        structures, _ = self._validate(X, None, reset=False)
        self._check_species(structures)
        labels = _checked_labels(forces, structures)
        mask = self.support_species_ if self._mask_species else None
        out = [np.zeros((0, 3)) for _ in labels]
        for s, rows in structure_rows(self._points(structures), labels, self.feature_scale_, self.support_, mask,
                                      self.length_scale_):
            out[s] = (rows @ self.weights_).reshape(-1, 3)
        return out

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
        # the noise of the solve: with force labels the rows were whitened, so it is one
        noise = 1.0 if hasattr(self, "force_noise_level_") else self.noise_level_
        return prior - a * np.sum(Vs * Vs, axis=0) + a * noise * np.sum(w * w, axis=0)

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


def _checked_labels(forces: Sequence[ForceLabels | None], structures: Structures) -> list[ForceLabels | None]:
    """One :class:`ForceLabels` (or None) per structure, each checked against its structure."""
    forces = list(forces)
    if len(forces) != structures.n_structures:
        raise ForceLabelError(f"got {len(forces)} force labels for {structures.n_structures} structures "
                              f"(one per structure, None for a structure without)")
    bad = [type(lab).__name__ for lab in forces if lab is not None and not isinstance(lab, ForceLabels)]
    if bad:
        raise ForceLabelError(f"forces must hold ForceLabels (or None) per structure, got a {bad[0]}")
    bounds = structures.bounds
    return [None if lab is None else lab.check(int(bounds[s + 1] - bounds[s]), structures.width, f"structure {s}")
            for s, lab in enumerate(forces)]


def _names(numbers: np.ndarray) -> str:
    from ase.data import chemical_symbols

    return ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}" for z in numbers)
