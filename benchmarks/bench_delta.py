"""DeltaGPR against reference GP implementations: fit+predict time and held-out error, as ratios.

    python benchmarks/bench_delta.py                 # both comparisons, 3 data seeds
    python benchmarks/bench_delta.py --seeds 5       # more data seeds
    python benchmarks/bench_delta.py --quick         # smaller sets, for a smoke run

1. ``global`` aggregation vs scikit-learn ``GaussianProcessRegressor`` (exact GP), 1 000 training
   structures.  scikit-learn gets the already aggregated, standardised features (its time excludes the
   aggregation that DeltaGPR's includes) and the kernel ConstantKernel × RBF + WhiteKernel.  Once with
   fixed hyperparameters, once with both maximising the log marginal likelihood from the same start
   within the same bounds (no restarts): DeltaGPR with its default ``max_opt_points`` (the likelihood
   optimised on a random 500-structure subset, then one solve on all data) and, for reference, on all
   1 000 structures, as scikit-learn does.
2. ``atomic`` aggregation, sparse, vs AGOX ``SparseGPR`` (if ``agox`` is installed), 10 000+ atomic
   environments, 500 inducing points each: DeltaGPR with k-means and with CUR inducing points vs AGOX
   with its default CUR sparsifier, and AGOX given DeltaGPR's k-means inducing points (same model, so
   only the solve is compared).  AGOX's noise is per atom (σ_E² · n_atoms per structure); all
   structures have the same number of atoms so σ_E² · n_atoms = DeltaGPR's noise_level.  Which
   inducing points a draw gives moves the held-out RMSE by a few per cent, so each RMSE here is the mean
   over ``--draws`` inducing-point draws (seeds s, s + 1000, ...; the time is that of the first draw).

Same synthetic data (residual = smooth function of the embedding), same kernel, no per-species offset
(neither reference has one), constant prior mean; in 2. same fixed hyperparameters (from one untimed
DeltaGPR likelihood fit).  Everything is repeated on ``--seeds`` independent data sets (seed s: train
and test sets drawn with seeds 4s .. 4s+3); DeltaGPR's likelihood subset and the timed inducing-point
draws of DeltaGPR and AGOX use seed s too.
Both sides run with the same BLAS/OpenMP thread limit (``--threads``, default 1: on a small busy machine
threaded BLAS on these sizes only spins).  The implementations of one comparison are timed side by side,
interleaved (one run of each in turn, ``--repeats`` rounds), and each time is the best of its runs, so
a load change on the machine hits all of them alike.  Reported: per seed, and the mean ratio (with
standard deviation, min and max over seeds) of time (reference / DeltaGPR) and held-out RMSE
(DeltaGPR / reference).  Writes ``reports/benchmarks/delta.json`` and prints Markdown.
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
    seed: int
    n_train_structures: int
    n_train_environments: int
    width: int
    seconds_fit: float
    seconds_predict: float
    rmse_ev: float
    n_support: int | None = None  # inducing points of a sparse model (of the timed draw)
    rmse_per_draw: list[float] | None = None  # sparse: RMSE of each inducing-point draw; rmse_ev is their mean

    @property
    def seconds(self) -> float:
        return self.seconds_fit + self.seconds_predict


#: (comparison, DeltaGPR implementation, reference implementation): the ratios reported over seeds
PAIRS = [
    ("global vs scikit-learn, fixed hyperparameters", "DeltaGPR", "sklearn GaussianProcessRegressor"),
    ("global vs scikit-learn, fixed hyperparameters", "DeltaGPR",
     "sklearn GaussianProcessRegressor, default BLAS threads"),
    ("global vs scikit-learn, hyperparameters optimised", "DeltaGPR (max_opt_points=500, default)",
     "sklearn GaussianProcessRegressor"),
    ("global vs scikit-learn, hyperparameters optimised", "DeltaGPR (optimised on all points)",
     "sklearn GaussianProcessRegressor"),
    ("atomic sparse vs AGOX", "DeltaGPR (k-means)", "AGOX SparseGPR (CUR, its default)"),
    ("atomic sparse vs AGOX", "DeltaGPR (CUR)", "AGOX SparseGPR (CUR, its default)"),
    ("atomic sparse vs AGOX", "DeltaGPR (k-means)", "AGOX SparseGPR (DeltaGPR's k-means inducing points)"),
]


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


def side_by_side(repeats: int, jobs: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, Any]]:
    """Best time and last result of each job, the jobs run in turn (order rotating) ``repeats`` times."""
    best = {name: np.inf for name in jobs}
    out: dict[str, Any] = {}
    names = list(jobs)
    for k in range(repeats):
        for name in names[k % len(names):] + names[:k % len(names)]:
            start = time.perf_counter()
            out[name] = jobs[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (best[name], out[name]) for name in names}


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a).ravel() - np.asarray(b).ravel()) ** 2)))


def n_env(X: list) -> int:
    return int(sum(len(n) for _, n in X))


# ----------------------------------------------------------------------------- 1: scikit-learn

def _limited(threads: int | None, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run under a BLAS/OpenMP thread limit (None: the machine's default), as DeltaGPR does per call."""
    def run() -> Any:
        with threadpool_limits(threads) if threads is not None else contextlib.nullcontext():
            return fn()
    return run


