"""``uipbench sweep``: backbones × systems × descriptors × aggregations × training sizes × seeds.

Data flow: every structure is embedded once per backbone (cache, then one worker call
in the backbone's environment); the Δ-fits run here, in the core environment, as one
task per (backbone, descriptor, system) handed to a ``concurrent.futures``-style
executor (local processes by default; a Dask or submitit executor works the same).
Results are a tidy table — one row per backbone, system, model, descriptor,
aggregation, training size, seed, evaluation and metric — plus per-structure predictions, both
rewritten atomically after every finished task, so a resumed sweep skips every
finished cell.

Where a system has a validation set (``datasets/<system>/validation.extxyz``), every Δ configuration
and the raw backbone are also trained on all its training structures and scored on the validation
structures (``evaluation = "validation"``, one cell each, seed 0); the validation set is never fitted on.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._atomic import write_json_atomic
from ..cache import EmbeddingCache
from ..datasets.io import structure_hash
from . import metrics as M
from .data import POOLED, BackboneView, SystemData, embed_systems, load_systems
from .defaults import AGGREGATIONS, DEFAULT_SEEDS, DEFAULT_SIZES, DESCRIPTORS
from .results import (KEY_COLUMNS, LML, METADATA_FILE, NONE, PREDICTIONS_FILE, RESULT_COLUMNS,  # noqa: F401
                      RESULTS_FILE, RESULTS_SCHEMA, cell_key, delta_params, finished_cells, load_run, split_rows,
                      stale_reason, stale_validation, tidy, validation_rows, write_results)
from .tasks import Task, TaskResult, run_task

#: a default sweep leaves out systems with fewer labelled structures (named systems are always run)
MIN_STRUCTURES = 6

#: Δ-GPR settings of the sweep (scikit-learn style hyperparameters of DeltaGPR)
DEFAULT_GPR: dict[str, Any] = {"n_restarts": 1, "n_inducing": 300, "sparse_threshold": 1500}


@dataclass(frozen=True)
class SweepConfig:
    backbones: tuple[str, ...]
    systems: tuple[str, ...]
    aggregations: tuple[str, ...] = AGGREGATIONS
    sizes: tuple[int | str, ...] = DEFAULT_SIZES
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    descriptors: tuple[str, ...] = DESCRIPTORS
    test_fraction: float = 0.25
    gpr: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GPR))
    explicit_sizes: bool = False

    def __post_init__(self) -> None:
        bad = [a for a in self.aggregations if a not in AGGREGATIONS]
        if bad:
            raise ValueError(f"unknown aggregation(s) {bad}; choose from {AGGREGATIONS}")
        bad = [d for d in self.descriptors if d not in DESCRIPTORS]
        if bad:
            raise ValueError(f"unknown descriptor(s) {bad}; choose from {DESCRIPTORS}")
        for s in self.sizes:
            if s != "max" and (not isinstance(s, int) or s < 2):
                raise ValueError(f"training sizes are integers >= 2 or 'max', got {s!r}")
        if not self.seeds:
            raise ValueError("at least one seed is needed")


def resolve_sizes(requested: Sequence[int | str], n_train: int, explicit: bool, system: str) -> list[int]:
    """Requested sizes that the data allows ('max' = all training structures)."""
    sizes = []
    for s in requested:
        size = n_train if s == "max" else int(s)
        if size > n_train:
            if explicit:
                raise ValueError(f"training size {size} is larger than the {n_train} training structures of {system}")
            continue
        sizes.append(size)
    return sorted(set(sizes))


def _metadata(config: SweepConfig, systems: dict[str, SystemData], views: dict[str, BackboneView],
              command: list[str] | None, root: Path | None) -> dict:
    import importlib.metadata as md

    from ..adapters.card import get_card
    from ..datasets.protocol import PROTOCOL_V1

    members = sorted({m for s in systems.values() for m in s.members})
    count: dict[str, int] = {}
    protocols: dict[str, set[str]] = {}
    for s in systems.values():
        for m in s.members:
            own = [a for a, of in zip(s.structures, s.system_of) if of == m]
            count[m] = len(own)
            protocols[m] = {str(a.info.get("protocol", "unknown")) for a in own}
    names = sorted(set().union(*protocols.values()))
    protocol = PROTOCOL_V1.to_dict() if names == [PROTOCOL_V1.name] else {"name": ", ".join(names)}
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or sys.argv,
        "config": {**asdict(config), "sizes": [str(s) for s in config.sizes]},
        "versions": {"uipbench": md.version("uipbench"), "python": platform.python_version(),
                     **{p: md.version(p) for p in ("numpy", "scipy", "scikit-learn", "pandas", "ase")}},
        "protocol": protocol,
        "data": {m: {"sha256": systems_sha(systems, m), "structures": count[m], "protocol": sorted(protocols[m]),
                     "root": str(root) if root is not None else "shipped", **_validation_metadata(systems, m)}
                 for m in members},
        "backbones": {name: {"card": str(get_card(name).path.name), "metadata": view.metadata}
                      for name, view in views.items()},
        "delta_params": delta_params(config.gpr),
        "results_schema": RESULTS_SCHEMA,
    }


def _validation_metadata(systems: dict[str, SystemData], member: str) -> dict:
    """``{"validation": {sha256, structures}}`` of a member with a validation set, else ``{}``."""
    for s in systems.values():
        v = s.validation
        if v is not None and member in v.file_sha256:
            return {"validation": {"sha256": v.file_sha256[member], "structures": v.system_of.count(member)}}
    return {}


def systems_sha(systems: dict[str, SystemData], member: str) -> str:
    for s in systems.values():
        if member in s.file_sha256:
            return s.file_sha256[member]
    return ""




def sweep(backbones: Sequence[str] | None = None, systems: Sequence[str] | None = None, *,
          aggregations: Sequence[str] = AGGREGATIONS, sizes: Sequence[int | str] | None = None,
          seeds: Sequence[int] = DEFAULT_SEEDS, descriptors: Sequence[str] = DESCRIPTORS,
          test_fraction: float = 0.25, gpr: dict[str, Any] | None = None, out: str | Path | None = None,
          executor: Executor | None = None, workers: int = 2, cache: EmbeddingCache | None = None,
          progress: bool = True,
          command: list[str] | None = None, datasets_root: Path | None = None,
          trust_unpinned_weights: bool = False) -> pd.DataFrame:
    """Run (or resume) a sweep and return its tidy results table.

    ``backbones``: default every backbone whose weights are present; ``systems``: default
    every system under ``datasets_root`` (the shipped folder if None) alone plus ``all``
    pooled.  ``out``: folder for results.csv, predictions.csv and metadata.json (resumable;
    locked while the sweep runs); ``None`` keeps results in memory.
    ``executor``: any ``concurrent.futures.Executor`` (Dask, submitit, ...); default
    ``workers`` local processes.  ``trust_unpinned_weights``: see
    :func:`uipbench.adapters.registry.load_backbone`.
    """
    from ..adapters.registry import available_backbones
    from ..datasets.io import available_systems

    backbones = list(backbones) if backbones else available_backbones()
    explicit_systems = bool(systems)
    systems = list(systems) if systems else [*available_systems(datasets_root), POOLED]
    config = _config(backbones, systems, aggregations, sizes, seeds, descriptors, test_fraction, gpr)
    data = load_systems(systems, datasets_root, skip_small=None if explicit_systems else MIN_STRUCTURES)
    if not data:
        raise ValueError(f"no system has the {MIN_STRUCTURES} labelled structures a sweep needs")
    splits, sizes_of = _plan(config, data)
    out_path = Path(out) if out else None
    with _output_lock(out_path, command):
        results, preds = _resume(out_path, data, config)
        views = {name: embed_systems(name, data, cache, trust_unpinned_weights=trust_unpinned_weights)
                 for name in config.backbones}
        tasks = _tasks(config, data, views, splits, sizes_of)
        results, preds = _keep_finished(out_path, results, preds, tasks)
        tasks = [t for t in tasks if not t.finished()]
        if out_path:
            out_path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out_path / METADATA_FILE, _metadata(config, data, views, command, datasets_root))
        results = _execute(tasks, results, preds, out_path, executor, workers, progress)
    return tidy(results)


def _config(backbones: list[str], systems: list[str], aggregations: Sequence[str], sizes: Sequence[int | str] | None,
            seeds: Sequence[int], descriptors: Sequence[str], test_fraction: float,
            gpr: dict[str, Any] | None) -> SweepConfig:
    from ..adapters.card import get_card

    if not backbones:
        raise ValueError("no backbone with weights present; see `uipbench backbones`")
    for name in backbones:
        get_card(name)  # unknown names fail before any work
    return SweepConfig(tuple(backbones), tuple(systems), tuple(aggregations),
                       tuple(sizes) if sizes else DEFAULT_SIZES, tuple(seeds), tuple(descriptors), test_fraction,
                       {**DEFAULT_GPR, **(gpr or {})}, explicit_sizes=sizes is not None)


def _plan(config: SweepConfig, data: dict[str, SystemData]) -> tuple[dict, dict[str, list[int]]]:
    """Train/test splits per system and seed, and the training sizes each system allows."""
    splits = {name: {seed: d.split(seed, config.test_fraction) for seed in config.seeds} for name, d in data.items()}
    sizes_of = {}
    for name in data:
        n_train = len(splits[name][config.seeds[0]][0])
        sizes_of[name] = resolve_sizes(config.sizes, n_train, config.explicit_sizes, name)
        if not sizes_of[name]:
            raise ValueError(f"system {name}: no requested training size fits its {n_train} training structures")
    return splits, sizes_of


def _output_lock(out: Path | None, command: list[str] | None):
    from contextlib import nullcontext

    from .._lock import OutputLock

    return OutputLock(out, command=" ".join(command or sys.argv)) if out else nullcontext()


def _resume(out: Path | None, data: dict[str, SystemData], config: SweepConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results already in ``out`` that belong to this data and these settings."""
    if out is None:
        return pd.DataFrame(columns=RESULT_COLUMNS), pd.DataFrame()
    reason = stale_reason(out, data, config.gpr)
    if reason:  # cells computed on other data or settings are not results of these: start over
        warnings.warn(f"{out}: results were computed on other data or settings ({reason}); recomputing",
                      stacklevel=3)
        for name in (RESULTS_FILE, PREDICTIONS_FILE):
            (out / name).unlink(missing_ok=True)
    changed = stale_validation(out, data)
    loaded = load_run(out, missing_ok=True)
    if loaded.partial and not loaded.results.empty:
        warnings.warn(f"{out / RESULTS_FILE}: {loaded.partial}; every cell is checked for completeness and "
                      f"incomplete cells are recomputed", stacklevel=3)
    results, preds = loaded.results, loaded.predictions
    if changed and not validation_rows(results).empty:  # written at once: the new metadata must not vouch for them
        warnings.warn(f"{out}: {changed}; its validation cells are recomputed", stacklevel=3)
        results, preds = split_rows(results).reset_index(drop=True), split_rows(preds).reset_index(drop=True)
        write_results(out, results, preds)
    return results, preds


