"""``uipbench sweep``: backbones × systems × descriptors × aggregations × training sizes × seeds.

Data flow: every structure is embedded once per backbone (cache, then one worker call
in the backbone's environment); the Δ-fits run here, in the core environment, as one
task per (backbone, descriptor, system) handed to a ``concurrent.futures``-style
executor (local processes by default; a Dask or submitit executor works the same).
Results are a tidy table — one row per backbone, system, model, descriptor,
aggregation, training size, seed and metric — plus per-structure predictions, both
rewritten atomically after every finished task, so a resumed sweep skips every
finished cell.
"""
from __future__ import annotations

import datetime as dt
import json
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

from .._atomic import write_json_atomic, write_text_atomic
from ..cache import EmbeddingCache
from ..datasets.io import structure_hash
from . import metrics as M
from .data import POOLED, BackboneView, SystemData, embed_systems, load_systems
from .defaults import AGGREGATIONS, DEFAULT_SEEDS, DEFAULT_SIZES, DESCRIPTORS

#: a default sweep leaves out systems with fewer labelled structures (named systems are always run)
MIN_STRUCTURES = 6
NONE = "-"
KEY_COLUMNS = ["backbone", "system", "model", "descriptor", "aggregation", "train_size", "seed"]
RESULT_COLUMNS = [*KEY_COLUMNS, "metric", "value", "note"]
RESULTS_FILE, PREDICTIONS_FILE, METADATA_FILE = "results.csv", "predictions.csv", "metadata.json"
#: version of what a results table holds; results of another version are recomputed, not mixed in
#: (2: Δ cells record the log marginal likelihood of their fit)
RESULTS_SCHEMA = 2
#: metric name of a Δ fit's log marginal likelihood (nats, training data only)
LML = "log_marginal_likelihood"

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


@dataclass
class Task:
    """Everything one (backbone, descriptor, system) task needs, as plain arrays."""

    backbone: str
    descriptor: str
    system: str
    member_of: list[str]
    ids: list[str]
    energy_ref: np.ndarray
    forces_ref: list[np.ndarray]
    n_atoms: np.ndarray
    groups: list[str]
    n_ss_pairs: np.ndarray
    energy_backbone: np.ndarray
    forces_backbone: list[np.ndarray]
    features: list[np.ndarray]
    numbers: list[np.ndarray]
    splits: dict[int, tuple[list[int], list[int]]]
    sizes: list[int]
    aggregations: tuple[str, ...]
    gpr: dict[str, Any]
    done: frozenset[tuple]


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


def _key(*parts: Any) -> tuple:
    return tuple(str(p) for p in parts)


def _score(task: Task, model: str, descriptor: str, aggregation: str, size: int, seed: int, test: list[int],
           predicted: np.ndarray, std: np.ndarray | None) -> tuple[list[dict], list[dict]]:
    ref, n_atoms = task.energy_ref[test], task.n_atoms[test]
    groups = [task.groups[i] for i in test]
    errors = M.energy_errors_per_atom_mev(predicted, ref, n_atoms)
    rho, lowest = M.ranking_quality(predicted, ref, groups)
    values = {
        "energy_mae_mev_per_atom": M.mae(errors),
        "energy_rmse_mev_per_atom": M.rmse(errors),
        "relative_energy_mae_mev": M.relative_energy_mae_mev(predicted, ref, groups),
        "spearman_within_composition": rho,
        "lowest_found_fraction": lowest,
        "n_test": float(len(test)),
    }
    if model == "raw" and all(task.forces_backbone[i] is not None for i in test):
        values["force_mae_ev_per_angstrom"] = M.force_mae([task.forces_backbone[i] for i in test],
                                                          [task.forces_ref[i] for i in test])
    base = dict(backbone=task.backbone, system=task.system, model=model, descriptor=descriptor,
                aggregation=aggregation, train_size=size, seed=seed)
    rows = [{**base, "metric": k, "value": v, "note": ""} for k, v in values.items()]
    preds = [{**base, "structure": task.ids[i], "member_system": task.member_of[i], "n_atoms": int(task.n_atoms[i]),
              "n_ss_pairs": int(task.n_ss_pairs[i]), "energy_ref": float(task.energy_ref[i]),
              "energy_pred": float(p), "std": float(s) if std is not None else np.nan}
             for i, p, s in zip(test, predicted, std if std is not None else [None] * len(test))]
    return rows, preds


