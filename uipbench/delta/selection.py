"""Which kernel points a Δ-GPR uses: inducing points (k-means, CUR, random) and random structure
subsets for the likelihood optimisation."""
from __future__ import annotations


import numpy as np

from .aggregation import Points
from .kernels import sq_dist

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
            chosen.append(cur_indices(points.features, group, k, rng))
        else:
            chosen.append(kmeans_indices(points.features, group, k, rng))
    return np.concatenate(chosen)


def cur_indices(features: np.ndarray, group: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
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


def kmeans_indices(features: np.ndarray, group: np.ndarray, k: int, rng: np.random.RandomState) -> np.ndarray:
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


def subset_points(points: Points, structures: np.ndarray) -> Points:
    """The points of the given (sorted) structures, renumbered 0..len(structures)-1."""
    if points.one_per_structure:
        return Points(points.features[structures], points.species[structures],
                      np.arange(len(structures), dtype=np.int64), len(structures))
    keep = np.isin(points.owner, structures)
    owner = np.searchsorted(structures, points.owner[keep])
    return Points(points.features[keep], points.species[keep], owner, len(structures))


def structure_subset(points: Points, max_points: int, rng: np.random.RandomState) -> np.ndarray:
    """Sorted random structures holding at most ``max_points`` points (at least two structures)."""
    sizes = np.bincount(points.owner, minlength=points.n_structures)
    order = rng.permutation(points.n_structures)
    n_take = max(2, int(np.searchsorted(np.cumsum(sizes[order]), max_points, side="right")))
    return np.sort(order[:n_take])