def compare_sklearn(n_train: int, n_test: int, width: int, repeats: int, threads: int, seed: int) -> list[Row]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, RBF, WhiteKernel

    X, y = synthetic(n_train, 20, width, seed=4 * seed)
    Xt, yt = synthetic(n_test, 20, width, seed=4 * seed + 1)
    species = np.array([16, 29])
    feats = aggregate(structures_from_items(X), "global", species).features
    feats_t = aggregate(structures_from_items(Xt), "global", species).features
    mu, sd = feats.mean(0), feats.std(0)
    F, Ft = (feats - mu) / sd, (feats_t - mu) / sd
    mean = y.mean()

    def row(name: str, implementation: str, fit: float, pred: float, err: float) -> Row:
        return Row(name, implementation, seed, len(X), n_env(X), width, fit, pred, err)

    # fixed hyperparameters (from one untimed DeltaGPR fit)
    tuned = DeltaGPR("global", offset=False, random_state=seed).fit(X, y)
    fixed = dict(amplitude=tuned.amplitude_, length_scale=tuned.length_scale_, noise_level=tuned.noise_level_)
    model = DeltaGPR("global", offset=False, optimize=False, blas_threads=threads, **fixed)
    kernel = (ConstantKernel(fixed["amplitude"], "fixed") * RBF(fixed["length_scale"], "fixed")
              + WhiteKernel(fixed["noise_level"], "fixed"))
    gpr = GaussianProcessRegressor(kernel, alpha=1e-10, optimizer=None, normalize_y=False)
    gpr_default = GaussianProcessRegressor(kernel, alpha=1e-10, optimizer=None, normalize_y=False)
    fits = side_by_side(repeats, {"ours": lambda: model.fit(X, y),
                                  "sk": _limited(threads, lambda: gpr.fit(F, y - mean)),
                                  "sk-default": _limited(None, lambda: gpr_default.fit(F, y - mean))})
    preds = side_by_side(repeats, {
        "ours": lambda: model.predict(Xt, return_std=True)[0],
        "sk": _limited(threads, lambda: gpr.predict(Ft, return_std=True)[0] + mean),
        "sk-default": _limited(None, lambda: gpr_default.predict(Ft, return_std=True)[0] + mean)})
    name = "global vs scikit-learn, fixed hyperparameters"
    rows = [row(name, label, fits[key][0], preds[key][0], rmse(preds[key][1], yt)) for key, label in (
        ("ours", "DeltaGPR"), ("sk", "sklearn GaussianProcessRegressor"),
        ("sk-default", "sklearn GaussianProcessRegressor, default BLAS threads"))]

    # hyperparameters optimised by both, from the same start within the same bounds, no restarts
    bounds = dict(amplitude_bounds=(1e-6, 1e6), length_scale_bounds=(1e-2, 1e3), noise_level_bounds=(1e-10, 1e2))
    start = dict(amplitude=1.0, length_scale=float(np.sqrt(2 * width)), noise_level=1e-2)
    common = dict(offset=False, n_restarts=0, blas_threads=threads, random_state=seed, **start, **bounds)
    ours = DeltaGPR("global", **common)
    ours_all = DeltaGPR("global", max_opt_points=len(X), **common)
    kernel = (ConstantKernel(start["amplitude"], bounds["amplitude_bounds"])
              * RBF(start["length_scale"], bounds["length_scale_bounds"])
              + WhiteKernel(start["noise_level"], bounds["noise_level_bounds"]))
    gpr = GaussianProcessRegressor(kernel, alpha=1e-10, n_restarts_optimizer=0, normalize_y=False, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fits = side_by_side(repeats, {"ours": lambda: ours.fit(X, y), "ours-all": lambda: ours_all.fit(X, y),
                                      "sk": _limited(threads, lambda: gpr.fit(F, y - mean))})
    preds = side_by_side(repeats, {"ours": lambda: ours.predict(Xt, return_std=True)[0],
                                   "ours-all": lambda: ours_all.predict(Xt, return_std=True)[0],
                                   "sk": _limited(threads, lambda: gpr.predict(Ft, return_std=True)[0] + mean)})
    name = "global vs scikit-learn, hyperparameters optimised"
    rows += [row(name, label, fits[key][0], preds[key][0], rmse(preds[key][1], yt)) for key, label in (
        ("ours", "DeltaGPR (max_opt_points=500, default)"), ("ours-all", "DeltaGPR (optimised on all points)"),
        ("sk", "sklearn GaussianProcessRegressor"))]
    return rows


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


def _agox_jobs(features: dict[int, np.ndarray], fixed: dict[str, float], atoms: int, m: int,
               inducing: np.ndarray | None, train_atoms: list, test_atoms: list, draw_seed: int,
               threads: int) -> tuple[Callable[[], Any], Callable[[], np.ndarray], Callable[[], int]]:
    """(train, predict, number of inducing points) of one AGOX SparseGPR."""
    model = _agox_model(features, fixed, atoms, m, inducing)

    def train() -> Any:
        np.random.seed(draw_seed)  # AGOX's CUR draws with the global NumPy generator
        with threadpool_limits(threads), contextlib.redirect_stdout(io.StringIO()):  # it prints on every train
            return model.train(train_atoms)

    predict = _limited(threads, lambda: np.array([model.predict_energy(a) for a in test_atoms]))
    return train, predict, lambda: len(model.Xm)


def compare_agox(n_train: int, n_test: int, atoms: int, width: int, m: int, repeats: int,
                 threads: int, seed: int, draws: int) -> list[Row]:
    """Time on inducing-point draw 0 (side by side); RMSE = mean over ``draws`` inducing-point draws."""
    X, y = synthetic(n_train, atoms, width, seed=4 * seed + 2)
    Xt, yt = synthetic(n_test, atoms, width, seed=4 * seed + 3)
    all_env = np.concatenate([e for e, _ in X])
    mu, sd = all_env.mean(0), all_env.std(0)
    Xs = [((e - mu) / sd, n) for e, n in X]  # both get the same standardised features
    Xts = [((e - mu) / sd, n) for e, n in Xt]
    common = dict(aggregation="atomic", offset=False, standardize=False, sparse=True, n_inducing=m)
    tuned = DeltaGPR(**common, random_state=seed).fit(Xs, y)  # untimed: the shared hyperparameters
    fixed = dict(amplitude=tuned.amplitude_, length_scale=tuned.length_scale_, noise_level=tuned.noise_level_)
    try:
        import agox  # noqa: F401
        have_agox = True
    except ImportError:
        print("agox is not installed: AGOX comparison skipped")
        have_agox = False
    if have_agox:
        features: dict[int, np.ndarray] = {}
        train_atoms = _as_atoms(X, y, 0, features, mu, sd)
        test_atoms = _as_atoms(Xt, None, len(X), features, mu, sd)

    def jobs(draw_seed: int) -> dict[str, tuple[Callable[[], Any], Callable[[], np.ndarray], Callable[[], int]]]:
        out = {}
        for label, inducing in (("DeltaGPR (k-means)", "kmeans"), ("DeltaGPR (CUR)", "cur")):
            model = DeltaGPR(**common, inducing=inducing, optimize=False, blas_threads=threads,
                             random_state=draw_seed, **fixed)
            out[label] = (lambda model=model: model.fit(Xs, y),
                          lambda model=model: model.predict(Xts, return_std=True)[0],
                          lambda model=model: len(model.support_))
        if have_agox:
            kmeans = DeltaGPR(**common, optimize=False, random_state=draw_seed, **fixed).fit(Xs, y).support_
            out["AGOX SparseGPR (CUR, its default)"] = _agox_jobs(features, fixed, atoms, m, None, train_atoms,
                                                                  test_atoms, draw_seed, threads)
            out["AGOX SparseGPR (DeltaGPR's k-means inducing points)"] = _agox_jobs(
                features, fixed, atoms, m, kmeans, train_atoms, test_atoms, draw_seed, threads)
        return out

    timed = jobs(seed)
    fits = side_by_side(repeats, {label: job[0] for label, job in timed.items()})
    preds = side_by_side(repeats, {label: job[1] for label, job in timed.items()})
    errors = {label: [rmse(preds[label][1], yt)] for label in timed}
    support = {label: job[2]() for label, job in timed.items()}
    for d in range(1, draws):  # untimed: more inducing-point draws for the error
        for label, (fit, predict, _) in jobs(seed + 1000 * d).items():
            fit()
            errors[label].append(rmse(predict(), yt))
    if have_agox:
        import ray  # AGOX's GPR starts a ray pool on construction, even with use_ray=False

        ray.shutdown()
    return [Row("atomic sparse vs AGOX", label, seed, n_train, n_env(X), width, fits[label][0], preds[label][0],
                float(np.mean(errors[label])), support[label], errors[label]) for label in timed]


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
    return [Row(f"scale (offset-only RMSE {baseline:.3f} eV)", "DeltaGPR atomic sparse, optimised, m=500", 0, n,
                n_env(X), width, t_fit, t_pred, rmse(pred, yt), len(model.support_))]


# ----------------------------------------------------------------------------- report

def _stats(v: np.ndarray) -> dict[str, Any]:
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else 0.0, min=float(v.min()),
                max=float(v.max()), per_seed=[float(x) for x in v])


