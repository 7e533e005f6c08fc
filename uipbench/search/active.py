"""Active Δ-learning: search with the backbone + Δ, label the best minima with DFT, refit, search again.

Round ``r`` of :func:`active_learning`:

(a) fit the Δ-model on the base structures plus every structure DFT-labelled in earlier rounds (round 0:
    the base structures alone, or a given starting model) and save it as ``OUT/round-RR/delta``;
(b) search with it into ``OUT/round-RR/search`` (:func:`~.run.search_to_folder`; seed
    :func:`~.active_rules.round_seed` of (seed, r));
(c) pick the ``K`` lowest distinct minima not labelled yet (by structure hash), plus the ``M`` most
    uncertain (largest σ) of the others;
(d) label them with the *labeller*, a function with the signature of
    :func:`uipbench.datasets.label.label_structure` (a :class:`LabelTask` in, a :class:`LabelRecord` out;
    by default GPAW under the reference protocol, scratch ``OUT/.labelling``); a failed record is
    recorded in ``OUT/failures.json`` and skipped;
(e) append each labelled structure to ``OUT/labelled.extxyz`` with its provenance;
(f) stop when the round's predicted global minimum was labelled and, as in the round before, is the
    lowest DFT energy seen and the same minimum (:func:`~.active_rules.converged`), or after ``R`` rounds.

Killed at any point and re-run with the same arguments, a run continues: finished relaxations are read
back from each round's search folder, finished labels from ``labelled.extxyz`` (and GPAW results from the
scratch folder), each round's Δ-model from its files; a larger ``rounds`` continues a run that stopped
at its last one.  An exception raised by the labeller itself (not a failed record) stops the run like a
kill.  Folder layout: :mod:`.active_store`.

Base structures (the command's ``--systems``): by default the shipped data of the problem's own metal
(``cu-s`` for ``cu-s3-3x3``), not all three systems.  Only the Δ near the problem's structures matters
to its search, and the labels of the problem soon dominate there; the other metals' S environments would
triple every round's fit (the fit runs once per round) and spend inducing points away from the problem.
Pass ``--systems cu-s ag-s au-s`` to pool them.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ase import Atoms

from .._lock import OutputLock
from ..datasets.protocol import ReferenceProtocol
from .active_round import Labeller, RoundContext, copy_minima, final_minima, run_round
from .active_rules import stop_reason
from .active_store import ActiveFolder
from .checks import SearchInputError, check_inputs
from .engine import SearchSettings
from .minima import Minimum
from .problem import SearchProblem
from .store import delta_sha256


@dataclass(frozen=True)
class ActiveSettings:
    """What decides an active-learning run besides its inputs; ``rounds`` may grow between runs."""

    rounds: int
    label_per_round: int
    label_uncertain: int = 0
    budget: int = 10  # relaxations per round
    search: SearchSettings = field(default_factory=SearchSettings)  # its seed: the run's seed
    aggregation: str = "atomic"
    sparse: bool = True
    fit_seed: int = 0  # random state of each round's Δ-fit

    def __post_init__(self) -> None:
        from ..harness.defaults import AGGREGATIONS

        for name, low in (("rounds", 1), ("label_per_round", 1), ("label_uncertain", 0), ("budget", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {self.aggregation!r}; choose from {', '.join(AGGREGATIONS)}")
        if self.search.seed < 0:
            raise ValueError(f"the seed must be non-negative, got {self.search.seed}")

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "rounds"}


@dataclass
class ActiveSummary:
    out: Path
    rounds: list[dict[str, Any]]  # the records of active.json
    labelled: list[Atoms]  # every structure labelled, as read back from labelled.extxyz
    minima: list[Minimum]  # the final round's distinct minima
    best_dft_energy: float | None  # DFT energy of the final round's predicted global minimum, if labelled
    stopped_because: str  # "converged" or "rounds"

    @property
    def best(self) -> Minimum:
        return self.minima[0]


def base_sha256(base: Sequence[Atoms]) -> str:
    """Hash of the base structures: their content hashes and DFT energies, in order."""
    import hashlib

    from ..datasets.io import structure_hash

    h = hashlib.sha256()
    for atoms in base:
        h.update(f"{structure_hash(atoms)} {float(atoms.get_potential_energy())!r}\n".encode())
    return h.hexdigest()


def identity(problem: SearchProblem, meta: Any, base: Sequence[Atoms], start_delta: Any,
             protocol: ReferenceProtocol, settings: ActiveSettings) -> dict[str, Any]:
    """What identifies a run: a folder holding a run of another identity is refused."""
    card = {k: v for k, v in problem.to_dict().items() if k != "description"}  # prose may change, the run not
    return {"problem": card, "backbone": meta.backbone, "weights_sha256": meta.weights_sha256,
            "start_delta_sha256": delta_sha256(start_delta),
            "base": {"structures": len(base), "sha256": base_sha256(base)},
            "protocol": protocol.to_dict(), "settings": settings.identity()}


def _check_base(problem: SearchProblem, template: Atoms, base: Sequence[Atoms], protocol: ReferenceProtocol,
                start_delta: Any) -> None:
    """Base structures a run can start from: labelled, one protocol (the labeller's), the problem's elements."""
    from ..harness.fit import check_training_set

    check_training_set(base, "the base structures")
    found = str(base[0].info.get("protocol", "unknown"))
    if found != protocol.name:
        raise SearchInputError(f"the base structures were labelled under protocol {found!r}, the loop labels "
                               f"under {protocol.name!r}; their energies would not share a zero")
    if start_delta is None:
        seen = {s for a in base for s in a.get_chemical_symbols()}
        missing = sorted({*template.get_chemical_symbols(), *problem.adsorbate_symbols} - seen)
        if missing:
            raise SearchInputError(f"{problem.name}: the base structures hold no {', '.join(missing)}; the "
                                   f"round-0 Δ-model could not correct them (choose other --systems)")


def active_learning(problem: SearchProblem, backbone: Any, base: Sequence[Atoms], *, out: str | Path,
                    settings: ActiveSettings, labeller: Labeller | None = None, start_delta: Any = None,
                    protocol: ReferenceProtocol | None = None, label_settings: Any = None, cache: Any = None,
                    progress: bool = False, figures: bool = True,
                    on_round: Callable[[dict[str, Any]], None] | None = None) -> ActiveSummary:
    """Run (or resume) active Δ-learning into ``out`` (module doc); bad input is refused before any work.

    ``labeller``: LabelTask -> LabelRecord (default :func:`uipbench.datasets.label.label_structure`, which
    needs GPAW); ``start_delta``: round 0's Δ-model instead of one fitted on ``base``; ``cache``: the
    embedding cache of the fits; ``on_round`` receives each finished round's record; ``protocol``: the
    labels' reference protocol (default: the problem card's).
    """
    from .problem import PROTOCOLS

    protocol = protocol or PROTOCOLS[problem.protocol]
    base = list(base)
    template = check_inputs(problem, backbone, start_delta)
    _check_base(problem, template, base, protocol, start_delta)
    if labeller is None:
        from ..datasets.label import LabellingError, gpaw_available, label_structure

        ok, why = gpaw_available()
        if not ok:
            raise LabellingError(f"active learning labels with GPAW: {why}")
        labeller = label_structure
    with OutputLock(out, command=" ".join(sys.argv)):
        folder = ActiveFolder(out, identity(problem, backbone.metadata(), base, start_delta, protocol, settings))
        run = RoundContext(problem, backbone, base, settings, folder, labeller, protocol, cache, start_delta,
                           label_settings, len(template), progress, figures)
        state = folder.load()
        minima = None
        reason = stop_reason(state.rounds, state.labelled_by_hash(), run.n_slab, settings.rounds)
        while len(state.rounds) < settings.rounds and reason != "converged":
            folder.write_state(state, "running", None)
            record, minima = run_round(run, state, len(state.rounds))
            state.rounds.append(record)
            reason = stop_reason(state.rounds, state.labelled_by_hash(), run.n_slab, settings.rounds)
            record["stop_reason"] = reason
            folder.write_state(state, "running", None)
            if on_round is not None:
                on_round(record)
        if minima is None:
            minima = final_minima(run, state)
        copy_minima(run, int(state.rounds[-1]["round"]))
        reason = reason or "rounds"
        folder.write_state(state, "finished", reason)
        return ActiveSummary(folder.path, state.rounds, state.labelled, minima,
                             state.rounds[-1]["best"]["dft_energy"], reason)
