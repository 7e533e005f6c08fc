"""The plan of a search benchmark: one run per (problem, backbone, method, seed), and the command of each.

A run is one ``uipbench search`` in its own folder ``OUT/runs/<problem>/<backbone>/<method>/seed-<S>``:

* ``raw`` – the backbone alone;
* ``delta`` – the backbone + the Δ-model ``OUT/models/<backbone>`` (``uipbench delta fit``, once per backbone);
* ``al`` – active learning (``--active-learning --rounds R --label-per-round K``): the search labels
  structures with DFT between rounds and refits its own Δ-model.

Every check of the input is here (:func:`make_plan`), so bad input is refused before any work.  This
module imports only the standard library at the top: the command's parser reads :data:`METHODS`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: the methods a benchmark compares
METHODS: tuple[str, ...] = ("raw", "delta", "al")
#: the minima of each run labelled with DFT by default (the predicted minimum and the runner-up)
LABEL_TOP = 2
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)


class BenchmarkInputError(ValueError):
    """The benchmark cannot run with this input; raised before any work."""


@dataclass(frozen=True)
class BenchmarkSettings:
    """What every run shares, and how many minima of each are labelled."""

    budget: int
    algorithm: str = "random"
    rounds: int | None = None  # al only
    label_per_round: int | None = None  # al only
    label_top: int = LABEL_TOP

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, order=True)
class RunSpec:
    """One run: a search of ``problem`` with ``backbone`` by ``method`` from ``seed``."""

    problem: str
    backbone: str
    method: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.problem}/{self.backbone}/{self.method}/seed-{self.seed}"

    def folder(self, out: Path) -> Path:
        return Path(out) / "runs" / self.problem / self.backbone / self.method / f"seed-{self.seed}"


@dataclass(frozen=True)
class BenchmarkPlan:
    problems: tuple[str, ...]
    backbones: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: BenchmarkSettings

    @property
    def runs(self) -> list[RunSpec]:
        return [RunSpec(p, b, m, s) for p in self.problems for b in self.backbones for m in self.methods
                for s in self.seeds]

    @property
    def delta_backbones(self) -> tuple[str, ...]:
        """Backbones whose Δ-model the plan fits (those searched by ``delta``)."""
        return self.backbones if "delta" in self.methods else ()

    def to_dict(self) -> dict[str, Any]:
        return {"problems": list(self.problems), "backbones": list(self.backbones), "methods": list(self.methods),
                "seeds": list(self.seeds), "settings": self.settings.to_dict()}


#: the plan's lists a resumed benchmark may extend (a superset of those in ``benchmark.json``)
GROWING = ("problems", "backbones", "methods", "seeds")
#: settings that apply only to the runs of one method: compared only when the earlier plan has it
METHOD_SETTINGS = {"rounds": "al", "label_per_round": "al"}


def resume_differences(previous: dict[str, Any], plan: BenchmarkPlan) -> list[str]:
    """Why ``plan`` cannot resume the benchmark whose ``benchmark.json`` is ``previous`` (empty: it can).

    Problems, backbones, methods and seeds may only be added (a larger benchmark extends a smaller one:
    every labelled structure and finished run of the earlier plan is part of the new one); the settings
    every run shares must be equal, since the runs, the labelled structures and so the reference
    (the lowest DFT energy) and the ranks of the earlier plan stay in the folder.  ``rounds`` and
    ``label_per_round`` only count when the earlier plan had method ``al`` (it had no such runs otherwise).
    """
    if not isinstance(previous, dict) or previous.get("format") != "uipbench-search-benchmark":
        return ["it is not a search benchmark's plan"]
    differences = []
    now = plan.to_dict()
    for what in GROWING:
        before = previous.get(what) or []
        dropped = [v for v in before if v not in now[what]]
        if dropped:
            differences.append(f"{what} {' '.join(map(str, dropped))} of the earlier plan missing")
    earlier = previous.get("settings") or {}
    for name, value in now["settings"].items():
        method = METHOD_SETTINGS.get(name)
        if method is not None and method not in (previous.get("methods") or []):
            continue
        if earlier.get(name) != value:
            differences.append(f"{name} {earlier.get(name)!r} there, {value!r} now")
    return differences


def model_path(out: Path, backbone: str) -> Path:
    """Base path of a backbone's Δ-model (``.json`` + ``.npz``)."""
    return Path(out) / "models" / backbone


def _beside(base: Path, ending: str) -> Path:
    """``base`` + ``ending`` (not ``with_suffix``: a backbone name such as ``chgnet-0.3.0`` has dots), as
    :func:`uipbench.delta.io.model_paths` names a model's files."""
    return base.with_name(base.name + ending)


