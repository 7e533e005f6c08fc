"""Running the plan: the Δ-fits, then the runs, ``jobs`` at a time, each a ``uipbench`` subprocess.

A *runner* takes a command's arguments (``["search", "cu-s3-3x3", "--backbone", ...]``) and, for a
Δ-fit, ``env``: variables set for that command (``UIPBENCH_CACHE_DIR``, :func:`~.plan.fit_cache_path`), and
returns its exit code; :class:`CliRunner` runs them as ``python -m uipbench.cli ...`` (so each search re-runs
itself in its backbone's environment), its output in ``OUT/logs/``.  Tests hand in a fake.

A run whose folder holds a finished run of the same settings (a ``delta`` run: and the same Δ-model, by
its hash) is not run again (:func:`~.collect.run_finished`); a ``delta`` run whose folder holds a search
with another Δ-model is failed with a message saying so (nothing is deleted); any other run is run
(``uipbench search`` resumes its folder).  A Δ-model already saved is not refitted; one fitted on other
training data than the datasets hold now is refused (:func:`check_models`).  On Ctrl-C or SIGTERM the
runs not started are cancelled and the children alive are ended (:mod:`uipbench._interrupt`).
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..._atomic import write_json_atomic
from ..._interrupt import children_cpu_seconds, end_children, run_child
from ...paths import CACHE_VARIABLE
from .collect import model_clash, run_finished
from .plan import (BenchmarkInputError, BenchmarkPlan, RunSpec, delta_fit_argv, fit_cache_path, fit_record_path,
                   model_exists, model_path, search_argv)

Runner = Callable[..., int]  # (argv, env=None) -> exit code
Log = Callable[[str], None]


class CliRunner:
    """Runs ``uipbench`` commands as subprocesses of this python, output appended to a log per folder."""

    def __init__(self, logs: Path, python: str = sys.executable):
        self.logs, self.python = Path(logs), python

    def log_path(self, argv: list[str]) -> Path:
        """``logs/search-<problem>-<backbone>-<method>-seed-<S>.log``, ``logs/delta-<backbone>.log``."""
        if "--out" not in argv:
            return self.logs / f"{argv[0]}.log"
        parts = Path(argv[argv.index("--out") + 1]).parts
        tail = parts[parts.index("runs") + 1:] if "runs" in parts else parts[-1:]
        return self.logs / f"{argv[0]}-{'-'.join(tail)}.log"

    def __call__(self, argv: list[str], env: Mapping[str, str] | None = None) -> int:
        path = self.log_path(argv)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as log:
            log.write("$ " + " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), "uipbench", *argv]) + "\n")
            log.flush()
            return run_child([self.python, "-m", "uipbench.cli", *argv], stdout=log, stderr=log,
                             env={**os.environ, **env} if env else None).returncode


@dataclass(frozen=True)
class RunOutcome:
    spec: RunSpec
    status: str  # "finished", "resumed" (finished before), "failed" or "skipped"
    message: str = ""
    wall_seconds: float = 0.0


def training_data_sha256() -> dict[str, str]:
    """sha256 of the training data ``uipbench delta fit`` reads by default: the ``structures.extxyz`` of
    every system with data under the datasets folder, by system."""
    from ...datasets.io import STRUCTURES_FILE, available_systems, default_root, system_dir
    from ...harness.data import file_sha256

    root = default_root()
    return {s: file_sha256(system_dir(s, root) / STRUCTURES_FILE) for s in available_systems(root)}


def read_fit_record(out: Path, backbone: str) -> dict[str, Any] | None:
    """``OUT/models/<backbone>.fit.json`` (None: none, or unreadable)."""
    try:
        record = json.loads(fit_record_path(out, backbone).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def check_models(plan: BenchmarkPlan, out: Path, data: dict[str, str], log: Log) -> None:
    """Refuse a saved Δ-model whose training data (its ``.fit.json``'s sha256 per system) differ from
    ``data``, the data now: refitting it silently would leave the delta runs of the old model.  A model
    without that record (put there by hand, or fitted by an older uipbench) is used as it is, said once."""
    for backbone in plan.delta_backbones:
        if not model_exists(out, backbone):
            continue
        base = model_path(out, backbone)
        recorded = (read_fit_record(out, backbone) or {}).get("training_data_sha256")
        if not isinstance(recorded, dict):
            log(f"Δ-model of {backbone} ({base}) has no record of its training data (put there by hand, or "
                f"fitted by an older uipbench): used as it is, not checked against the datasets")
            continue
        changed = [f"{s} ({'added' if s not in recorded else 'removed' if s not in data else 'changed'})"
                   for s in sorted(set(recorded) | set(data)) if recorded.get(s) != data.get(s)]
        if changed:
            raise BenchmarkInputError(
                f"the Δ-model of {backbone} ({base}) was fitted on other training data than the datasets hold now: "
                f"{', '.join(changed)}; its delta runs would not be those of a refit. Choose another --out, or delete "
                f"{base}.*, its fit's embedding cache {fit_cache_path(out, backbone)} and the delta runs "
                f"{Path(out) / 'runs' / '*' / backbone / 'delta'} to refit and rerun them")


def fit_models(plan: BenchmarkPlan, out: Path, runner: Runner, log: Log) -> dict[str, str]:
    """Fit each missing Δ-model, one at a time (nothing else runs meanwhile, so the CPU time of the fit's
    processes is measured exactly), after :func:`check_models`; ``OUT/models/<backbone>.fit.json`` keeps
    its CPU time and the sha256 of its training data.  Returns the failures: {backbone: message}."""
    data = training_data_sha256() if plan.delta_backbones else {}
    check_models(plan, out, data, log)
    failed = {}
    for backbone in plan.delta_backbones:
        if not model_exists(out, backbone):
            message = _fit(backbone, out, runner, data, log)
            if message is not None:
                failed[backbone] = message
    return failed


def _fit(backbone: str, out: Path, runner: Runner, data: dict[str, str], log: Log) -> str | None:
    """One Δ-fit and its record; None, or why it failed."""
    base = model_path(out, backbone)
    base.parent.mkdir(parents=True, exist_ok=True)
    argv = delta_fit_argv(out, backbone)
    if any(base.parent.glob(f"{base.name}.*")):  # one file of a pair (a fit killed while saving): overwrite
        argv.append("--force")
    cache = fit_cache_path(out, backbone)
    cold = not (cache.is_dir() and any(p.is_file() for p in cache.rglob("*")))
    cpu, wall = children_cpu_seconds(), time.perf_counter()
    code = runner(argv, env={CACHE_VARIABLE: str(cache)})
    cpu, wall = children_cpu_seconds() - cpu, time.perf_counter() - wall
    if code != 0 or not model_exists(out, backbone):
        message = (f"`uipbench {' '.join(argv)}` exited {code}" + ("" if code else " without a model")
                   + _where(runner, argv))
        log(f"Δ-fit of {backbone} failed: {message}; its delta runs are skipped")
        return message
    # the embedding cache empty before the fit: its CPU time includes embedding every training structure
    # (a fit retried after a kill may have found some of them cached)
    write_json_atomic(fit_record_path(out, backbone), {
        "cpu_seconds": cpu, "wall_seconds": wall, "command": ["uipbench", *argv], "training_data_sha256": data,
        "embedding_cache": str(cache), "embedding_cache_empty_before": cold})
    log(f"Δ-model of {backbone} fitted ({wall:.0f} s)")
    return None


def _where(runner: Runner, argv: list[str]) -> str:
    """Where the runner kept the command's output, if it says."""
    log_path = getattr(runner, "log_path", None)
    return f"; its output: {log_path(argv)}" if log_path is not None else ""


def model_hashes(plan: BenchmarkPlan, out: Path, failed_models: dict[str, str]) -> dict[str, str]:
    """:func:`uipbench.search.store.delta_sha256` of each Δ-model of the plan, as ``uipbench search``
    records it; a model that cannot be read joins ``failed_models``."""
    from ...delta.io import load
    from ..store import delta_sha256

    hashes = {}
    for backbone in plan.delta_backbones:
        if backbone in failed_models:
            continue
        try:
            hashes[backbone] = delta_sha256(load(model_path(out, backbone)))
        except (OSError, ValueError) as exc:
            failed_models[backbone] = f"unreadable Δ-model: {exc}"
    return hashes


def _one_run(spec: RunSpec, plan: BenchmarkPlan, out: Path, runner: Runner, model: str | None) -> RunOutcome:
    start = time.perf_counter()
    argv = search_argv(spec, plan.settings, out)
    code = runner(argv)
    wall = time.perf_counter() - start
    if code != 0:
        return RunOutcome(spec, "failed", f"exit {code}{_where(runner, argv)}", wall)
    if not run_finished(spec, out, plan.settings, model):
        return RunOutcome(spec, "failed", "exit 0 but its folder holds no finished run of these settings"
                          + (" and this Δ-model" if spec.method == "delta" else ""), wall)
    return RunOutcome(spec, "finished", "", wall)


def execute_runs(plan: BenchmarkPlan, out: Path, runner: Runner, jobs: int, log: Log,
                 failed_models: dict[str, str] | None = None) -> list[RunOutcome]:
    """Every run of the plan (finished ones skipped), ``jobs`` at a time; outcomes in plan order.  A ``delta``
    run whose folder holds a search with another Δ-model is failed, not run (:func:`~.collect.model_clash`)."""
    failed_models = dict(failed_models or {})
    hashes = model_hashes(plan, out, failed_models)
    outcomes: dict[RunSpec, RunOutcome] = {}
    todo = []
    for spec in plan.runs:
        model = hashes.get(spec.backbone) if spec.method == "delta" else None
        if run_finished(spec, out, plan.settings, model):
            outcomes[spec] = RunOutcome(spec, "resumed")
        elif spec.method == "delta" and spec.backbone in failed_models:
            outcomes[spec] = RunOutcome(spec, "skipped", f"no Δ-model: {failed_models[spec.backbone]}")
        elif (clash := model_clash(spec, out, model)) is not None:
            outcomes[spec] = RunOutcome(spec, "failed", clash)
            log(f"run {spec.key}: failed ({clash})")
        else:
            todo.append(spec)
    if todo:
        log(f"{len(todo)} run(s) to do, {len(outcomes)} done or skipped; {jobs} at a time")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_one_run, spec, plan, out, runner, hashes.get(spec.backbone) if spec.method == "delta"
                               else None): spec for spec in todo}

        def take(outcome: RunOutcome) -> None:
            outcomes[outcome.spec] = outcome
            note = f" ({outcome.message})" if outcome.message else ""
            log(f"run {outcome.spec.key}: {outcome.status}{note} [{len(outcomes)}/{len(plan.runs)}]")

        drain(futures, take, lambda spec, exc: RunOutcome(spec, "failed", f"{type(exc).__name__}: {exc}"))
    return [outcomes[spec] for spec in plan.runs]


def drain(futures: dict[Future, Any], take: Callable[[Any], None], failure: Callable[[Any, Exception], Any]) -> None:
    """Hand each future's result to ``take`` as it finishes (a task's exception: ``failure(task, exc)``).

    Ctrl-C, SIGTERM or any other ``BaseException`` here (raised by a task or by ``take``) cancels the
    tasks not started and ends the children of those running (started with ``run_child``), then re-raises,
    so the pool's shutdown does not wait for a search or a DFT job to end on its own.
    """
    order = {future: i for i, future in enumerate(futures)}
    pending = dict(futures)
    try:
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            stop: BaseException | None = None  # a task's Ctrl-C: raised once the other finished tasks are taken
            for future in sorted(finished, key=order.__getitem__):
                task = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - the task's failure, not the driver's
                    result = failure(task, exc)
                except BaseException as exc:
                    stop = stop or exc
                    continue
                take(result)
            if stop is not None:
                raise stop
    except BaseException:
        running = [f for f in pending if not f.cancel()]
        end_children(wait_for=running)
        raise
