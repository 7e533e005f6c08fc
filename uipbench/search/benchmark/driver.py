"""The whole benchmark in one resumable call: Δ-fits, runs, DFT of the candidates, scores, report.

``OUT`` holds ``benchmark.json`` (the plan), ``models/`` (Δ-models, the CPU time and training data of their
fits, and their embedding cache ``.cache/``),
``runs/`` (one search folder per run), ``logs/``, ``labelled.extxyz`` (the DFT single points, with
provenance), ``.labelling/`` (GPAW scratch), ``failures.json`` and the report.  One benchmark per
``OUT`` at a time (:class:`OutputLock`); running the same command again redoes only what is missing:
finished runs are not run again, labelled structures are not labelled again, and a structure whose
DFT failed is not retried (delete its entry in ``failures.json`` to retry it).  A resume may add problems,
backbones, methods and seeds; one with other shared settings (budget, algorithm, label_top, rounds,
label_per_round) is refused (:func:`check_resume`): the earlier runs and labels would enter its reference.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._atomic import write_json_atomic
from ..._lock import OutputLock
from .collect import Candidate, RunResult, read_run, run_finished
from .labelling import Labeller, alias_points, label_candidates, pending_tasks, pool_al, read_labelled
from .plan import BenchmarkInputError, BenchmarkPlan, RunSpec, resume_differences
from .run import CliRunner, Log, RunOutcome, Runner, execute_runs, fit_models, model_hashes, read_fit_record
from .score import CellScore, RunScore, aggregate, problem_reference, score_run

FAILURES_FILE = "failures.json"
PLAN_FILE = "benchmark.json"


def _stderr(line: str) -> None:
    print(f"search-benchmark: {line}", file=sys.stderr, flush=True)


class Failures:
    """``OUT/failures.json``: Δ-fits and runs that failed this time, DFT records that ever failed."""

    def __init__(self, out: Path):
        self.path = Path(out) / FAILURES_FILE
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            data = {}
        self.data: dict[str, Any] = {"models": {}, "runs": [], "labels": list(data.get("labels", []))}

    def set_runs(self, models: dict[str, str], outcomes: list[RunOutcome]) -> None:
        self.data["models"] = dict(models)
        self.data["runs"] = [{"run": o.spec.key, "status": o.status, "message": o.message}
                             for o in outcomes if o.status in ("failed", "skipped")]
        self._write()

    def add_label(self, candidate: Candidate, error: str) -> None:
        self.data["labels"].append({"problem": candidate.spec.problem, "structure_hash": candidate.structure_hash,
                                    "run": candidate.spec.key,
                                    "rank": candidate.rank, "error": error})
        self._write()

    def add_run(self, spec: RunSpec, message: str) -> None:
        self.data["runs"].append({"run": spec.key, "status": "failed", "message": message})
        self._write()

    @property
    def label_keys(self) -> set[tuple[str, str]]:
        """(problem, structure hash) of every DFT record that failed."""
        return {(entry.get("problem", entry["run"].split("/")[0]), entry["structure_hash"])
                for entry in self.data["labels"]}

    def lines(self) -> list[str]:
        out = [f"Δ-fit {b}: {m}" for b, m in self.data["models"].items()]
        out += [f"run {r['run']}: {r['status']} ({r['message']})" for r in self.data["runs"]]
        return out + [f"DFT of {r['run']} rank {r['rank']}: {r['error'].splitlines()[0][:160]}"
                      for r in self.data["labels"]]

    def _write(self) -> None:
        write_json_atomic(self.path, self.data)


@dataclass
class BenchmarkResult:
    out: Path
    outcomes: list[RunOutcome]
    scores: list[RunScore]
    cells: list[CellScore]
    labelled: int  # DFT single points computed this time
    report: Path


def _fit_cpu(record: dict[str, Any] | None) -> float:
    try:
        return float(record["cpu_seconds"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return math.nan  # a model put there by hand: its cost is unknown


def check_resume(plan: BenchmarkPlan, out: Path) -> None:
    """Refuse to resume ``out`` when its ``benchmark.json`` holds a plan ``plan`` does not extend
    (:func:`~.plan.resume_differences`), naming the differences."""
    path = Path(out) / PLAN_FILE
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchmarkInputError(f"{path}: unreadable ({exc}); choose another --out") from None
    differences = resume_differences(previous, plan)
    if differences:
        raise BenchmarkInputError(
            f"--out {out} holds another benchmark ({path}): {'; '.join(differences)}. Its runs and DFT labels "
            f"would enter this one's reference and ranks: resume it with the same settings (problems, backbones, "
            f"methods and seeds may only be added), or choose another --out")


def _read_runs(plan: BenchmarkPlan, out: Path, outcomes: list[RunOutcome], failures: Failures) -> dict:
    runs: dict[RunSpec, RunResult] = {}
    for o in outcomes:
        if o.status in ("finished", "resumed"):
            try:
                runs[o.spec] = read_run(o.spec, out, plan.settings.label_top)
            except (OSError, ValueError, KeyError) as exc:
                failures.add_run(o.spec, f"unreadable output: {exc}")
    return runs


def run_benchmark(plan: BenchmarkPlan, out: Path, *, runner: Runner | None = None, labeller: Labeller | None = None,
                  jobs: int = 1, log: Log = _stderr, report_only: bool = False) -> BenchmarkResult:
    """Run (or resume) the benchmark ``plan`` into ``out`` (see the module docstring).

    ``runner``: how a ``uipbench`` command is run (default: a subprocess, :class:`CliRunner`);
    ``labeller``: one DFT single point (default :func:`uipbench.datasets.label.label_structure`, GPAW);
    ``report_only``: start no Δ-fit, search or DFT calculation: score the finished runs with the DFT points
    labelled so far and write the report (runs not finished yet are listed as not run).
    """
    from ..problem import PROTOCOLS, load_problem

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    out = Path(out)
    if labeller is None and not report_only:
        from ...datasets.label import LabellingError, gpaw_available, label_structure

        ok, why = gpaw_available()
        if not ok:
            raise LabellingError(f"the candidates' DFT single points need GPAW: {why}")
        labeller = label_structure
    problems = {name: load_problem(name) for name in plan.problems}
    runner = runner or CliRunner(out / "logs")
    with OutputLock(out, command=" ".join(["uipbench search-benchmark", *sys.argv[2:]])):
        check_resume(plan, out)
        write_json_atomic(out / PLAN_FILE, {"format": "uipbench-search-benchmark", **plan.to_dict()})
        failures = Failures(out)
        if report_only:
            failed_models: dict[str, str] = {}
            hashes = model_hashes(plan, out, failed_models)  # a delta run counts with its model only
            outcomes = [RunOutcome(spec, "resumed")
                        if run_finished(spec, out, plan.settings, hashes.get(spec.backbone) if spec.method == "delta"
                                        else None)
                        else RunOutcome(spec, "skipped", "not run yet (--report-only)") for spec in plan.runs]
        else:
            failed_models = fit_models(plan, out, runner, log)
            outcomes = execute_runs(plan, out, runner, jobs, log, failed_models)
        failures.set_runs(failed_models, outcomes)
        runs = _read_runs(plan, out, outcomes, failures)
        protocols = {n: PROTOCOLS[p.protocol] for n, p in problems.items()}
        pool_al(runs.values(), out, read_labelled(out), protocols)
        candidates = [c for run in runs.values() for c in run.candidates]
        n_adsorbates = {n: p.n_adsorbates for n, p in problems.items()}
        known = read_labelled(out)
        tasks = pending_tasks(candidates, set(known), failures.label_keys, protocols, out, known, n_adsorbates)
        labelled = 0 if report_only else label_candidates(tasks, out, labeller, jobs, failures.add_label, log)
        if report_only and tasks:
            log(f"{len(tasks)} candidate(s) without a DFT energy yet (--report-only): their runs may be unscored")
        points = read_labelled(out)
        points.update(alias_points(candidates, points, n_adsorbates))  # the same minimum found by other runs
        references = {n: problem_reference(n, points.values(), p.n_adsorbates) for n, p in problems.items()}
        fits = {b: read_fit_record(out, b) for b in plan.delta_backbones}
        fit_cpu = {b: _fit_cpu(record) for b, record in fits.items()}
        scores = [score_run(runs[o.spec], references[o.spec.problem], points, problems[o.spec.problem].n_adsorbates,
                            fit_cpu.get(o.spec.backbone, 0.0)) if o.spec in runs else RunScore(o.spec, "failed")
                  for o in outcomes]
        cells = aggregate(scores)
        from .report import write_report

        report = write_report(out, plan, runs, scores, cells, references, points, failures.lines(), fits)
        log(f"report: {report}")
        return BenchmarkResult(out, outcomes, scores, cells, labelled, report)
