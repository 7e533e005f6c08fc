"""What a finished run left in its folder, read back: whether it is finished, its top minima (the
candidates to label), its cost.

A search folder (``raw``, ``delta``; :mod:`uipbench.search.store`):

* ``search.json`` – ``status``, ``budget``, the settings in ``identity``, ``evaluations`` and
  ``timing.cpu_seconds_per_relaxation.total``;
* ``minima.extxyz`` – the distinct minima, lowest predicted energy first, each with ``rank``,
  ``predicted_energy``, ``first_evaluation`` (the first evaluation that found it; folders written before
  it existed lack it, then ``evaluation``, that of its lowest structure, stands in) and ``adsorbate_bonds``;
* ``evaluations/NNNNNN.json`` – each relaxation's CPU seconds: the CPU time up to an evaluation is summed
  from them when every one is there, else estimated as the total times the fraction of evaluations.

An active-learning folder (``al``; :mod:`uipbench.search.active_store`): ``active.json`` (``status``,
``stopped_because``, the settings in ``identity``, one record per round), ``round-RR/search/`` (each
round's search folder, as above), ``minima.extxyz`` (the final round's minima) and ``labelled.extxyz``
(every structure it labelled with DFT, ``label_seconds`` and ``label_cores`` in its info).

Structures are identified by :func:`uipbench.datasets.io.structure_hash` of the geometry as read back.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase import Atoms

from ...datasets.io import read_structures, structure_hash
from .plan import BenchmarkSettings, RunSpec


@dataclass(frozen=True)
class Candidate:
    """One of a run's lowest minima, at the backbone's geometry."""

    spec: RunSpec
    rank: int  # 1 = the run's predicted minimum
    predicted_energy: float  # eV, the backbone's (+ Δ) energy
    structure_hash: str
    first_evaluation: int
    atoms: Atoms = field(compare=False, repr=False)


@dataclass(frozen=True)
class RunResult:
    """A finished run: its candidates (rank order) and its cost."""

    spec: RunSpec
    candidates: tuple[Candidate, ...]
    evaluations: int
    cpu_seconds: float  # the search's, all relaxations (NaN when search.json does not say)
    cpu_cumulative: tuple[float, ...] | None  # CPU seconds up to and including each evaluation; None: not all kept
    al_labelled: tuple[Atoms, ...] = ()  # active learning: the structures it labelled with DFT
    evaluation_offset: int = 0  # active learning: the relaxations of the rounds before the final one

    def cpu_through(self, evaluation: int) -> float:
        """CPU seconds of the search up to and including ``evaluation`` (0-based)."""
        if self.cpu_cumulative is not None and evaluation < len(self.cpu_cumulative):
            return self.cpu_cumulative[evaluation]
        if not self.evaluations:
            return math.nan
        return self.cpu_seconds * (evaluation + 1) / self.evaluations


def _cumulative_cpu(folder: Path, count: int) -> tuple[float, ...] | None:
    paths = sorted((folder / "evaluations").glob("*.json"))
    if count < 1 or len(paths) != count:
        return None
    total, out = 0.0, []
    for path in paths:
        try:
            total += float(json.loads(path.read_text(encoding="utf-8"))["cpu_seconds"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        out.append(total)
    return tuple(out)


def _candidate(spec: RunSpec, atoms: Atoms, where: str) -> Candidate:
    info = atoms.info
    try:
        rank, energy = int(info["rank"]), float(info["predicted_energy"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: a minimum without rank or predicted_energy in its info") from None
    first = int(info.get("first_evaluation", info.get("evaluation", 0)))
    return Candidate(spec, rank, energy, structure_hash(atoms), first, atoms)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _finished_search(folder: Path, budget: int, algorithm: str) -> bool:
    summary = _read_json(folder / "search.json")
    if not isinstance(summary, dict):
        return False
    settings = (summary.get("identity") or {}).get("settings") or {}
    return summary.get("status") == "finished" and summary.get("budget") == budget and \
        settings.get("algorithm") == algorithm


def _finished_active(folder: Path, settings: BenchmarkSettings) -> bool:
    state = _read_json(folder / "active.json")
    if not isinstance(state, dict) or state.get("status") != "finished":
        return False
    active = (state.get("identity") or {}).get("settings") or {}
    enough = state.get("stopped_because") == "converged" or len(state.get("rounds") or []) >= (settings.rounds or 0)
    return (enough and active.get("budget") == settings.budget and active.get("label_per_round") ==
            settings.label_per_round and (active.get("search") or {}).get("algorithm") == settings.algorithm)


def recorded_delta_sha256(spec: RunSpec, out: Path) -> str | None:
    """The ``delta_sha256`` of the Δ-model the search in the run's folder was started with (None: no
    search there, or one without a Δ-model)."""
    summary = _read_json(spec.folder(out) / "search.json")
    return (summary.get("identity") or {}).get("delta_sha256") if isinstance(summary, dict) else None


def model_clash(spec: RunSpec, out: Path, model_sha256: str | None) -> str | None:
    """Why a ``delta`` run's folder cannot be used with the Δ-model ``model_sha256`` (its hash,
    :func:`uipbench.search.store.delta_sha256`): its search, finished or not, was started with another
    (a refitted) model; None when it can (another method, no search yet, or the same model)."""
    if spec.method != "delta" or not (spec.folder(out) / "search.json").is_file():
        return None
    recorded = recorded_delta_sha256(spec, out)
    if recorded == model_sha256:
        return None
    return (f"its folder {spec.folder(out)} holds a search with another Δ-model (delta_sha256 {str(recorded)[:12]}… "
            f"in its search.json, {str(model_sha256)[:12]}… of the model in {Path(out) / 'models'} now): two models' "
            f"runs would be mixed, so it is neither used nor run again; move the folder aside to run it with this "
            f"model, or choose another --out")


def run_finished(spec: RunSpec, out: Path, settings: BenchmarkSettings, model_sha256: str | None = None) -> bool:
    """The run's folder holds a finished run of these settings (budget, algorithm; active learning: as many
    rounds, or converged earlier, and the same labels per round) and its minima; a ``delta`` run, one
    with the Δ-model whose hash is ``model_sha256`` (None: no model, so never finished)."""
    folder = spec.folder(out)
    if not (folder / "minima.extxyz").is_file():
        return False
    if spec.method == "al":
        return _finished_active(folder, settings)
    if spec.method == "delta" and (model_sha256 is None or recorded_delta_sha256(spec, out) != model_sha256):
        return False
    return _finished_search(folder, settings.budget, settings.algorithm)


def _candidates(spec: RunSpec, folder: Path, label_top: int) -> tuple[Candidate, ...]:
    path = folder / "minima.extxyz"
    found = sorted((_candidate(spec, a, str(path)) for a in read_structures(path)), key=lambda c: c.rank)
    return tuple(found[:label_top])


def _search_cost(summary: dict) -> tuple[int, float]:
    cpu = (summary.get("timing") or {}).get("cpu_seconds_per_relaxation") or {}
    return int(summary.get("evaluations", summary.get("budget", 0))), float(cpu.get("total", math.nan))


def _read_active(spec: RunSpec, folder: Path, label_top: int) -> RunResult:
    state = json.loads((folder / "active.json").read_text(encoding="utf-8"))
    costs = [_search_cost(json.loads((folder / f"round-{int(r['round']):02d}" / "search" / "search.json")
                                     .read_text(encoding="utf-8"))) for r in state["rounds"]]
    labelled = folder / "labelled.extxyz"
    return RunResult(spec, _candidates(spec, folder, label_top), sum(n for n, _ in costs),
                     sum(cpu for _, cpu in costs), None, tuple(read_structures(labelled)) if labelled.is_file() else (),
                     sum(n for n, _ in costs[:-1]))


def read_run(spec: RunSpec, out: Path, label_top: int) -> RunResult:
    """The finished run of ``spec`` under ``out``: its ``label_top`` lowest minima and its cost."""
    folder = spec.folder(out)
    if spec.method == "al":
        return _read_active(spec, folder, label_top)
    evaluations, cpu = _search_cost(json.loads((folder / "search.json").read_text(encoding="utf-8")))
    return RunResult(spec, _candidates(spec, folder, label_top), evaluations, cpu, _cumulative_cpu(folder, evaluations))