def summarise(rows: list[Row]) -> list[dict[str, Any]]:
    """Per pair of :data:`PAIRS`: time ratio (reference / DeltaGPR) and error ratio (DeltaGPR / reference)
    on each seed, their mean, standard deviation, min and max."""
    out = []
    for comparison, ours, ref in PAIRS:
        by_seed = {}
        for r in rows:
            if r.comparison == comparison and r.implementation in (ours, ref):
                by_seed.setdefault(r.seed, {})[r.implementation] = r
        seeds = sorted(s for s, pair in by_seed.items() if len(pair) == 2)
        if not seeds:
            continue
        time_ratio = np.array([by_seed[s][ref].seconds / by_seed[s][ours].seconds for s in seeds])
        err_ratio = np.array([by_seed[s][ours].rmse_ev / by_seed[s][ref].rmse_ev for s in seeds])
        out.append(dict(comparison=comparison, deltagpr=ours, reference=ref, seeds=seeds,
                        seconds_deltagpr=float(np.mean([by_seed[s][ours].seconds for s in seeds])),
                        seconds_reference=float(np.mean([by_seed[s][ref].seconds for s in seeds])),
                        rmse_deltagpr=float(np.mean([by_seed[s][ours].rmse_ev for s in seeds])),
                        rmse_reference=float(np.mean([by_seed[s][ref].rmse_ev for s in seeds])),
                        time_ratio=_stats(time_ratio), error_ratio=_stats(err_ratio)))
    return out