def model_exists(out: Path, backbone: str) -> bool:
    base = model_path(out, backbone)
    return _beside(base, ".json").is_file() and _beside(base, ".npz").is_file()


def fit_record_path(out: Path, backbone: str) -> Path:
    """Where the CPU time of a backbone's Δ-fit is kept."""
    return _beside(model_path(out, backbone), ".fit.json")


def fit_cache_path(out: Path, backbone: str) -> Path:
    """The embedding cache of a backbone's Δ-fit (``UIPBENCH_CACHE_DIR`` of its ``uipbench delta fit``): its
    own, not the shared one, so the fit's CPU time always includes embedding its training structures."""
    return Path(out).absolute() / "models" / ".cache" / backbone


def delta_fit_argv(out: Path, backbone: str) -> list[str]:
    """``uipbench delta fit`` of ``backbone``'s Δ-model (its arguments, without the program name)."""
    return ["delta", "fit", "--backbone", backbone, "--out", str(Path(out).absolute() / "models" / backbone)]


def search_argv(spec: RunSpec, settings: BenchmarkSettings, out: Path) -> list[str]:
    """The ``uipbench search`` of one run (its arguments, without the program name)."""
    out = Path(out).absolute()
    argv = ["search", spec.problem, "--backbone", spec.backbone]
    if spec.method == "delta":
        argv += ["--delta", str(model_path(out, spec.backbone))]
    elif spec.method == "al":
        argv += ["--active-learning", "--rounds", str(settings.rounds), "--label-per-round",
                 str(settings.label_per_round)]
    return argv + ["--algorithm", settings.algorithm, "--budget", str(settings.budget), "--seed", str(spec.seed),
                   "--out", str(spec.folder(out)), "--no-progress"]


def _unique(what: str, values: tuple) -> None:
    if not values:
        raise BenchmarkInputError(f"no {what} given")
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise BenchmarkInputError(f"{what} given twice: {', '.join(repeated)}")


def _check_settings(settings: BenchmarkSettings, methods: tuple[str, ...]) -> None:
    from ..defaults import ALGORITHMS

    if settings.budget < 1:
        raise BenchmarkInputError(f"--budget must be at least 1 relaxation, got {settings.budget}")
    if settings.algorithm not in ALGORITHMS:
        raise BenchmarkInputError(f"unknown search algorithm {settings.algorithm!r}; known: {', '.join(ALGORITHMS)}")
    if settings.label_top < 1:
        raise BenchmarkInputError(f"--label-top must be at least 1, got {settings.label_top}")
    if "al" in methods and (settings.rounds is None or settings.label_per_round is None):
        raise BenchmarkInputError("method al needs --rounds and --label-per-round (active-learning rounds, and "
                                  "structures DFT-labelled per round)")
    if "al" not in methods and (settings.rounds is not None or settings.label_per_round is not None):
        raise BenchmarkInputError("--rounds and --label-per-round only apply with method al")
    for name, value in (("--rounds", settings.rounds), ("--label-per-round", settings.label_per_round)):
        if value is not None and value < 1:
            raise BenchmarkInputError(f"{name} must be at least 1, got {value}")


def make_plan(problems: list[str], backbones: list[str], methods: list[str], seeds: list[int],
              settings: BenchmarkSettings) -> BenchmarkPlan:
    """The plan, every input checked: unknown problems, backbones or methods, repeats, bad settings."""
    from ...adapters.card import get_card
    from ..problem import load_problem

    problems, backbones, methods, seeds = tuple(problems), tuple(backbones), tuple(methods), tuple(seeds)
    for what, values in (("problems", problems), ("backbones", backbones), ("methods", methods), ("seeds", seeds)):
        _unique(what, values)
    if any(s < 0 for s in seeds):
        raise BenchmarkInputError(f"seeds must be non-negative integers, got {list(seeds)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise BenchmarkInputError(f"unknown method(s) {', '.join(map(repr, unknown))}; known: {', '.join(METHODS)}")
    _check_settings(settings, methods)
    for name in problems:
        problem = load_problem(name)  # ProblemError names the problem and the known ones
        if problem.name != name:
            raise BenchmarkInputError(f"give problems by name (a shipped card), not {name!r}: run folders are named "
                                      f"after the problem")
    for name in backbones:
        get_card(name)  # CardError: unknown backbone, with the known ones
    return BenchmarkPlan(problems, backbones, methods, seeds, settings)
