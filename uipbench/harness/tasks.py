"""One sweep task: every (aggregation, training size, seed) cell of one (backbone, descriptor, system).

A :class:`Task` holds plain arrays and the metrics to score, so it pickles to any executor's
workers; :func:`run_task` is pure (no files, no globals) and returns the rows it scored.
"""
from __future__ import annotations

import re
import threading
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from . import metrics as M
from .results import NONE, SPLIT, VALIDATION, cell_key

#: the one seed of a validation cell (its training set is all the data; the seed only drives the GPR's RNG)
VALIDATION_SEED = 0


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
    done: frozenset[tuple] = frozenset()
    metrics: tuple[M.Metric, ...] = field(default_factory=M.metrics)
    #: (every training index, the validation indices) into the arrays; None: no validation set
    validation: tuple[list[int], list[int]] | None = None

    def raw_key(self, size: int, seed: int, evaluation: str = SPLIT) -> tuple[str, ...]:
        return cell_key(self.backbone, self.system, "raw", NONE, NONE, size, seed, evaluation)

    def delta_key(self, aggregation: str, size: int, seed: int, evaluation: str = SPLIT) -> tuple[str, ...]:
        return cell_key(self.backbone, self.system, "delta", self.descriptor, aggregation, size, seed, evaluation)

    def evaluations(self) -> list[tuple[str, int, list[int], list[int]]]:
        """(evaluation, seed, training order, scored indices) of every split, then of the validation set."""
        out = [(SPLIT, seed, train, test) for seed, (train, test) in self.splits.items()]
        if self.validation is not None:
            out.append((VALIDATION, VALIDATION_SEED, *self.validation))
        return out

    def sizes_for(self, evaluation: str, train: list[int]) -> list[int]:
        """The training sizes of an evaluation: the sweep's sizes on a split, all of them on the validation set."""
        return self.sizes if evaluation == SPLIT else [len(train)]

    def has_forces(self, test: list[int]) -> bool:
        return all(self.forces_backbone[i] is not None for i in test)

    def cells(self) -> dict[tuple[str, ...], frozenset[str]]:
        """Key of every cell of this task, with the metrics its rows hold when it is fitted."""
        names = {m.name: m for m in self.metrics}

        def expected(model: str, forces: bool) -> frozenset[str]:
            return frozenset(n for n, m in names.items() if m.applies(model, forces))

        out = {}
        for evaluation, seed, train, test in self.evaluations():
            for size in self.sizes_for(evaluation, train):
                if self.descriptor == "embedding":
                    out[self.raw_key(size, seed, evaluation)] = expected("raw", self.has_forces(test))
                for aggregation in self.aggregations:
                    out[self.delta_key(aggregation, size, seed, evaluation)] = expected("delta", False)
        return out

    def finished(self) -> bool:
        return all(key in self.done for key in self.cells())


@dataclass
class TaskResult:
    """Rows a task scored: results rows, prediction rows, and the warnings its fits raised."""

    rows: list[dict] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # "Category: message", one per warning raised

    def summary(self) -> list[str]:
        """Each distinct warning once, with how often it was raised."""
        return [f"{text} (×{n})" if n > 1 else text for text, n in Counter(self.warnings).items()]


