"""Per-task overhead of a Dask local cluster against local processes, side by side, as ratios.

    python benchmarks/bench_executors.py                # 2 workers each; N trivial and M Δ-fit tasks
    python benchmarks/bench_executors.py --quick        # fewer tasks and rounds, for a smoke run
    python benchmarks/bench_executors.py --sweep        # + the demo sweep (shipped data, cached embeddings)

Both executors come from :func:`uipbench.executors.open_executor`: ``local`` (a
``ProcessPoolExecutor`` of ``--workers`` processes) and ``dask`` (a ``distributed.LocalCluster``
of ``--workers`` single-threaded worker processes, reached through its client's executor).
Workloads:

1. ``--trivial`` tasks that return at once: the wall time over the number of tasks is the
   per-task overhead of each engine (submission, scheduling, serialisation, result transfer).
2. ``--fits`` Δ-fit-sized tasks: one ``DeltaGPR`` atomic fit (hyperparameters optimised, no restart)
   and prediction each, on synthetic embeddings of the size of one sweep cell (``--train``
   structures of ``--atoms`` atoms, width ``--width``), inputs sent from the driver as a sweep's are.
3. (``--sweep``) the demo sweep (``uipbench.harness.sweep.sweep`` with its defaults: every backbone
   whose embeddings are cached, every shipped system), once on each engine; its results compared
   value for value.

Each executor is opened once and warmed up (its workers import what the tasks need), the time of that
is reported as ``startup_seconds``; then the two are timed in turn, ``--rounds`` times, each time being
the best of its rounds, so a load change on the machine hits both alike.  BLAS threads are limited to
one per process on both sides.  Ratios are Dask / local (above 1: Dask slower).  Writes
``reports/benchmarks/executors.json`` and prints Markdown.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy, inherited by workers
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import Executor, wait  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

from uipbench.executors import ExecutorSpec, open_executor  # noqa: E402
from uipbench.paths import reports_dir  # noqa: E402

ENGINES = ("local", "dask")


def trivial(x: int) -> int:
    return x + 1


def delta_fit(X_train: list, y_train: np.ndarray, X_test: list, seed: int) -> np.ndarray:
    """One Δ-fit of a sweep cell: fit on the training structures, predict the test ones."""
    from uipbench.delta import DeltaGPR

    model = DeltaGPR("atomic", n_restarts=0, random_state=seed)
    model.fit(X_train, y_train)
    return model.predict(X_test)


def synthetic(n: int, atoms: int, width: int, seed: int) -> tuple[list, np.ndarray]:
    """Structures of Cu + one S with embeddings; residual a smooth function of the embedding."""
    rng = np.random.default_rng(seed)
    numbers = np.array([29] * (atoms - 1) + [16], dtype=np.int64)
    X = [(rng.normal(size=(atoms, width)), numbers) for _ in range(n)]
    y = np.array([np.tanh(f[:, 0]).sum() + 0.1 * f[:, 1].sum() for f, _ in X])
    return X, y


def fit_tasks(m: int, train: int, atoms: int, width: int) -> list[tuple]:
    tasks = []
    for seed in range(m):
        X, y = synthetic(train, atoms, width, seed)
        Xt, _ = synthetic(max(4, train // 3), atoms, width, 1000 + seed)
        tasks.append((X, y, Xt, seed))
    return tasks


def run_all(executor: Executor, fn: Callable, tasks: list[tuple]) -> tuple[float, list]:
    """Wall time to submit every task and collect every result, and the results in task order."""
    start = time.perf_counter()
    futures = [executor.submit(fn, *t) for t in tasks]
    wait(futures)
    seconds = time.perf_counter() - start
    return seconds, [f.result() for f in futures]


def measure(workers: int, n_trivial: int, n_fits: int, rounds: int, shape: tuple[int, int, int]) -> dict[str, Any]:
    workloads = {"trivial": (trivial, [(i,) for i in range(n_trivial)]),
                 "delta_fit": (delta_fit, fit_tasks(n_fits, *shape))}
    times: dict[str, dict[str, list[float]]] = {w: {e: [] for e in ENGINES} for w in workloads}
    results: dict[str, dict[str, list]] = {w: {} for w in workloads}
    startup: dict[str, float] = {}
    with ExitStack() as stack:
        executors = {}
        for engine in ENGINES:
            start = time.perf_counter()
            executors[engine] = stack.enter_context(open_executor(ExecutorSpec(engine, workers)))
            run_all(executors[engine], delta_fit, workloads["delta_fit"][1][:workers])  # warm-up: imports
            startup[engine] = time.perf_counter() - start
        for _ in range(rounds):
            for name, (fn, tasks) in workloads.items():
                for engine in ENGINES:
                    seconds, out = run_all(executors[engine], fn, tasks)
                    times[name][engine].append(seconds)
                    results[name][engine] = out
    rows = []
    for name, (_, tasks) in workloads.items():
        same = all(np.array_equal(a, b) for a, b in zip(results[name]["local"], results[name]["dask"]))
        best = {e: min(times[name][e]) for e in ENGINES}
        rows.append(dict(workload=name, tasks=len(tasks), identical_results=bool(same),
                         **{f"{e}_seconds": best[e] for e in ENGINES},
                         **{f"{e}_ms_per_task": 1000 * best[e] / len(tasks) for e in ENGINES},
                         **{f"{e}_rounds": times[name][e] for e in ENGINES},
                         ratio_dask_over_local=best["dask"] / best["local"],
                         extra_ms_per_task_dask=1000 * (best["dask"] - best["local"]) / len(tasks)))
    return {"startup_seconds": startup, "rows": rows,
            "startup_ratio_dask_over_local": startup["dask"] / startup["local"]}


def measure_sweep(workers: int) -> dict[str, Any]:
    """The demo sweep on each engine (fresh output folders), wall time and value-for-value comparison."""
    import pandas as pd

    from uipbench.harness.sweep import KEY_COLUMNS, sweep

    out: dict[str, Any] = {}
    frames = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ENGINES:
            start, load = time.perf_counter(), os.getloadavg()[0]
            with open_executor(ExecutorSpec(engine, workers)) as executor:
                opened = time.perf_counter()
                frames[engine] = sweep(out=Path(tmp) / engine, executor=executor, progress=False)
            out[f"{engine}_seconds"] = time.perf_counter() - start
            out[f"{engine}_startup_seconds"] = opened - start
            # one long run per engine, one after the other: the machine's load says how comparable they are
            out[f"{engine}_load_average_1min"] = [load, os.getloadavg()[0]]
    keys = [*KEY_COLUMNS, "metric"]
    a, b = (frames[e].sort_values(keys).reset_index(drop=True) for e in ENGINES)
    try:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        out["identical_results"] = True
    except AssertionError:
        out["identical_results"] = False
    out.update(rows=len(a), ratio_dask_over_local=out["dask_seconds"] / out["local_seconds"])
    return out


def markdown(report: dict[str, Any]) -> str:
    s = report["startup_seconds"]
    lines = [f"Startup (open + warm-up): local {s['local']:.2f} s, Dask {s['dask']:.2f} s "
             f"(ratio {report['startup_ratio_dask_over_local']:.1f})", "",
             "| workload | tasks | local s | Dask s | local ms/task | Dask ms/task | Dask / local | "
             "extra ms/task on Dask | identical |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['workload']} | {r['tasks']} | {r['local_seconds']:.3f} | {r['dask_seconds']:.3f} | "
                     f"{r['local_ms_per_task']:.2f} | {r['dask_ms_per_task']:.2f} | "
                     f"{r['ratio_dask_over_local']:.2f} | {r['extra_ms_per_task_dask']:.2f} | "
                     f"{r['identical_results']} |")
    if "sweep" in report:
        w = report["sweep"]
        lines += ["", f"Demo sweep ({w['rows']} result rows): local {w['local_seconds']:.1f} s, "
                  f"Dask {w['dask_seconds']:.1f} s, ratio {w['ratio_dask_over_local']:.2f}, "
                  f"identical: {w['identical_results']} (1-min load average at start and end: local "
                  f"{w['local_load_average_1min']}, Dask {w['dask_load_average_1min']})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trivial", type=int, default=400, help="trivial tasks (N)")
    parser.add_argument("--fits", type=int, default=24, help="Δ-fit tasks (M)")
    parser.add_argument("--train", type=int, default=40, help="training structures per Δ-fit")
    parser.add_argument("--atoms", type=int, default=13, help="atoms per structure")
    parser.add_argument("--width", type=int, default=64, help="embedding width")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="N=100, M=6, 1 round")
    parser.add_argument("--sweep", action="store_true", help="also time the demo sweep on both engines")
    parser.add_argument("--out", type=Path, default=reports_dir() / "benchmarks" / "executors.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.trivial, args.fits, args.rounds = 100, 6, 1
    shape = (args.train, args.atoms, args.width)
    report = {"benchmark": "executors: Dask local cluster vs local processes",
              "spec": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_average_at_start": list(os.getloadavg())},
              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              **measure(args.workers, args.trivial, args.fits, args.rounds, shape)}
    if args.sweep:
        report["sweep"] = measure_sweep(args.workers)
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    report["markdown"] = markdown(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(report["markdown"])
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
