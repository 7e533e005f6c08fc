"""One round of active Δ-learning (:mod:`.active`): fit or read back the Δ-model, search, pick, label, record.

Everything a round computes is kept as soon as it is done (the Δ-model's files, the search's
evaluations, each label in ``labelled.extxyz``, each failure in ``failures.json``), and a round done
again after a kill skips what is kept: the Δ-model is read back, the search resumes, the picks are
made against what *earlier* rounds labelled, so they are the same picks, and those labelled already
are not labelled again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from ase import Atoms

from .._atomic import write_atomic
from ..datasets.protocol import ReferenceProtocol
from .active_rules import is_lowest, lowest_dft, pick_minima, round_seed
from .active_store import ActiveFolder, ActiveState
from .minima import Minimum
from .problem import SearchProblem
from .run import search_to_folder
from .store import delta_sha256

Labeller = Callable[[Any], Any]  # LabelTask -> LabelRecord (uipbench.datasets.label)


@dataclass
class RoundContext:
    """The inputs of one run, shared by its rounds."""

    problem: SearchProblem
    backbone: Any
    base: list[Atoms]
    settings: Any  # ActiveSettings
    folder: ActiveFolder
    labeller: Labeller
    protocol: ReferenceProtocol
    cache: Any
    start_delta: Any
    label_settings: Any
    n_slab: int
    progress: bool
    figures: bool

    @property
    def meta(self) -> Any:
        return self.backbone.metadata()


def _round_delta(run: RoundContext, r: int, training: list[Atoms]) -> Any:
    """Round ``r``'s Δ-model: read back when saved, else fitted (or the starting model), saved, read back."""
    from ..delta.io import DeltaFileError, load, save
    from ..harness.fit import fit_delta

    meta = run.meta
    path = run.folder.round_dir(r) / "delta"
    try:
        return load(path, expect_backbone=meta.backbone, expect_sha256=meta.weights_sha256)
    except (FileNotFoundError, DeltaFileError):
        pass  # not saved yet, or torn by a kill: fit again (deterministic)
    if r == 0 and run.start_delta is not None:
        delta = run.start_delta
    else:
        delta = fit_delta(run.backbone, training, aggregation=run.settings.aggregation, sparse=run.settings.sparse,
                          random_state=run.settings.fit_seed, cache=run.cache)
    save(delta, path, meta.backbone, meta.weights_sha256)
    return load(path, expect_backbone=meta.backbone, expect_sha256=meta.weights_sha256)


def _search(run: RoundContext, r: int, delta: Any) -> Any:
    settings = replace(run.settings.search, seed=round_seed(run.settings.search.seed, r))
    return search_to_folder(run.problem, run.backbone, delta, budget=run.settings.budget, settings=settings,
                            out=run.folder.round_dir(r) / "search", progress=run.progress, figures=run.figures)


def _provenance(run: RoundContext, r: int, minimum: Minimum, key: str, pick: str, plan_id: str, delta_hash: str,
                seed: int) -> dict[str, Any]:
    meta = run.meta
    info = {"problem": run.problem.name, "round": r, "backbone": meta.backbone,
            "weights_sha256": meta.weights_sha256, "search_seed": seed, "evaluation": minimum.evaluation,
            "predicted_energy": minimum.energy, "structure_hash": key, "protocol": run.protocol.name,
            "plan_id": plan_id, "pick": pick, "delta_sha256": delta_hash}
    if minimum.energy_std is not None:
        info["predicted_energy_std"] = minimum.energy_std
    return info


def _label_one(run: RoundContext, state: ActiveState, r: int, minimum: Minimum, key: str, pick: str, delta_hash: str,
               seed: int) -> None:
    """Label one minimum; a success is appended to labelled.extxyz, a failure to failures.json."""
    from ..datasets.label import LabelSettings, LabelTask, labelled_structure

    plan_id = f"{run.problem.name}-r{r:02d}-{key}"
    atoms = minimum.atoms.copy()
    atoms.calc = None
    task = LabelTask(plan_id, atoms, run.protocol, run.folder.scratch, run.label_settings or LabelSettings())
    record = run.labeller(task)
    if not record.ok:
        run.folder.add_failure(state, {"round": r, "plan_id": plan_id, "structure_hash": key,
                                       "evaluation": minimum.evaluation, "error": record.error})
        return
    out = labelled_structure(record.atoms, record.result(), run.protocol, record.cores)
    label_keys = {k: out.info[k] for k in ("gpaw_version", "kpts", "label_seconds", "label_cores") if k in out.info}
    out.info = {**_provenance(run, r, minimum, key, pick, plan_id, delta_hash, seed), **label_keys}
    state.labelled = run.folder.append_labelled(out)