def run_task(task: Task) -> tuple[list[dict], list[dict]]:
    """Fit and score every (aggregation, size, seed) cell of one task that is not done yet.

    An embedding task also scores the raw backbone (after the per-species offset fitted on the
    same training structures), once per (size, seed).
    """
    from ..delta import DeltaGPR, DeltaModelError
    from ..delta.offset import offset_prediction

    rows: list[dict] = []
    preds: list[dict] = []
    residual = task.energy_ref - task.energy_backbone
    X = list(zip(task.features, task.numbers))
    offset_options = {k: task.gpr[k] for k in ("offset", "prior_mean") if k in task.gpr}
    for seed, (train_order, test) in task.splits.items():
        X_test = [X[i] for i in test]
        for size in task.sizes:
            train = train_order[:size]
            X_train, y_train = [X[i] for i in train], residual[train]
            if task.descriptor == "embedding" and _key(task.backbone, task.system, "raw", NONE, NONE, size,
                                                       seed) not in task.done:
                try:
                    raw = task.energy_backbone[test] + offset_prediction(
                        [task.numbers[i] for i in train], y_train, [task.numbers[i] for i in test], **offset_options)
                except ValueError as exc:
                    rows.append(dict(backbone=task.backbone, system=task.system, model="raw", descriptor=NONE,
                                     aggregation=NONE, train_size=size, seed=seed, metric="fit_error",
                                     value=np.nan, note=str(exc)[:300]))
                else:
                    r, p = _score(task, "raw", NONE, NONE, size, seed, test, raw, None)
                    rows += r
                    preds += p
            for aggregation in task.aggregations:
                if _key(task.backbone, task.system, "delta", task.descriptor, aggregation, size, seed) in task.done:
                    continue
                base = dict(backbone=task.backbone, system=task.system, model="delta", descriptor=task.descriptor,
                            aggregation=aggregation, train_size=size, seed=seed)
                model = DeltaGPR(aggregation, random_state=seed, **task.gpr)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model.fit(X_train, y_train)
                        mean, std = model.predict(X_test, return_std=True)
                except (DeltaModelError, ValueError, np.linalg.LinAlgError) as exc:
                    rows.append({**base, "metric": "fit_error", "value": np.nan, "note": str(exc)[:300]})
                    continue
                r, p = _score(task, "delta", task.descriptor, aggregation, size, seed, test,
                              task.energy_backbone[test] + mean, std)
                # the evidence of the fit, from training data only: lets a report choose an aggregation
                # without looking at the test set
                r.append({**base, "metric": LML, "value": float(model.log_marginal_likelihood_value_), "note": ""})
                rows += r
                preds += p
    return rows, preds


def tidy(results: pd.DataFrame) -> pd.DataFrame:
    """Column types of a results table (values float, sizes and seeds int, notes str)."""
    results = results.copy()
    results["value"] = pd.to_numeric(results["value"], errors="coerce").astype(float)
    results["train_size"] = results["train_size"].astype(int)
    results["seed"] = results["seed"].astype(int)
    results["note"] = results["note"].fillna("").astype(str)
    return results.reset_index(drop=True)


def finished_cells(results: pd.DataFrame) -> frozenset[tuple]:
    if results.empty:
        return frozenset()
    return frozenset(_key(*r) for r in results[KEY_COLUMNS].drop_duplicates().itertuples(index=False))


