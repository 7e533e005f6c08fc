"""Structure search with a backbone, raw or Δ-corrected: problems, candidates, relaxation, minima.

* :mod:`.problem` – search-problem cards (``problems/*.toml``) and :class:`SearchProblem`;
* :mod:`.candidates` – constrained random starts (ase-ga) and basin-hopping moves;
* :mod:`.relax` – one local relaxation with any ASE calculator;
* :mod:`.engine` – :func:`search`, a pure function of (problem, backbone, Δ-model, settings, budget);
* :mod:`.minima` – the similarity rule and the distinct minima;
* :mod:`.store`, :mod:`.output`, :mod:`.run` – the resumable output folder of ``uipbench search``;
* :mod:`.command` – the command line.
"""
from .checks import SearchInputError, check_inputs
from .engine import ALGORITHMS, Evaluation, SearchSettings, search
from .minima import E_TOL, F_TOL, Minimum, distinct_minima, fingerprint, fingerprint_distance
from .problem import ProblemError, SearchProblem, all_problems, load_problem
from .relax import RelaxSettings, relax
from .run import SearchSummary, search_to_folder
from .store import SearchFolderError

__all__ = ["ALGORITHMS", "E_TOL", "F_TOL", "Evaluation", "Minimum", "ProblemError", "RelaxSettings",
           "SearchFolderError", "SearchInputError", "SearchProblem", "SearchSettings", "SearchSummary",
           "all_problems", "check_inputs", "distinct_minima", "fingerprint", "fingerprint_distance",
           "load_problem", "relax", "search", "search_to_folder"]