def markdown_summary(summary: list[dict[str, Any]]) -> str:
    lines = ["| comparison | DeltaGPR | reference | seeds | DeltaGPR s (mean) | reference s (mean) | "
             "time ratio ref / DeltaGPR: mean ± sd [min, max] | DeltaGPR RMSE eV | reference RMSE eV | "
             "error ratio DeltaGPR / ref: mean ± sd [min, max] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        t, e = s["time_ratio"], s["error_ratio"]
        lines.append(f"| {s['comparison']} | {s['deltagpr']} | {s['reference']} | {len(s['seeds'])} | "
                     f"{s['seconds_deltagpr']:.3f} | {s['seconds_reference']:.3f} | "
                     f"{t['mean']:.2f} ± {t['std']:.2f} [{t['min']:.2f}, {t['max']:.2f}] | "
                     f"{s['rmse_deltagpr']:.4f} | {s['rmse_reference']:.4f} | "
                     f"{e['mean']:.4f} ± {e['std']:.4f} [{e['min']:.4f}, {e['max']:.4f}] |")
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    lines = ["| comparison | implementation | seed | train structures | environments | d | inducing | fit s | "
             "predict s | held-out RMSE eV |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.comparison} | {r.implementation} | {r.seed} | {r.n_train_structures} | "
                     f"{r.n_train_environments} | {r.width} | {'' if r.n_support is None else r.n_support} | "
                     f"{r.seconds_fit:.3f} | {r.seconds_predict:.3f} | {r.rmse_ev:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets (smoke run)")
    parser.add_argument("--seeds", type=int, default=3, help="independent data sets per comparison")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds; best time kept")
    parser.add_argument("--draws", type=int, default=3,
                        help="AGOX comparison: inducing-point draws per data seed, RMSE averaged over them")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for every implementation")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--no-scale", action="store_true", help="skip the 50 000-environment scale runs")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks" / "delta.json")
    args = parser.parse_args(argv)
    sk_n, agox_n = (200, 40) if args.quick else (1000, 420)
    rows: list[Row] = []
    for seed in range(args.seeds):
        rows += compare_sklearn(sk_n, 500, args.width, args.repeats, args.threads, seed)
        rows += compare_agox(agox_n, 80, 25, args.width, 500, args.repeats, args.threads, seed, args.draws)
        print(f"seed {seed} done", flush=True)
    if not args.no_scale:
        for width in (64, 256):
            rows += scale(5000 if args.quick else 50_000, 50, width, args.threads)
    summary = summarise(rows)
    table, per_seed = markdown_summary(summary), markdown(rows)
    print(table + "\n\n" + per_seed)
    from uipbench._atomic import write_json_atomic

    write_json_atomic(args.out, {
        "benchmark": "delta", "threads": args.threads, "repeats": args.repeats, "seeds": args.seeds,
        "inducing_draws": args.draws,
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "machine": platform.machine()},
        "summary": summary,
        "rows": [dict(asdict(r), seconds=r.seconds) for r in rows],
        "markdown": table,
        "markdown_per_seed": per_seed,
    })
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