def _read_existing(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    results_path, preds_path = out / RESULTS_FILE, out / PREDICTIONS_FILE
    if not results_path.exists():
        return pd.DataFrame(columns=RESULT_COLUMNS), pd.DataFrame()
    try:
        results = pd.read_csv(results_path, keep_default_na=False, na_values=[""])
        preds = pd.read_csv(preds_path) if preds_path.exists() else pd.DataFrame()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{results_path}: cannot resume from a corrupt results file ({exc})") from exc
    missing = set(RESULT_COLUMNS) - set(results.columns)
    if missing:
        raise ValueError(f"{results_path}: not a sweep results table (missing columns {sorted(missing)})")
    return tidy(results), preds


def _write(out: Path, results: pd.DataFrame, preds: pd.DataFrame) -> None:
    write_text_atomic(out / RESULTS_FILE, results.to_csv(index=False))
    write_text_atomic(out / PREDICTIONS_FILE, preds.to_csv(index=False))


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
                     "root": str(root) if root is not None else "shipped"}
                 for m in members},
        "backbones": {name: {"card": str(get_card(name).path.name), "metadata": view.metadata}
                      for name, view in views.items()},
        "delta_params": delta_params(config.gpr),
        "results_schema": RESULTS_SCHEMA,
    }


def delta_params(gpr: dict[str, Any]) -> dict[str, Any]:
    """Every DeltaGPR hyperparameter a sweep uses (defaults included), JSON-ready."""
    from ..delta import DeltaGPR

    params = DeltaGPR(**gpr).get_params()
    return json.loads(json.dumps(params, default=str))


