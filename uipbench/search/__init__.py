"""Structure search with a backbone, raw or Δ-corrected: problems, candidates, relaxation, minima.

* :mod:`.problem` – search-problem cards (``problems/*.toml``) and :class:`SearchProblem`;
* :mod:`.candidates` – constrained random starts (ase-ga) and basin-hopping moves;
* :mod:`.relax` – one local relaxation with any ASE calculator;
* :mod:`.engine` – :func:`search`, a pure function of (problem, backbone, Δ-model, settings, budget);
* :mod:`.minima` – the similarity rule and the distinct minima;
* :mod:`.store`, :mod:`.output`, :mod:`.run` – the resumable output folder of ``uipbench search``;
* :mod:`.active` – active Δ-learning: rounds of fit Δ, search, DFT labels (:mod:`.active_round`,
  :mod:`.active_rules`, :mod:`.active_store`, :mod:`.active_command`);
* :mod:`.command` – the command line.
"""
from importlib import import_module
from typing import Any

#: public name -> module that defines it; imported on first use, so ``uipbench search --help`` stays light
_EXPORTS = {
    "SearchInputError": "checks", "check_inputs": "checks",
    "ActiveSettings": "active", "ActiveSummary": "active", "active_learning": "active",
    "ALGORITHMS": "engine", "Evaluation": "engine", "SearchSettings": "engine", "search": "engine",
    "E_TOL": "minima", "F_TOL": "minima", "Minimum": "minima", "distinct_minima": "minima",
    "fingerprint": "minima", "fingerprint_distance": "minima",
    "ProblemError": "problem", "SearchProblem": "problem", "all_problems": "problem", "load_problem": "problem",
    "RelaxSettings": "relax",  # the function relax() is uipbench.search.relax.relax (the module owns the name)
    "SearchSummary": "run", "search_to_folder": "run",
    "SearchFolderError": "store",
    "relax_batched": "batched",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
