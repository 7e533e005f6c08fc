"""The search benchmark (issue #12, item 5): does the Δ-correction change which overlayer wins?

Raw, Δ-corrected and active-learning searches of each problem with each backbone from several
seeds, their predicted minima scored against DFT single points (``uipbench search-benchmark``):

* :mod:`.plan` – the runs (one per problem, backbone, method, seed), their commands, input checks;
* :mod:`.run` – the Δ-fits and the runs as ``uipbench`` subprocesses, ``jobs`` at a time, resumable;
* :mod:`.collect` – a finished run's folder read back (candidates, cost);
* :mod:`.labelling` – DFT single points of the candidates, pooled with active learning's own labels;
* :mod:`.score` – success, DFT rank, S–S bonds, gap error, cost to success; the metric table;
* :mod:`.figures`, :mod:`.report` – success rate against CPU time, pictures, Markdown + HTML;
* :mod:`.driver` – :func:`run_benchmark`, all of it in one resumable call.
"""
from importlib import import_module
from typing import Any

#: public name -> module that defines it; imported on first use, so the command's parser stays light
_EXPORTS = {
    "METHODS": "plan", "BenchmarkInputError": "plan", "BenchmarkPlan": "plan", "BenchmarkSettings": "plan",
    "RunSpec": "plan", "make_plan": "plan",
    "CliRunner": "run",
    "Candidate": "collect", "RunResult": "collect", "read_run": "collect", "run_finished": "collect",
    "DftPoint": "labelling", "read_labelled": "labelling",
    "METRICS": "score", "SUCCESS_THRESHOLD_EV": "score", "CellScore": "score", "RunScore": "score",
    "aggregate": "score", "problem_reference": "score", "score_run": "score",
    "BenchmarkResult": "driver", "run_benchmark": "driver",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
