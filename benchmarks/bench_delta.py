"""DeltaGPR against reference GP implementations: fit+predict time and held-out error, as ratios.

    python benchmarks/bench_delta.py                 # both comparisons
    python benchmarks/bench_delta.py --quick         # smaller sets, for a smoke run

1. ``global`` aggregation vs scikit-learn ``GaussianProcessRegressor`` (exact GP), 1 000 training
   structures.  scikit-learn gets the already aggregated, standardised features (its time excludes the
   aggregation that DeltaGPR's includes) and the kernel ConstantKernel × RBF + WhiteKernel.
2. ``atomic`` aggregation, sparse, vs AGOX ``SparseGPR`` (if ``agox`` is installed), 10 000+ atomic
   environments, 500 inducing points each: DeltaGPR's k-means choice vs AGOX's CUR sparsifier (its
   default), and AGOX given DeltaGPR's inducing points (same model, so only the solve is compared).
   AGOX's noise is per atom (σ_E² · n_atoms per structure); all structures have the same number of
   atoms so σ_E² · n_atoms = DeltaGPR's noise_level.

Same synthetic data (residual = smooth function of the embedding), same kernel, same fixed
hyperparameters (from one untimed DeltaGPR likelihood fit), no per-species offset (neither reference
has one), constant prior mean.  Both sides run with the same BLAS/OpenMP thread limit
(``--threads``, default 1: on a small busy machine threaded BLAS on these sizes only spins); each time
is the best of ``--repeats`` runs.  Writes ``reports/benchmarks/delta.json`` and prints Markdown.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from uipbench.delta import DeltaGPR
from uipbench.delta.aggregation import aggregate, structures_from_items

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    comparison: str
    implementation: str
    n_train_structures: int
    n_train_environments: int
    width: int
    seconds_fit: float
    seconds_predict: float
    rmse_ev: float

    @property
    def seconds(self) -> float:
        return self.seconds_fit + self.seconds_predict


def synthetic(n_structures: int, atoms: int, width: int, seed: int) -> tuple[list, np.ndarray]:
    """Structures of ``atoms`` Cu/S atoms; residual = Σ_atoms Σ_k 0.2 tanh(w_k·x) (w fixed), no noise."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(1234).normal(size=(width, 3)) / np.sqrt(width)
    X, y = [], []
    for _ in range(n_structures):
        numbers = np.where(np.arange(atoms) < 2, 16, 29)
        emb = rng.normal(size=(atoms, width)) + 0.5 * (numbers == 16)[:, None]
        X.append((emb, numbers))
        y.append(float(0.2 * np.tanh(emb @ w).sum()))
    return X, np.array(y)


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a).ravel() - np.asarray(b).ravel()) ** 2)))


def n_env(X: list) -> int:
    return int(sum(len(n) for _, n in X))


# ----------------------------------------------------------------------------- 1: scikit-learn

def compare_sklearn(n_train: int, n_test: int, width: int, repeats: int, threads: int) -> list[Row]:
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, RBF, WhiteKernel

    X, y = synthetic(n_train, 20, width, seed=0)
    Xt, yt = synthetic(n_test, 20, width, seed=1)
    tuned = DeltaGPR("global", offset=False, random_state=0).fit(X, y)  # untimed: the shared hyperparameters
    fixed = dict(amplitude=tuned.amplitude_, length_scale=tuned.length_scale_, noise_level=tuned.noise_level_)
    model = DeltaGPR("global", offset=False, optimize=False, blas_threads=threads, **fixed)

    t_fit, _ = best_of(repeats, lambda: model.fit(X, y))
    t_pred, pred = best_of(repeats, lambda: model.predict(Xt, return_std=True)[0])

    species = np.array([16, 29])
    feats = aggregate(structures_from_items(X), "global", species).features
    feats_t = aggregate(structures_from_items(Xt), "global", species).features
    mu, sd = feats.mean(0), feats.std(0)
    F, Ft = (feats - mu) / sd, (feats_t - mu) / sd
    kernel = (ConstantKernel(fixed["amplitude"], "fixed") * RBF(fixed["length_scale"], "fixed")
              + WhiteKernel(fixed["noise_level"], "fixed"))
    gpr = GaussianProcessRegressor(kernel, alpha=1e-10, optimizer=None, normalize_y=False)
    mean = y.mean()
    with threadpool_limits(threads):
        s_fit, _ = best_of(repeats, lambda: gpr.fit(F, y - mean))
        s_pred, sk_pred = best_of(repeats, lambda: gpr.predict(Ft, return_std=True)[0] + mean)
    d_fit, _ = best_of(repeats, lambda: gpr.fit(F, y - mean))  # the machine's default BLAS threads
    d_pred, _ = best_of(repeats, lambda: gpr.predict(Ft, return_std=True)[0] + mean)
    name = "global vs scikit-learn, fixed hyperparameters"
    rows = [Row(name, "DeltaGPR", n_train, n_env(X), width, t_fit, t_pred, rmse(pred, yt)),
            Row(name, "sklearn GaussianProcessRegressor", n_train, n_env(X), width, s_fit, s_pred, rmse(sk_pred, yt)),
            Row(name, "sklearn GaussianProcessRegressor, default BLAS threads", n_train, n_env(X), width,
                d_fit, d_pred, rmse(sk_pred, yt))]
    return rows + _compare_sklearn_optimised(X, y, Xt, yt, F, Ft, width, repeats, threads)