def _note(exc: BaseException) -> str:
    """The reason of a failed fit as one line (a results row never spans lines)."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(exc))[:300]


def _base(task: Task, model: str, descriptor: str, aggregation: str, size: int, seed: int,
          evaluation: str = SPLIT) -> dict:
    return dict(backbone=task.backbone, system=task.system, model=model, descriptor=descriptor,
                aggregation=aggregation, train_size=size, seed=seed, evaluation=evaluation)


def _score(task: Task, base: dict, test: list[int], predicted: np.ndarray, std: np.ndarray | None,
           lml: float | None, out: TaskResult) -> None:
    forces = base["model"] == "raw" and task.has_forces(test)
    split = M.ScoredSplit(
        base["model"], predicted, task.energy_ref[test], task.n_atoms[test], [task.groups[i] for i in test],
        [task.forces_backbone[i] for i in test] if forces else None,
        [task.forces_ref[i] for i in test] if forces else None, lml)
    values = M.score_split(split, task.metrics)
    out.rows += [{**base, "metric": k, "value": v, "note": ""} for k, v in values.items()]
    out.predictions += [
        {**base, "structure": task.ids[i], "member_system": task.member_of[i], "n_atoms": int(task.n_atoms[i]),
         "n_ss_pairs": int(task.n_ss_pairs[i]), "energy_ref": float(task.energy_ref[i]),
         "energy_pred": float(p), "std": float(s) if std is not None else np.nan}
        for i, p, s in zip(test, predicted, std if std is not None else [None] * len(test))]


@contextmanager
def _recorded_warnings() -> Iterator[list | None]:
    """Record the warnings of a fit for the driver to report, where that is safe: warning filters are
    process-wide, so in a thread other than the main one (a thread pool, a threaded Dask worker) they
    are left alone and warnings show the usual way. Either way they are seen, never hidden."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _fit_error(base: dict, exc: BaseException, out: TaskResult) -> None:
    out.rows.append({**base, "metric": M.FIT_ERROR, "value": np.nan, "note": _note(exc)})


def _raw_cell(task: Task, size: int, seed: int, train: list[int], test: list[int], out: TaskResult,
              evaluation: str = SPLIT) -> None:
    """The raw backbone after the per-species offset fitted on the same training structures."""
    from ..delta.offset import offset_prediction

    residual = task.energy_ref[train] - task.energy_backbone[train]
    options = {k: task.gpr[k] for k in ("offset", "prior_mean") if k in task.gpr}
    base = _base(task, "raw", NONE, NONE, size, seed, evaluation)
    try:
        raw = task.energy_backbone[test] + offset_prediction(
            [task.numbers[i] for i in train], residual, [task.numbers[i] for i in test], **options)
    except ValueError as exc:
        _fit_error(base, exc, out)
        return
    _score(task, base, test, raw, None, None, out)


def _delta_cell(task: Task, aggregation: str, size: int, seed: int, train: list[int], test: list[int],
                out: TaskResult, evaluation: str = SPLIT) -> None:
    """A Δ-GPR on the task's descriptor; the warnings of the fit are recorded, not hidden."""
    from ..delta import DeltaGPR, DeltaModelError

    X = list(zip(task.features, task.numbers))
    base = _base(task, "delta", task.descriptor, aggregation, size, seed, evaluation)
    model = DeltaGPR(aggregation, random_state=seed, **task.gpr)
    with _recorded_warnings() as caught:
        try:
            model.fit([X[i] for i in train], task.energy_ref[train] - task.energy_backbone[train])
            mean, std = model.predict([X[i] for i in test], return_std=True)
        except (DeltaModelError, ValueError, np.linalg.LinAlgError) as exc:
            _fit_error(base, exc, out)
            mean = None
    out.warnings += [f"{w.category.__name__}: {w.message}" for w in caught or ()]
    if mean is not None:
        _score(task, base, test, task.energy_backbone[test] + mean, std,
               float(model.log_marginal_likelihood_value_), out)


def run_task(task: Task) -> TaskResult:
    """Fit and score every (aggregation, size, seed) cell of one task that is not done yet.

    An embedding task also scores the raw backbone (after the per-species offset fitted on the
    same training structures), once per (size, seed).  The validation cells (where the task has a
    validation set) train on every training structure and score on the validation structures.
    """
    out = TaskResult()
    for evaluation, seed, train_order, test in task.evaluations():
        for size in task.sizes_for(evaluation, train_order):
            train = train_order[:size]
            if task.descriptor == "embedding" and task.raw_key(size, seed, evaluation) not in task.done:
                _raw_cell(task, size, seed, train, test, out, evaluation)
            for aggregation in task.aggregations:
                if task.delta_key(aggregation, size, seed, evaluation) not in task.done:
                    _delta_cell(task, aggregation, size, seed, train, test, out, evaluation)
    return out