def _label(run: RoundContext, state: ActiveState, r: int, minima: list[Minimum], delta_hash: str, seed: int) -> None:
    """Steps (c)-(e): pick against what earlier rounds labelled or failed; skip what this round already did."""
    from ..datasets.io import structure_hash

    hashes = [structure_hash(m.atoms) for m in minima]
    known = {structure_hash(a) for a in run.base} | {str(a.info["structure_hash"]) for a in state.labelled_before(r)}
    known |= {f["structure_hash"] for f in state.failures if f["round"] < r}
    picks = pick_minima(minima, hashes, known, run.settings.label_per_round, run.settings.label_uncertain)
    done = {str(a.info["structure_hash"]) for a in state.labelled if int(a.info["round"]) == r}
    done |= {f["structure_hash"] for f in state.failures if f["round"] == r}
    for index, pick in picks:
        if hashes[index] not in done:
            _label_one(run, state, r, minima[index], hashes[index], pick, delta_hash, seed)


def _record(run: RoundContext, state: ActiveState, r: int, delta_hash: str, summary: Any, training: int,
            seconds: float) -> dict[str, Any]:
    from ..datasets.io import structure_hash

    best = summary.best
    by_hash = state.labelled_by_hash()
    best_key = structure_hash(best.atoms)
    best_dft = float(by_hash[best_key].get_potential_energy()) if best_key in by_hash else None
    lowest = lowest_dft(state.labelled)
    mine = [a for a in state.labelled if int(a.info["round"]) == r]
    return {
        "round": r, "search_seed": round_seed(run.settings.search.seed, r), "delta_sha256": delta_hash,
        "training_structures": training, "evaluations": len(summary.evaluations),
        "distinct_minima": len(summary.minima),
        "best": {"structure_hash": best_key, "evaluation": best.evaluation, "predicted_energy": best.energy,
                 "predicted_energy_std": best.energy_std, "dft_energy": best_dft},
        "labelled": [{"id": a.info["plan_id"], "structure_hash": a.info["structure_hash"], "pick": a.info["pick"],
                      "evaluation": int(a.info["evaluation"]), "predicted_energy": float(a.info["predicted_energy"]),
                      "dft_energy": float(a.get_potential_energy())} for a in mine],
        "failed": [f["plan_id"] for f in state.failures if f["round"] == r],
        "lowest_dft_so_far": lowest, "best_is_lowest": is_lowest(best_dft, lowest), "stop_reason": None,
        "timing": {"seconds": seconds},
    }


def run_round(run: RoundContext, state: ActiveState, r: int) -> tuple[dict[str, Any], list[Minimum]]:
    start = time.perf_counter()
    training = run.base + state.labelled_before(r)
    delta = _round_delta(run, r, training)
    delta_hash = delta_sha256(delta)
    summary = _search(run, r, delta)
    _label(run, state, r, summary.minima, delta_hash, round_seed(run.settings.search.seed, r))
    record = _record(run, state, r, delta_hash, summary, len(training), time.perf_counter() - start)
    return record, summary.minima


def copy_minima(run: RoundContext, r: int) -> None:
    source = run.folder.round_dir(r) / "search"
    for name in ("minima.extxyz", "minima.csv"):
        data = (source / name).read_bytes()
        write_atomic(run.folder.path / name, lambda fh, data=data: fh.write(data), mode="wb")


def final_minima(run: RoundContext, state: ActiveState) -> list[Minimum]:
    """The last finished round's minima, when this call ran no round: its search resumed (nothing relaxed)."""
    r = int(state.rounds[-1]["round"])
    return _search(run, r, _round_delta(run, r, run.base + state.labelled_before(r))).minima