def _keep_finished(out: Path | None, results: pd.DataFrame, preds: pd.DataFrame,
                   tasks: list[Task]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Only the rows of complete cells; every task learns which of its cells are done."""
    expected = {k: v for t in tasks for k, v in t.cells().items()}
    done = finished_cells(results, preds, expected)
    for t in tasks:
        t.done = done
    keep = _in(results, done)
    if not keep.all():
        cells = {cell_key(*k) for k in results.loc[~keep, KEY_COLUMNS].itertuples(index=False)}
        warnings.warn(f"{out or 'results'}: {len(cells)} cell(s) with missing rows in {RESULTS_FILE} or "
                      f"{PREDICTIONS_FILE} (e.g. {', '.join(sorted(cells)[0])}); recomputed", stacklevel=3)
        results = results[keep].reset_index(drop=True)
    if not preds.empty:
        preds = preds[_in(preds, done)].reset_index(drop=True)
    return results, preds


def _in(table: pd.DataFrame, cells: frozenset[tuple]) -> np.ndarray:
    if table.empty:
        return np.zeros(0, dtype=bool)
    keys = zip(*(table[c].astype(str) for c in KEY_COLUMNS))
    return np.fromiter((k in cells for k in keys), dtype=bool, count=len(table))


def _scored(d: SystemData) -> SystemData:
    """The structures a task of ``d`` holds: its training structures, then its validation structures."""
    if d.validation is None:
        return d
    v = d.validation
    return SystemData(d.name, [*d.structures, *v.structures], d.members, [*d.system_of, *v.system_of],
                      d.file_sha256)


def _tasks(config: SweepConfig, data: dict[str, SystemData], views: dict[str, BackboneView],
           splits: dict, sizes_of: dict[str, list[int]]) -> list[Task]:
    scored = {name: _scored(d) for name, d in data.items()}
    soap: dict[str, list[np.ndarray]] = {}
    if "soap" in config.descriptors:
        from .descriptors import soap_features

        species = sorted({s for d in scored.values() for a in d.structures for s in a.get_chemical_symbols()})
        soap = {name: soap_features(d.structures, species) for name, d in scored.items()}
    measured = M.metrics()
    hashes = {name: [structure_hash(a) for a in d.structures] for name, d in scored.items()}  # once per system
    tasks = []
    for backbone in config.backbones:
        view = views[backbone]
        for descriptor in config.descriptors:
            for name, d in scored.items():
                n_train = len(data[name])
                validation = (list(range(n_train)), list(range(n_train, len(d)))) if len(d) > n_train else None
                keys = hashes[name]
                tasks.append(Task(
                    backbone, descriptor, name, d.system_of, d.ids, d.energy, d.forces, d.n_atoms, d.groups,
                    d.n_ss_pairs, np.array([view.energy[k] for k in keys]), [view.forces[k] for k in keys],
                    [view.embedding[k] for k in keys] if descriptor == "embedding" else soap[name],
                    [a.numbers.astype(np.int64) for a in d.structures], splits[name], sizes_of[name],
                    config.aggregations, config.gpr, metrics=measured, validation=validation))
    return tasks


def _execute(tasks: list[Task], results: pd.DataFrame, preds: pd.DataFrame, out: Path | None,
             executor: Executor | None, workers: int, progress: bool) -> pd.DataFrame:
    """Run the tasks; the driver alone writes the results, after every finished task."""
    own = executor is None
    executor = executor or _local_pool(workers)
    futures: dict = {}
    try:
        futures = {executor.submit(run_task, t): t for t in tasks}
        with tqdm(total=len(futures), desc="sweep", unit="task", disable=not progress, file=sys.stderr) as bar:
            for future in as_completed(futures):
                done: TaskResult = future.result()
                results = pd.concat([results, pd.DataFrame(done.rows, columns=RESULT_COLUMNS)], ignore_index=True)
                preds = pd.concat([preds, pd.DataFrame(done.predictions)], ignore_index=True)
                if out:
                    write_results(out, results, preds)
                _report_warnings(futures[future], done)
                bar.update(1)
    except BaseException:  # an error, Ctrl-C or SIGTERM: what is finished is written; stop the rest now
        _stop(executor, futures, own)
        raise
    if own:
        executor.shutdown()
    return results


def _local_pool(workers: int) -> ProcessPoolExecutor:
    """The default executor: local processes that leave Ctrl-C to the sweep and die with it."""
    from .._interrupt import worker_process_init

    return ProcessPoolExecutor(max_workers=max(1, workers), initializer=worker_process_init,
                               initargs=(os.getpid(),))


def _stop(executor: Executor, futures: dict, own: bool) -> None:
    """Cancel the tasks not started; the sweep's own pool also has its running workers terminated
    (a task runs for minutes, and its result could not be written any more)."""
    for future in futures:
        future.cancel()
    if not own:
        return
    processes = list((getattr(executor, "_processes", None) or {}).values())  # no public API before 3.14
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


class FitWarning(UserWarning):
    """Warnings the Δ-fits of a sweep task raised (GP convergence and the like), once per task."""


def _report_warnings(task: Task, done: TaskResult) -> None:
    if done.warnings:
        warnings.warn(f"{task.backbone} · {task.descriptor} · {task.system}: {len(done.warnings)} warning(s) "
                      f"from the Δ-fits: {'; '.join(done.summary())}", FitWarning, stacklevel=4)
