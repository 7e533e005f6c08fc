"""Several seeds of one search, one task per seed, on any executor (local threads, Dask, SLURM).

``uipbench search PROBLEM ... --seeds 0 1 2 --out DIR`` runs the search of each seed into
``DIR/seed-S`` as its own task: the task (:func:`run_seed`) starts ``python -m
uipbench.search.command ... --seed S --out DIR/seed-S`` with the worker's own interpreter, which
re-runs itself in the backbone's environment as a single search does.  A task is pure in the
sense the executors need: its inputs are a command line, its result a :class:`SeedResult`, and
the only files it writes are its own search folder's, each finished relaxation atomically, under
that folder's lock.  So a task retried after its worker died resumes the seed from its finished
relaxations, and finished seeds are read back, not repeated, when the driver runs again.  The dead
predecessor's lock is taken over when the retry runs on the same host; a lock left by a worker on
another host is never taken over (its process cannot be checked from here: :mod:`uipbench._lock`), so
that seed fails naming the lock file, and running the same command again after deleting the lock
(once that host's search is surely gone) resumes it.  The search processes die with the task that started them
(Linux), so a killed worker leaves no search running behind.

The driver holds the lock of ``DIR`` (two drivers on one folder: the second is refused) and
writes ``DIR/seeds.json`` (each seed's outcome, atomically) when all tasks have ended.
"""
from __future__ import annotations

import json
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from .._atomic import write_json_atomic
from .._interrupt import child_env, end_children, run_child

#: the module a seed task runs (``python -m MODULE ARGV``)
SEARCH_MODULE = "uipbench.search.command"
#: where a seed's search goes inside the driver's ``--out``
SEED_FOLDER = "seed-{seed}"
#: lines of a failed seed's stderr kept in its result
ERROR_LINES = 5


@dataclass(frozen=True)
class SeedTask:
    """One seed of a search: the command-line arguments of its single search."""

    seed: int
    argv: tuple[str, ...]
    out: str
    module: str = SEARCH_MODULE


@dataclass
class SeedResult:
    """What one seed's task returns (the driver writes it to ``seeds.json``)."""

    seed: int
    out: str
    returncode: int
    best_energy: float | None = None
    evaluations: int | None = None
    distinct_minima: int | None = None
    error: str = ""
    pid: int = 0  # the process that ran the task (a Dask worker's, or the driver's)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def seed_folder(out: Path, seed: int) -> Path:
    return out / SEED_FOLDER.format(seed=seed)


def seed_tasks(argv: Sequence[str], seeds: Sequence[int], out: Path) -> list[SeedTask]:
    """One task per seed; ``argv`` is the single-search command line without ``--seed`` and ``--out``."""
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds lists seed(s) {repeated} more than once")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, got {list(seeds)}")
    out = Path(out).resolve()
    return [SeedTask(s, (*argv, "--seed", str(s), "--out", str(seed_folder(out, s)), "--no-progress"),
                     str(seed_folder(out, s))) for s in seeds]


def _summary(out: Path) -> dict:
    try:
        return json.loads((out / "search.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def run_seed(task: SeedTask) -> SeedResult:
    """Run one seed's search to the end in a child process of this one (a task for any executor)."""
    proc = run_child([sys.executable, "-m", task.module, *task.argv], capture_output=True, text=True,
                     env=child_env())
    summary = _summary(Path(task.out)) if proc.returncode == 0 else {}
    error = "" if proc.returncode == 0 else "\n".join((proc.stderr or "").strip().splitlines()[-ERROR_LINES:])
    return SeedResult(task.seed, task.out, proc.returncode, summary.get("best_energy"), summary.get("evaluations"),
                      summary.get("distinct_minima"), error, os.getpid())


def run_seeds(tasks: Sequence[SeedTask], executor: Executor | None = None, *, workers: int = 1,
              on_result: Callable[[SeedResult], None] | None = None) -> list[SeedResult]:
    """Every task's result, in seed order.  ``executor`` None: ``workers`` local threads, each
    waiting on its seed's search process.  A task that fails on the executor itself (its worker
    kept dying) becomes a failed result; Ctrl-C or SIGTERM ends the local search processes."""
    own = executor is None
    executor = executor or ThreadPoolExecutor(max_workers=max(1, workers))
    futures: dict[Future, SeedTask] = {executor.submit(run_seed, t): t for t in tasks}
    results: dict[int, SeedResult] = {}
    try:
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                task = futures.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - the task's failure, not the driver's
                    result = SeedResult(task.seed, task.out, -1, error=f"{type(exc).__name__}: {exc}")
                results[task.seed] = result
                if on_result is not None:
                    on_result(result)
    except BaseException:
        running = [f for f in futures if not f.cancel()]
        if own:
            end_children(wait_for=running)
        raise
    finally:
        if own:
            executor.shutdown(wait=True, cancel_futures=True)
    return [results[t.seed] for t in sorted(tasks, key=lambda t: t.seed)]


def write_seeds_summary(out: Path, results: Sequence[SeedResult], executor: dict) -> Path:
    path = Path(out) / "seeds.json"
    ok = [r for r in results if r.ok and r.best_energy is not None]
    best = min(ok, key=lambda r: r.best_energy) if ok else None
    write_json_atomic(path, {"executor": executor, "seeds": [asdict(r) for r in results],
                             "best_seed": best.seed if best else None,
                             "best_energy": best.best_energy if best else None})
    return path