def stale_reason(out: Path, systems: dict[str, SystemData], gpr: dict[str, Any]) -> str | None:
    """Why the results in ``out`` belong to other data or other Δ-model settings (None when they do not)."""
    meta_path = out / METADATA_FILE
    if not (out / RESULTS_FILE).exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return f"unreadable {meta_path.name}"
    stored = meta.get("data", {})
    now = {m: sha for s in systems.values() for m, sha in s.file_sha256.items()}
    count = {m: s.system_of.count(m) for s in systems.values() for m in s.members}
    reasons = []
    for m in sorted(set(now) | set(stored)):
        if m not in now:
            reasons.append(f"{m} no longer used")
        elif m not in stored:
            reasons.append(f"{m} added ({count[m]} structures)")
        elif stored[m].get("sha256") != now[m]:
            reasons.append(f"{m} changed ({stored[m].get('structures')} → {count[m]} structures)")
    if meta.get("delta_params") != delta_params(gpr):
        reasons.append("Δ-GPR settings changed")
    if meta.get("results_schema", 1) != RESULTS_SCHEMA:
        reasons.append(f"results of an older uipbench (schema {meta.get('results_schema', 1)}, now {RESULTS_SCHEMA})")
    return ", ".join(reasons) or None


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
          command: list[str] | None = None, datasets_root: Path | None = None) -> pd.DataFrame:
    """Run (or resume) a sweep and return its tidy results table.

    ``backbones``: default every backbone whose weights are present; ``systems``: default
    every system under ``datasets_root`` (the shipped folder if None) alone plus ``all``
    pooled.  ``out``: folder for results.csv, predictions.csv and metadata.json (resumable);
    ``None`` keeps results in memory.
    ``executor``: any ``concurrent.futures.Executor`` (Dask, submitit, ...); default
    ``workers`` local processes.
    """
    from ..adapters.card import get_card
    from ..adapters.registry import available_backbones
    from ..datasets.io import available_systems

    backbones = list(backbones) if backbones else available_backbones()
    if not backbones:
        raise ValueError("no backbone with weights present; see `uipbench backbones`")
    for name in backbones:
        get_card(name)  # unknown names fail before any work
    explicit_systems = bool(systems)
    systems = list(systems) if systems else [*available_systems(datasets_root), POOLED]
    config = SweepConfig(tuple(backbones), tuple(systems), tuple(aggregations),
                         tuple(sizes) if sizes else DEFAULT_SIZES, tuple(seeds), tuple(descriptors), test_fraction,
                         {**DEFAULT_GPR, **(gpr or {})}, explicit_sizes=sizes is not None)
    data = load_systems(systems, datasets_root, skip_small=None if explicit_systems else MIN_STRUCTURES)
    if not data:
        raise ValueError(f"no system has the {MIN_STRUCTURES} labelled structures a sweep needs")
    splits = {name: {seed: d.split(seed, test_fraction) for seed in config.seeds} for name, d in data.items()}
    sizes_of = {name: resolve_sizes(config.sizes, len(splits[name][config.seeds[0]][0]), config.explicit_sizes, name)
                for name in data}
    for name, s in sizes_of.items():
        if not s:
            raise ValueError(f"system {name}: no requested training size fits its "
                             f"{len(splits[name][config.seeds[0]][0])} training structures")

    out_path = Path(out) if out else None
    if out_path:
        reason = stale_reason(out_path, data, config.gpr)
        if reason:  # cells computed on other data or settings are not results of these: start over
            warnings.warn(f"{out_path}: results were computed on other data or settings ({reason}); recomputing",
                          stacklevel=2)
            for name in (RESULTS_FILE, PREDICTIONS_FILE):
                (out_path / name).unlink(missing_ok=True)
    results, preds = _read_existing(out_path) if out_path else (pd.DataFrame(columns=RESULT_COLUMNS), pd.DataFrame())
    done = finished_cells(results)

    views = {name: embed_systems(name, data, cache) for name in backbones}
    soap: dict[str, list[np.ndarray]] = {}
    if "soap" in config.descriptors:
        from .descriptors import soap_features

        species = sorted({s for d in data.values() for a in d.structures for s in a.get_chemical_symbols()})
        soap = {name: soap_features(d.structures, species) for name, d in data.items()}

    tasks = []
    for backbone in backbones:
        view = views[backbone]
        for descriptor in config.descriptors:
            for name, d in data.items():
                keys = [structure_hash(a) for a in d.structures]
                tasks.append(Task(
                    backbone, descriptor, name, d.system_of, d.ids, d.energy, d.forces, d.n_atoms, d.groups,
                    d.n_ss_pairs, np.array([view.energy[k] for k in keys]), [view.forces[k] for k in keys],
                    [view.embedding[k] for k in keys] if descriptor == "embedding" else soap[name],
                    [a.numbers.astype(np.int64) for a in d.structures], splits[name], sizes_of[name],
                    config.aggregations, config.gpr, done))
    tasks = [t for t in tasks if not _task_done(t)]
    if out_path:
        out_path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_path / METADATA_FILE, _metadata(config, data, views, command, datasets_root))

    own = executor is None
    executor = executor or ProcessPoolExecutor(max_workers=max(1, workers))
    try:
        futures = [executor.submit(run_task, t) for t in tasks]
        bar = tqdm(total=len(futures), desc="sweep", unit="task", disable=not progress, file=sys.stderr)
        for future in as_completed(futures):
            rows, p = future.result()
            results = pd.concat([results, pd.DataFrame(rows, columns=RESULT_COLUMNS)], ignore_index=True)
            preds = pd.concat([preds, pd.DataFrame(p)], ignore_index=True)
            if out_path:
                _write(out_path, results, preds)
            bar.update(1)
        bar.close()
    finally:
        if own:
            executor.shutdown()
    return tidy(results)


def _task_done(task: Task) -> bool:
    for seed in task.splits:
        for size in task.sizes:
            if task.descriptor == "embedding" and _key(task.backbone, task.system, "raw", NONE, NONE, size,
                                                       seed) not in task.done:
                return False
            for aggregation in task.aggregations:
                if _key(task.backbone, task.system, "delta", task.descriptor, aggregation, size, seed) not in task.done:
                    return False
    return True