def _compare_sklearn_optimised(X, y, Xt, yt, F, Ft, width: int, repeats: int, threads: int) -> list[Row]:
    """Both maximise the log marginal likelihood from the same start within the same bounds, no restarts."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, RBF, WhiteKernel

    bounds = dict(amplitude_bounds=(1e-6, 1e6), length_scale_bounds=(1e-2, 1e3), noise_level_bounds=(1e-10, 1e2))
    start = dict(amplitude=1.0, length_scale=float(np.sqrt(2 * width)), noise_level=1e-2)
    model = DeltaGPR("global", offset=False, n_restarts=0, blas_threads=threads, random_state=0, **start, **bounds)
    t_fit, _ = best_of(repeats, lambda: model.fit(X, y))
    t_pred, pred = best_of(repeats, lambda: model.predict(Xt, return_std=True)[0])
    kernel = (ConstantKernel(start["amplitude"], bounds["amplitude_bounds"])
              * RBF(start["length_scale"], bounds["length_scale_bounds"])
              + WhiteKernel(start["noise_level"], bounds["noise_level_bounds"]))
    gpr = GaussianProcessRegressor(kernel, alpha=1e-10, n_restarts_optimizer=0, normalize_y=False, random_state=0)
    mean = y.mean()
    with threadpool_limits(threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        s_fit, _ = best_of(repeats, lambda: gpr.fit(F, y - mean))
        s_pred, sk_pred = best_of(repeats, lambda: gpr.predict(Ft, return_std=True)[0] + mean)
    name = "global vs scikit-learn, hyperparameters optimised"
    return [Row(name, "DeltaGPR", len(X), n_env(X), width, t_fit, t_pred, rmse(pred, yt)),
            Row(name, "sklearn GaussianProcessRegressor", len(X), n_env(X), width, s_fit, s_pred, rmse(sk_pred, yt))]


# ----------------------------------------------------------------------------- 2: AGOX

def _agox_model(features: dict[int, np.ndarray], fixed: dict[str, float], atoms: int, m: int,
                inducing: np.ndarray | None):
    from agox.models.descriptors.ABC_descriptor import DescriptorBaseClass
    from agox.models.GPR.kernels import RBF as AgoxRBF
    from agox.models.GPR.kernels import Constant
    from agox.models.GPR.sGPR import SparseGPR
    from agox.utils.sparsifiers import CUR
    from agox.utils.sparsifiers.ABC_sparsifier import SparsifierBaseClass

    class Precomputed(DescriptorBaseClass):
        """The backbone embedding as an AGOX local descriptor (looked up by ``atoms.info['key']``)."""

        name = "precomputed-embedding"
        descriptor_type = "local"

        def __init__(self) -> None:
            super().__init__(environment=None, use_cache=False)

        def get_number_of_centers(self, atoms) -> int:
            return len(atoms)

        def create_features(self, atoms) -> np.ndarray:
            return features[atoms.info["key"]]

    class Given(SparsifierBaseClass):
        name = "given"

        def sparsify(self, X: np.ndarray):
            return inducing, np.arange(len(inducing))

    kernel = Constant(fixed["amplitude"], (fixed["amplitude"],) * 2) * AgoxRBF(
        fixed["length_scale"], (fixed["length_scale"],) * 2)
    sparsifier = CUR(m_points=m) if inducing is None else Given(m_points=len(inducing))
    return SparseGPR(descriptor=Precomputed(), kernel=kernel, sigma=float(np.sqrt(fixed["noise_level"] / atoms)),
                     centralize=True, filter=None, sparsifier=sparsifier, n_optimize=0, use_ray=False,
                     verbosity=0)


def _as_atoms(X: list, y: np.ndarray | None, offset: int, features: dict[int, np.ndarray],
              mu: np.ndarray, sd: np.ndarray) -> list:
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for i, (emb, numbers) in enumerate(X):
        atoms = Atoms(numbers=numbers, positions=np.zeros((len(numbers), 3)), cell=np.eye(3) * 10, pbc=True)
        atoms.info["key"] = offset + i
        features[offset + i] = (emb - mu) / sd
        if y is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=float(y[i]))
        out.append(atoms)
    return out


def compare_agox(n_train: int, n_test: int, atoms: int, width: int, m: int, repeats: int,
                 threads: int) -> list[Row]:
    X, y = synthetic(n_train, atoms, width, seed=2)
    Xt, yt = synthetic(n_test, atoms, width, seed=3)
    all_env = np.concatenate([e for e, _ in X])
    mu, sd = all_env.mean(0), all_env.std(0)
    Xs = [((e - mu) / sd, n) for e, n in X]  # both get the same standardised features
    Xts = [((e - mu) / sd, n) for e, n in Xt]
    common = dict(aggregation="atomic", offset=False, standardize=False, sparse=True, n_inducing=m, random_state=0)
    tuned = DeltaGPR(**common).fit(Xs, y)  # untimed: the shared hyperparameters
    fixed = dict(amplitude=tuned.amplitude_, length_scale=tuned.length_scale_, noise_level=tuned.noise_level_)
    model = DeltaGPR(**common, optimize=False, blas_threads=threads, **fixed)
    t_fit, _ = best_of(repeats, lambda: model.fit(Xs, y))
    t_pred, pred = best_of(repeats, lambda: model.predict(Xts, return_std=True)[0])
    rows = [Row("atomic sparse vs AGOX", f"DeltaGPR (k-means, m={len(model.support_)})", n_train, n_env(X),
                width, t_fit, t_pred, rmse(pred, yt))]
    try:
        import agox  # noqa: F401
    except ImportError:
        print("agox is not installed: AGOX comparison skipped")
        return rows
    features: dict[int, np.ndarray] = {}
    train_atoms = _as_atoms(X, y, 0, features, mu, sd)
    test_atoms = _as_atoms(Xt, None, len(X), features, mu, sd)
    for label, inducing in (("AGOX SparseGPR (CUR)", None), ("AGOX SparseGPR (DeltaGPR's inducing points)",
                                                              model.support_)):
        np.random.seed(0)  # AGOX's CUR draws with the global NumPy generator
        agox_model = _agox_model(features, fixed, atoms, m, inducing)
        with threadpool_limits(threads):
            with contextlib.redirect_stdout(io.StringIO()):  # AGOX prints its model info on every train
                a_fit, _ = best_of(repeats, lambda: agox_model.train(train_atoms))
            a_pred, a_energy = best_of(repeats, lambda: np.array(
                [agox_model.predict_energy(a) for a in test_atoms]))
        rows.append(Row("atomic sparse vs AGOX", f"{label}, m={len(agox_model.Xm)}", n_train, n_env(X), width,
                        a_fit, a_pred, rmse(a_energy, yt)))
    import ray  # AGOX's GPR starts a ray pool on construction, even with use_ray=False

    ray.shutdown()
    return rows


# ----------------------------------------------------------------------------- 3: scale, no reference

def scale(n_env_target: int, atoms: int, width: int, threads: int) -> list[Row]:
    """DeltaGPR atomic, sparse (500 inducing points), hyperparameters optimised: one fit, one predict."""
    n = n_env_target // atoms
    X, y = synthetic(n, atoms, width, seed=4)
    Xt, yt = synthetic(100, atoms, width, seed=5)
    model = DeltaGPR("atomic", n_restarts=0, blas_threads=threads, random_state=0)
    t_fit, _ = best_of(1, lambda: model.fit(X, y))
    t_pred, pred = best_of(1, lambda: model.predict(Xt, return_std=True)[0])
    baseline = rmse(model.predict_baseline(Xt), yt)
    return [Row(f"scale (offset-only RMSE {baseline:.3f} eV)", "DeltaGPR atomic sparse, optimised, m=500", n,
                n_env(X), width, t_fit, t_pred, rmse(pred, yt))]


# ----------------------------------------------------------------------------- report

def markdown(rows: list[Row]) -> str:
    lines = ["| comparison | implementation | train structures | environments | d | fit s | predict s | "
             "time ratio (ref / DeltaGPR) | held-out RMSE eV | error ratio (DeltaGPR / ref) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for comparison in dict.fromkeys(r.comparison for r in rows):
        group = [r for r in rows if r.comparison == comparison]
        ours = group[0]
        for r in group:
            time_ratio = "1" if r is ours else f"{r.seconds / ours.seconds:.2f}"
            err_ratio = "1" if r is ours else f"{ours.rmse_ev / r.rmse_ev:.3f}"
            lines.append(f"| {r.comparison} | {r.implementation} | {r.n_train_structures} | "
                         f"{r.n_train_environments} | {r.width} | {r.seconds_fit:.3f} | {r.seconds_predict:.3f} | "
                         f"{time_ratio} | {r.rmse_ev:.4f} | {err_ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets (smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for every implementation")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks" / "delta.json")
    args = parser.parse_args(argv)
    sk_n, agox_n = (200, 40) if args.quick else (1000, 420)
    rows = compare_sklearn(sk_n, 500, args.width, args.repeats, args.threads)
    rows += compare_agox(agox_n, 80, 25, args.width, 500, args.repeats, args.threads)
    for width in (64, 256):
        rows += scale(5000 if args.quick else 50_000, 50, width, args.threads)
    table = markdown(rows)
    print(table)
    from uipbench._atomic import write_json_atomic

    write_json_atomic(args.out, {
        "benchmark": "delta", "threads": args.threads, "repeats": args.repeats, "quick": args.quick,
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "machine": platform.machine()},
        "rows": [dict(asdict(r), seconds=r.seconds) for r in rows],
        "markdown": table,
    })
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
