"""Backbone-update regression testing: paired sweeps, golden files, and the rules that decide.

Two questions, two tools:

1. **Did an update make the benchmark worse?**  :func:`run_regress` runs (or resumes) one sweep
   with the baseline and the candidate backbone on the same systems, training sets and seeds
   (``reports/regress/<baseline>__<candidate>/sweep/``), pairs every cell by seed (same seed =
   same split for both) and reports, per system, model and metric, the change
   candidate − baseline as a paired difference over seeds: mean, standard deviation (ddof=1),
   standard error, paired t-test p-value and a significance flag (|mean| > 2 standard errors).

   **Gate rule** (the exit code): at the largest training size of each system, for the gate
   metric (default the *raw* energy MAE, meV/atom), the candidate fails when it is worse by
   more than ``tolerance`` (default 1 meV/atom) on the seed mean **and** that difference is
   significant (|mean| > 2 SEM).  With a single seed there is no spread; the mean alone decides.
   ``0`` = pass, ``1`` = regression, ``2`` = bad input (from the CLI).

   Δ-metrics are errors in energy, so they are comparable across backbones of different
   embedding widths; the report names both widths.

2. **Is this backbone still the backbone we benchmarked?**  Golden files
   ``reports/baselines/<backbone>.json`` hold the backbone's energies and embedding
   fingerprints (shape, norm, per-atom norms, mean, std, a few fixed entries) on fixed generator
   structures (:data:`GOLDEN_STRUCTURES`, no DFT) with their tolerances.
   :func:`compare_golden` lists every quantity out of tolerance, naming backbone, structure and
   quantity.  A golden file is only ever compared with **its own** backbone: embeddings of
   different backbones (or widths) live in different spaces, so comparing their fingerprints
   is refused with a clear message (``regress`` compares Δ-metrics across backbones instead,
   and the golden *energies* of both, which are comparable).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .paths import golden_dir

GOLDEN_DIR = golden_dir()
REGRESS_DIR = Path("reports") / "regress"
GOLDEN_FORMAT = "uipbench-golden-v1"

MAE = "energy_mae_mev_per_atom"
LOWER_IS_BETTER = ("energy_mae_mev_per_atom", "energy_rmse_mev_per_atom", "relative_energy_mae_mev",
                   "force_mae_ev_per_angstrom")
HIGHER_IS_BETTER = ("spearman_within_composition", "lowest_found_fraction")
COMPARED_METRICS = LOWER_IS_BETTER + HIGHER_IS_BETTER
UNITS = {"energy_mae_mev_per_atom": "meV/atom", "energy_rmse_mev_per_atom": "meV/atom",
         "relative_energy_mae_mev": "meV", "force_mae_ev_per_angstrom": "eV/Å",
         "spearman_within_composition": "", "lowest_found_fraction": ""}
DEFAULT_TOLERANCE = 1.0  # meV/atom on the gate metric
LABELS = {"energy_mae_mev_per_atom": "energy MAE", "energy_rmse_mev_per_atom": "energy RMSE",
          "relative_energy_mae_mev": "relative-energy MAE", "force_mae_ev_per_angstrom": "force MAE",
          "spearman_within_composition": "Spearman ρ within compositions",
          "lowest_found_fraction": "lowest structure found (fraction)"}
SIGNIFICANCE_SE = 2.0  # a paired mean difference beyond this many standard errors is significant

#: (system, plan index) of the golden structures: 2x2 cells, S2 dimer (ideal), two dispersed S
#: (distorted), S3 cluster (distorted) on each metal.
GOLDEN_STRUCTURES: tuple[tuple[str, int], ...] = tuple((s, i) for s in ("cu-s", "ag-s", "au-s") for i in (0, 4, 13))
#: |current − golden| <= atol + rtol·|golden|; float32 models on CPU reproduce to ~1e-6, so these
#: absorb BLAS/threading differences and catch any change of weights, layer or package behaviour.
DEFAULT_GOLDEN_TOLERANCES = {"energy_atol_ev": 1e-3, "energy_rtol": 1e-5,
                             "embedding_atol": 1e-4, "embedding_rtol": 1e-4}


class RegressError(ValueError):
    """A regression comparison cannot be made (unknown backbone, missing results, ...)."""


class GoldenMismatch(AssertionError):
    """A backbone no longer reproduces its golden file."""


# ---------------------------------------------------------------------------------------------
# paired statistics (pure)


@dataclass(frozen=True)
class PairedStats:
    """Paired difference candidate − baseline over seeds."""

    n: int
    mean: float
    std: float  # ddof=1; NaN with one pair
    sem: float  # std / sqrt(n)
    t: float  # mean / sem (±inf when every pair differs by the same nonzero amount)
    p_value: float  # two-sided paired t-test, n − 1 degrees of freedom
    significant: bool  # |mean| > SIGNIFICANCE_SE · sem (never with fewer than two pairs)


def paired_stats(baseline: Sequence[float], candidate: Sequence[float]) -> PairedStats:
    """Statistics of ``candidate − baseline`` over pairs (NaN pairs dropped)."""
    from scipy import stats

    b, c = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if b.shape != c.shape:
        raise ValueError(f"paired values need the same length, got {b.shape} and {c.shape}")
    keep = np.isfinite(b) & np.isfinite(c)
    d = c[keep] - b[keep]
    n = int(d.size)
    if n == 0:
        return PairedStats(0, math.nan, math.nan, math.nan, math.nan, math.nan, False)
    mean = float(d.mean())
    if n == 1:
        return PairedStats(1, mean, math.nan, math.nan, math.nan, math.nan, False)
    std = float(d.std(ddof=1))
    sem = std / math.sqrt(n)
    if sem == 0.0 or sem < 1e-12 * max(1.0, abs(mean)):
        if mean == 0.0:
            return PairedStats(n, mean, std, sem, 0.0, 1.0, False)
        return PairedStats(n, mean, std, sem, math.copysign(math.inf, mean), 0.0, True)
    t = mean / sem
    p = float(2.0 * stats.t.sf(abs(t), df=n - 1))
    return PairedStats(n, mean, std, sem, t, p, abs(mean) > SIGNIFICANCE_SE * sem)


def worse_by(metric: str, diff_mean: float) -> float:
    """How much worse the candidate is (positive = worse), in the metric's units."""
    if metric in HIGHER_IS_BETTER:
        return -diff_mean
    if metric in LOWER_IS_BETTER:
        return diff_mean
    raise ValueError(f"no direction known for metric {metric!r}; known: {', '.join(COMPARED_METRICS)}")


def verdict(metric: str, stats: PairedStats) -> str:
    """'worse' / 'better' when the change is significant, else 'same' (or 'n/a' without pairs)."""
    if stats.n == 0:
        return "n/a"
    if not stats.significant:
        return "same"
    return "worse" if worse_by(metric, stats.mean) > 0 else "better"


PAIR_KEYS = ["system", "model", "descriptor", "aggregation", "train_size", "metric"]


def compare(results, baseline: str, candidate: str, metrics: Sequence[str] = COMPARED_METRICS,
            seeds: Sequence[int] | None = None, where: str = "the results"):
    """One row per (system, model, descriptor, aggregation, training size, metric): paired stats over seeds.

    ``results`` is a sweep's tidy table holding both backbones.  Errors (clear messages) when a
    backbone has no results or the two share no cell.
    """
    import pandas as pd

    rows = results[results.metric.isin(list(metrics))]
    if seeds is not None:
        rows = rows[rows.seed.isin(list(seeds))]
    for role, name in (("baseline", baseline), ("candidate", candidate)):
        if not (rows.backbone == name).any():
            raise RegressError(f"no results for {role} backbone {name!r} in {where}"
                               + (f" (seeds {list(seeds)})" if seeds is not None else ""))
    keys = [*PAIR_KEYS, "seed"]
    b = rows[rows.backbone == baseline].drop_duplicates(keys, keep="last").set_index(keys)["value"]
    c = rows[rows.backbone == candidate].drop_duplicates(keys, keep="last").set_index(keys)["value"]
    paired = pd.concat({"baseline": b, "candidate": c}, axis=1, join="inner").reset_index()
    if paired.empty:
        raise RegressError(f"{baseline} and {candidate} share no (system, training size, seed) cell in {where}")
    out = []
    for key, part in paired.groupby(PAIR_KEYS, sort=True):
        part = part.sort_values("seed")
        s = paired_stats(part.baseline.to_numpy(), part.candidate.to_numpy())
        metric = key[-1]
        out.append({**dict(zip(PAIR_KEYS, key)),
                    "seeds": " ".join(str(int(v)) for v in part.seed),
                    "baseline_mean": float(part.baseline.mean()), "baseline_std": float(part.baseline.std(ddof=1)),
                    "candidate_mean": float(part.candidate.mean()),
                    "candidate_std": float(part.candidate.std(ddof=1)),
                    "n": s.n, "diff_mean": s.mean, "diff_std": s.std, "diff_sem": s.sem, "t": s.t,
                    "p_value": s.p_value, "significant": s.significant,
                    "worse_by": worse_by(metric, s.mean) if s.n else math.nan, "verdict": verdict(metric, s)})
    table = pd.DataFrame(out)
    table["train_size"] = table["train_size"].astype(int)
    return table


def pairs(results, baseline: str, candidate: str, metric: str = MAE, seeds: Sequence[int] | None = None):
    """Per-seed values of both backbones side by side (for the paired plot)."""
    import pandas as pd

    rows = results[results.metric == metric]
    if seeds is not None:
        rows = rows[rows.seed.isin(list(seeds))]
    keys = [*PAIR_KEYS, "seed"]
    b = rows[rows.backbone == baseline].drop_duplicates(keys, keep="last").set_index(keys)["value"]
    c = rows[rows.backbone == candidate].drop_duplicates(keys, keep="last").set_index(keys)["value"]
    return pd.concat({"baseline": b, "candidate": c}, axis=1, join="inner").reset_index()


def at_largest_size(table):
    """Rows at the largest training size of each system."""
    largest = table.groupby("system")["train_size"].transform("max")
    return table[table.train_size == largest]


@dataclass(frozen=True)
class GateRule:
    """Which cells decide the exit code, and by how much the candidate may be worse."""

    metric: str = MAE
    models: tuple[str, ...] = ("raw",)
    tolerance: float = DEFAULT_TOLERANCE

    def describe(self) -> str:
        unit = UNITS.get(self.metric, "")
        return (f"the candidate fails when, at the largest training size of a system, its {'/'.join(self.models)} "
                f"`{self.metric}` is worse than the baseline's by more than {self.tolerance:g} {unit} on the "
                f"mean over seeds (paired by seed) and that change is significant (|mean| > "
                f"{SIGNIFICANCE_SE:g} standard errors of the paired difference; with one seed the mean alone "
                f"decides)").replace("  ", " ")


def gate(comparison, rule: GateRule = GateRule()):
    """The rows of ``comparison`` that break ``rule`` (empty = pass)."""
    if rule.tolerance < 0:
        raise RegressError(f"tolerance must be >= 0, got {rule.tolerance}")
    if rule.metric not in COMPARED_METRICS:
        raise RegressError(f"unknown gate metric {rule.metric!r}; choose from {', '.join(COMPARED_METRICS)}")
    rows = at_largest_size(comparison)
    rows = rows[(rows.metric == rule.metric) & rows.model.isin(list(rule.models)) & (rows.n > 0)]
    if rows.empty:
        raise RegressError(f"no paired {'/'.join(rule.models)} {rule.metric} cells to decide on")
    failing = (rows.worse_by > rule.tolerance) & (rows.significant | (rows.n == 1))
    return rows[failing]


def exit_code(failures) -> int:
    """0 when nothing breaks the gate rule, 1 otherwise."""
    return 1 if len(failures) else 0


# ---------------------------------------------------------------------------------------------
# golden files


def golden_path(name: str, directory: Path | None = None) -> Path:
    return (Path(directory) if directory else GOLDEN_DIR) / f"{name}.json"


def golden_structures(entries: Sequence[tuple[str, int]] = GOLDEN_STRUCTURES):
    """The fixed generator structures (deterministic, unlabelled) with their ids."""
    from .datasets.generate import plan_entry

    out = []
    for system, index in entries:
        entry = plan_entry(system, index)
        out.append((entry.plan_id, system, index, entry.atoms))
    return out


def _fixed_entries(n_atoms: int, width: int) -> list[tuple[int, int]]:
    rows = sorted({0, n_atoms // 2, n_atoms - 1})
    cols = sorted({0, width // 2, width - 1})
    return [(i, j) for i in rows for j in cols]


def fingerprint(embedding: np.ndarray) -> dict[str, Any]:
    """Shape, Frobenius norm, per-atom norms, mean, std and a few fixed entries of an embedding."""
    e = np.asarray(embedding, dtype=np.float64)
    n, d = e.shape
    return {"shape": [int(n), int(d)], "norm": float(np.linalg.norm(e)),
            "atom_norms": [float(v) for v in np.linalg.norm(e, axis=1)],
            "mean": float(e.mean()), "std": float(e.std()),
            "entries": [[i, j, float(e[i, j])] for i, j in _fixed_entries(n, d)]}


def golden_record(backbone, entries: Sequence[tuple[str, int]] = GOLDEN_STRUCTURES,
                  tolerances: dict[str, float] | None = None, random_weights: bool = False) -> dict[str, Any]:
    """Energies and embedding fingerprints of ``backbone`` on the golden structures (no cache)."""
    from .datasets.io import structure_hash

    items = golden_structures(entries)
    batch = backbone.embed([atoms for *_, atoms in items])
    meta = batch.metadata.to_dict()
    structures = []
    for (plan_id, system, index, atoms), emb in zip(items, batch.structures):
        structures.append({"id": plan_id, "system": system, "plan_index": index, "formula": atoms.get_chemical_formula(),
                           "n_atoms": len(atoms), "structure_hash": structure_hash(atoms),
                           "energy_ev": float(emb.energy), "embedding": fingerprint(emb.embedding)})
    return {"format": GOLDEN_FORMAT, "backbone": meta["backbone"], "width": int(meta["width"]),
            "random_weights": bool(random_weights), "metadata": meta,
            "tolerances": dict(tolerances or DEFAULT_GOLDEN_TOLERANCES), "structures": structures}


def load_golden(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RegressError(f"{path}: no golden file (write it with `uipbench regress golden --write NAME`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegressError(f"{path}: not a golden file ({exc})") from None
    if data.get("format") != GOLDEN_FORMAT:
        raise RegressError(f"{path}: not a golden file of format {GOLDEN_FORMAT} (found {data.get('format')!r})")
    return data


def _close(current: float, golden: float, atol: float, rtol: float) -> bool:
    return bool(np.isfinite(current)) and abs(current - golden) <= atol + rtol * abs(golden)


def compare_golden(golden: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Every quantity of ``current`` out of the golden file's tolerances, one line each (empty = match).

    Refuses (RegressError) to compare different backbones or embedding widths: fingerprints
    are only meaningful against the backbone's own golden file.
    """
    name = golden["backbone"]
    if current["backbone"] != name:
        raise RegressError(f"golden file of backbone {name!r} compared with backbone {current['backbone']!r}: "
                           f"embedding fingerprints are only comparable with the backbone's own golden file "
                           f"(compare different backbones with `uipbench regress --baseline ... --candidate ...`)")
    if int(current["width"]) != int(golden["width"]):
        raise RegressError(f"{name}: embedding width {current['width']} but the golden file has width "
                           f"{golden['width']}: fingerprints of different widths cannot be compared "
                           f"(the card's embedding layer changed? regenerate the golden file if intended)")
    tol = {**DEFAULT_GOLDEN_TOLERANCES, **golden.get("tolerances", {})}
    e_atol, e_rtol, x_atol, x_rtol = (tol["energy_atol_ev"], tol["energy_rtol"], tol["embedding_atol"],
                                      tol["embedding_rtol"])
    problems = []
    gsha, csha = golden.get("metadata", {}).get("weights_sha256"), current.get("metadata", {}).get("weights_sha256")
    if gsha and csha and gsha != csha:
        problems.append(f"{name}: weights sha256 {csha[:16]}…, golden {gsha[:16]}… (different weights file)")
    by_id = {s["id"]: s for s in current["structures"]}
    for g in golden["structures"]:
        sid = g["id"]
        c = by_id.get(sid)
        if c is None:
            problems.append(f"{name}: structure {sid}: missing from the current evaluation")
            continue
        if c["structure_hash"] != g["structure_hash"]:
            problems.append(f"{name}: structure {sid}: geometry hash {c['structure_hash']}, golden "
                            f"{g['structure_hash']} (the generator changed, not the backbone: regenerate)")
            continue
        if not _close(c["energy_ev"], g["energy_ev"], e_atol, e_rtol):
            problems.append(f"{name}: structure {sid}: energy {c['energy_ev']:.6f} eV, golden {g['energy_ev']:.6f} eV "
                            f"(diff {c['energy_ev'] - g['energy_ev']:+.3e} eV; tolerance "
                            f"{e_atol:g} eV + {e_rtol:g}·|golden|)")
        ce, ge = c["embedding"], g["embedding"]
        if list(ce["shape"]) != list(ge["shape"]):
            problems.append(f"{name}: structure {sid}: embedding shape {ce['shape']}, golden {ge['shape']}")
            continue

        def check(label: str, cv: float, gv: float) -> None:
            if not _close(cv, gv, x_atol, x_rtol):
                problems.append(f"{name}: structure {sid}: embedding {label} {cv:.6g}, golden {gv:.6g} "
                                f"(diff {cv - gv:+.3e}; tolerance {x_atol:g} + {x_rtol:g}·|golden|)")

        check("norm", ce["norm"], ge["norm"])
        check("mean", ce["mean"], ge["mean"])
        check("std", ce["std"], ge["std"])
        for k, (cv, gv) in enumerate(zip(ce["atom_norms"], ge["atom_norms"])):
            check(f"norm of atom {k}", cv, gv)
        current_entries = {(i, j): v for i, j, v in ce["entries"]}
        for i, j, gv in ge["entries"]:
            check(f"entry [{i}, {j}]", current_entries.get((i, j), math.nan), gv)
    return problems


def assert_matches_golden(golden: dict[str, Any], current: dict[str, Any], path: Path | str = "") -> None:
    """Raise :class:`GoldenMismatch` listing every quantity out of tolerance."""
    problems = compare_golden(golden, current)
    if problems:
        head = (f"{golden['backbone']} does not reproduce its golden file {path} "
                f"({len(problems)} quantit{'y' if len(problems) == 1 else 'ies'} out of tolerance):")
        shown = problems[:25] + ([f"... and {len(problems) - 25} more"] if len(problems) > 25 else [])
        raise GoldenMismatch("\n  ".join([head, *shown]))


def _load_for_golden(name: str, random_weights: bool | None, in_process: bool | None, download: bool = True):
    """(backbone, random_weights used): real weights when present (or, with ``download``, when the package's
    loader can fetch them), else the card's architecture with random weights from seed 0."""
    from .adapters.card import WeightsError, get_card
    from .adapters.registry import load_backbone, status

    card = get_card(name)
    if random_weights is None:
        if not download and not status(card).weights_present:
            random_weights = True
        else:
            try:
                return load_backbone(name, in_process=in_process), False
            except WeightsError:
                random_weights = True
    return load_backbone(name, in_process=in_process, random_weights=random_weights), bool(random_weights)


def write_golden(name: str, path: Path | None = None, random_weights: bool | None = None,
                 in_process: bool | None = None, tolerances: dict[str, float] | None = None) -> Path:
    """Evaluate backbone ``name`` on the golden structures and write ``reports/baselines/<name>.json``.

    In-process when the backbone's package is importable here, else through its worker.
    ``random_weights=None``: real weights when present, else the card's architecture with
    random weights drawn from seed 0 (recorded in the file; the check then does the same).
    """
    from ._atomic import write_json_atomic

    backbone, used_random = _load_for_golden(name, random_weights, in_process)
    record = golden_record(backbone, tolerances=tolerances, random_weights=used_random)
    record["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record["note"] = ("written by `uipbench regress golden --write`; checked by tests/backbones/test_golden.py "
                      "and `uipbench regress golden --check`" + ("; RANDOM weights (seed 0): the real weights "
                                                                  "were absent" if used_random else ""))
    path = Path(path) if path else golden_path(name)
    write_json_atomic(path, record)
    return path


def check_golden(name: str, path: Path | None = None, in_process: bool | None = None) -> dict[str, Any]:
    """Evaluate ``name`` as its golden file was made and raise :class:`GoldenMismatch` on any difference."""
    path = Path(path) if path else golden_path(name)
    golden = load_golden(path)
    from .adapters.card import get_card

    get_card(name)
    if golden["backbone"] != name:
        raise RegressError(f"{path} is the golden file of {golden['backbone']!r}, not {name!r}")
    backbone, _ = _load_for_golden(name, bool(golden.get("random_weights")), in_process)
    entries = [(s["system"], int(s["plan_index"])) for s in golden["structures"]]
    current = golden_record(backbone, entries, golden.get("tolerances"), bool(golden.get("random_weights")))
    assert_matches_golden(golden, current, path)
    return current


def golden_energy_changes(baseline: str, candidate: str, directory: Path | None = None):
    """Per golden structure: candidate − baseline energy (meV/atom), from both golden files; None if absent.

    Energies are comparable across backbones (fingerprints are not).
    """
    import pandas as pd

    pb, pc = golden_path(baseline, directory), golden_path(candidate, directory)
    if not (pb.is_file() and pc.is_file()):
        return None
    gb, gc = load_golden(pb), load_golden(pc)
    cs = {s["id"]: s for s in gc["structures"]}
    rows = []
    for s in gb["structures"]:
        c = cs.get(s["id"])
        if c is None or c["structure_hash"] != s["structure_hash"]:
            continue
        rows.append({"structure": s["id"], "system": s["system"], "n_atoms": s["n_atoms"],
                     "baseline_ev": s["energy_ev"], "candidate_ev": c["energy_ev"],
                     "change_mev_per_atom": 1000.0 * (c["energy_ev"] - s["energy_ev"]) / s["n_atoms"]})
    return pd.DataFrame(rows) if rows else None


# ---------------------------------------------------------------------------------------------
# the regress run


@dataclass
class RegressResult:
    baseline: str
    candidate: str
    comparison: Any  # DataFrame, all paired cells
    failures: Any  # DataFrame, rows breaking the gate rule
    rule: GateRule
    out: Path
    report: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return exit_code(self.failures)


def _sweep_systems(systems: Sequence[str] | None, datasets_root: Path | None) -> tuple[list[str], int | None]:
    from .datasets.io import available_systems
    from .harness.data import POOLED
    from .harness.sweep import MIN_STRUCTURES

    return (list(systems), None) if systems else ([*available_systems(datasets_root), POOLED], MIN_STRUCTURES)


def _stale(sweep_dir: Path, systems: Sequence[str] | None, datasets_root: Path | None) -> str | None:
    """Why the sweep results in ``sweep_dir`` belong to other data or settings (the sweep's own rule)."""
    from .harness.data import load_systems
    from .harness.sweep import DEFAULT_GPR, stale_reason

    names, skip_small = _sweep_systems(systems, datasets_root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_systems(names, datasets_root, skip_small=skip_small)
    return stale_reason(sweep_dir, data, DEFAULT_GPR)


def run_regress(baseline: str, candidate: str, systems: Sequence[str] | None = None, *,
                seeds: Sequence[int] | None = None, tolerance: float = DEFAULT_TOLERANCE,
                gate_metric: str = MAE, gate_models: Sequence[str] = ("raw",),
                out: str | Path | None = None, sizes: Sequence[int | str] | None = None,
                aggregations: Sequence[str] | None = None, descriptors: Sequence[str] = ("embedding",),
                run: bool = True, workers: int = 1, executor=None, cache=None, progress: bool = True,
                datasets_root: Path | None = None, command: list[str] | None = None,
                golden_dir: Path | None = None) -> RegressResult:
    """Sweep (or resume) both backbones on the same cells, compare paired by seed, write the report.

    ``run=False`` only compares the results already in ``<out>/sweep`` (an error if there are none).
    Cached results computed on different data than the shipped data now are recomputed.
    """
    from .adapters.card import get_card
    from .harness import sweep as sweep_module
    from .report.render import read_results

    for name in (baseline, candidate):
        get_card(name)  # unknown names: CardError naming the known backbones
    if baseline == candidate:
        raise RegressError(f"baseline and candidate are both {baseline!r}; name two different backbones")
    rule = GateRule(gate_metric, tuple(gate_models), float(tolerance))
    if rule.tolerance < 0:
        raise RegressError(f"tolerance must be >= 0, got {tolerance}")
    if rule.metric not in COMPARED_METRICS:
        raise RegressError(f"unknown gate metric {rule.metric!r}; choose from {', '.join(COMPARED_METRICS)}")
    seeds = tuple(seeds) if seeds else sweep_module.DEFAULT_SEEDS
    aggregations = tuple(aggregations) if aggregations else sweep_module.AGGREGATIONS
    out = Path(out) if out else REGRESS_DIR / f"{baseline}__{candidate}"
    sweep_dir = out / "sweep"
    notes: list[str] = []

    if run:
        reason = _stale(sweep_dir, systems, datasets_root)  # the sweep recomputes such cells itself
        if reason:
            notes.append(f"cached sweep results were computed on other data or settings ({reason}); recomputed")
        results = sweep_module.sweep(
            [baseline, candidate], systems, aggregations=aggregations, sizes=sizes, seeds=seeds,
            descriptors=descriptors, out=sweep_dir, executor=executor, workers=workers, cache=cache,
            progress=progress, command=command, datasets_root=datasets_root)
    else:
        if not (sweep_dir / sweep_module.RESULTS_FILE).exists():
            raise RegressError(f"{sweep_dir}: no sweep results to compare (run `uipbench regress` without "
                               f"--no-run, or point --out at a folder with sweep/results.csv)")
        results = read_results(sweep_dir)[0]
        try:
            reason = _stale(sweep_dir, systems, datasets_root)
        except ValueError:
            reason = None
        if reason:
            notes.append(f"these results were computed on other data than the datasets now hold ({reason}); "
                         f"run without --no-run to recompute")
    if systems:
        results = results[results.system.isin(list(systems))]
    comparison = compare(results, baseline, candidate, seeds=seeds, where=str(sweep_dir))
    failures = gate(comparison, rule)
    result = RegressResult(baseline, candidate, comparison, failures, rule, out, notes=notes)
    result.report = write_regress_report(result, results, sweep_dir, golden_dir, datasets_root)
    return result


# ---------------------------------------------------------------------------------------------
# report


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def _signed(mean: float, std: float, digits: int = 2) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:+.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:+.{digits}f}"


def _p(p: float) -> str:
    return "–" if not np.isfinite(p) else ("<0.001" if p < 1e-3 else f"{p:.3f}")


def _per_system(values: dict) -> str:
    return ", ".join(f"{k} {int(v)}" for k, v in sorted(values.items(), key=lambda kv: (kv[0] == "all", kv[0])))


def _model_label(row) -> str:
    return "raw" if row.model == "raw" else (f"Δ {row.aggregation}" if row.descriptor == "embedding"
                                             else f"Δ {row.aggregation} ({row.descriptor})")


def _gate_rows(comparison, rule: GateRule):
    rows = at_largest_size(comparison)
    return rows[(rows.metric == rule.metric) & rows.model.isin(list(rule.models))]


def gate_markdown(comparison, rule: GateRule, failures) -> str:
    rows = _gate_rows(comparison, rule)
    failing = set(failures.index)
    lines = ["| system | model | n train | seeds | baseline | candidate | Δ (cand − base) mean ± std | 2·SEM "
             "| p (paired t) | significant | gate |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for idx, r in rows.iterrows():
        lines.append(f"| {r.system} | {_model_label(r)} | {r.train_size} | {r.n} | {_pm(r.baseline_mean, r.baseline_std)} | "
                     f"{_pm(r.candidate_mean, r.candidate_std)} | {_signed(r.diff_mean, r.diff_std)} | "
                     f"{SIGNIFICANCE_SE * r.diff_sem:.2f} | {_p(r.p_value)} | {'yes' if r.significant else 'no'} | "
                     f"{'FAIL' if idx in failing else 'pass'} |")
    return "\n".join(lines)


def all_metrics_markdown(comparison) -> str:
    rows = at_largest_size(comparison)
    lines = ["| system | model | metric | n train | seeds | baseline | candidate | Δ mean ± std | p | change |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    order = {m: i for i, m in enumerate(COMPARED_METRICS)}
    rows = rows[rows.n > 0]  # e.g. no composition group with 3+ test structures: no Spearman ρ
    rows = rows.assign(_o=rows.metric.map(order)).sort_values(["system", "model", "aggregation", "_o"])
    for r in rows.itertuples(index=False):
        digits = 3 if r.metric in HIGHER_IS_BETTER or r.metric.startswith("force") else 2
        unit = UNITS.get(r.metric, "")
        flag = {"worse": "**worse**", "better": "better", "same": "–", "n/a": "n/a"}[r.verdict]
        lines.append(f"| {r.system} | {_model_label(r)} | {r.metric}{f' ({unit})' if unit else ''} | {r.train_size} | "
                     f"{r.n} | {_pm(r.baseline_mean, r.baseline_std, digits)} | "
                     f"{_pm(r.candidate_mean, r.candidate_std, digits)} | {_signed(r.diff_mean, r.diff_std, digits)} | "
                     f"{_p(r.p_value)} | {flag} |")
    return "\n".join(lines)


def paired_figure(results, baseline: str, candidate: str, out: Path, metric: str = MAE,
                  seeds: Sequence[int] | None = None) -> Path:
    """Per system (columns) and model (rows), at the largest training size: baseline vs candidate per seed,
    a line joining each seed's pair (red: candidate worse, green: better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report.figures import save

    p = at_largest_size(pairs(results, baseline, candidate, metric, seeds))
    p = p[(p.model == "raw") | (p.descriptor == "embedding")]
    systems = sorted(p.system.unique(), key=lambda s: (s == "all", s))
    models = [("raw", "-")] + [("delta", a) for a in ("global", "species", "atomic")
                               if ((p.model == "delta") & (p.aggregation == a)).any()]
    fig, axes = plt.subplots(len(models), max(1, len(systems)),
                             figsize=(max(4.2, 2.6 * len(systems)), 2.3 * len(models)), squeeze=False)
    lower_better = metric not in HIGHER_IS_BETTER
    for i, (model, agg) in enumerate(models):
        for j, system in enumerate(systems):
            ax = axes[i][j]
            part = p[(p.system == system) & (p.model == model) & (p.aggregation == agg)].sort_values("seed")
            for r in part.itertuples(index=False):
                worse = (r.candidate > r.baseline) if lower_better else (r.candidate < r.baseline)
                same = abs(r.candidate - r.baseline) <= 1e-9 * max(1.0, abs(r.baseline))
                colour = "0.6" if same else ("tab:red" if worse else "tab:green")
                ax.plot([0, 1], [r.baseline, r.candidate], "-", color=colour, lw=1.2, alpha=0.8)
                ax.plot([0, 1], [r.baseline, r.candidate], "o", color="0.2", ms=3.5)
                ax.annotate(str(int(r.seed)), (1.04, r.candidate), fontsize=6, va="center", color="0.35")
            if not part.empty:
                s = paired_stats(part.baseline.to_numpy(), part.candidate.to_numpy())
                n_train = int(part.train_size.iloc[0])
                ax.set_title(f"{system} · {'raw' if model == 'raw' else 'Δ ' + agg} (n={n_train})\n"
                             f"Δ = {_signed(s.mean, s.std)}", fontsize=8)
            ax.set_xticks([0, 1], [baseline, candidate], fontsize=6.5)
            ax.set_xlim(-0.3, 1.3)
            ax.tick_params(axis="y", labelsize=7)
            if j == 0:
                unit = UNITS.get(metric, "")
                ax.set_ylabel(LABELS.get(metric, metric) + (f" ({unit})" if unit else ""), fontsize=7)
    fig.suptitle(f"{baseline} → {candidate}: {LABELS.get(metric, metric)} per seed, largest training set\n"
                 f"(lines join the two backbones on the same split; red: candidate worse, green: better)", fontsize=8)
    fig.tight_layout()
    return save(fig, out, "paired")[0]


def _relaxers(members, datasets_root: Path | None) -> dict[str, str]:
    from .datasets.io import load_card

    out = {}
    for m in members:
        try:
            relaxer = load_card(m, datasets_root).get("generator", {}).get("relaxer")
        except ValueError:
            continue
        if relaxer:
            out[m] = relaxer
    return out


def write_regress_report(result: RegressResult, results, sweep_dir: Path, golden_dir: Path | None = None,
                         datasets_root: Path | None = None) -> Path:
    """regress.md + regress.html + tables/ + figures/ in ``result.out``; returns regress.md."""
    from ._atomic import write_json_atomic, write_text_atomic
    from .adapters.card import get_card
    from .report.render import _html

    out = result.out
    b, c = result.baseline, result.candidate
    table_dir = out / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)
    result.comparison.to_csv(table_dir / "paired_differences.csv", index=False)
    result.failures.to_csv(table_dir / "gate_failures.csv", index=False)
    fig = paired_figure(results, b, c, out / "figures", result.rule.metric, None)
    meta_path = sweep_dir / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    stored = meta.get("backbones", {})
    wb, wc = (int(stored.get(n, {}).get("metadata", {}).get("width") or get_card(n).embedding_width) for n in (b, c))
    used = results[results.backbone.isin([b, c]) & (results.metric == "n_test")]
    n_test = used.groupby("system")["value"].max().to_dict()
    sizes = results.groupby("system")["train_size"].max().to_dict()
    data = meta.get("data", {})
    data_line = ", ".join(f"{k}: {v.get('structures')} structures" for k, v in data.items()) or "?"
    seeds = sorted(int(s) for s in result.comparison.seeds.str.split().explode().unique())
    code = result.exit_code
    verdict_line = (f"**Verdict: {'FAIL' if code else 'PASS'}** (exit code {code}): "
                    + (f"{len(result.failures)} gate cell(s) worse beyond the tolerance."
                       if code else "no gate cell is worse beyond the tolerance."))
    small = [s for s, n in n_test.items() if n < 5]
    blocks: list[tuple[str, str]] = [
        ("md", f"# Regression report: {b} → {c}"),
        ("md", verdict_line),
        ("md", f"Rule: {result.rule.describe()}. Exit codes: 0 pass, 1 regression, 2 bad input."),
        ("md", f"Data: {data_line} (protocol `{meta.get('protocol', {}).get('name', '?')}`). Seeds {seeds}: "
               f"the same seed gives both backbones the same train/test split, so each seed is a pair. Largest "
               f"training size per system: {_per_system(sizes)}; test structures per split: "
               f"{_per_system(n_test)}. Δ (cand − base) > 0 means the candidate has the "
               f"larger value (worse for errors, better for Spearman ρ and lowest-found fraction)."),
        ("md", f"Embedding widths: {b} {wb}, {c} {wc}. "
               + ("Different widths: the Δ-metrics are errors in energy and compare fine; the embeddings "
                  "themselves (golden fingerprints) are not compared across backbones."
                  if wb != wc else "Same width, but the embeddings of two different models still live in "
                                   "different spaces: only metrics and energies are compared, never the "
                                   "fingerprints.")),
    ]
    if small:
        structures = {k: v.get("structures") for k, v in data.items()}
        blocks.append(("md", f"Caution, small data: only {', '.join(f'{s}: {int(n_test[s])}' for s in small)} "
                             f"test structures per split (datasets: {_per_system(structures) or '?'} structures). "
                             f"The seeds redraw the test set from the same few structures, so they are not "
                             f"independent samples: the standard error (and the significance flag) understates "
                             f"the real uncertainty, and a difference is only as general as these few "
                             f"structures. Treat the verdict as indicative until the datasets are larger."))
    relaxed_by = {m: r for m, r in _relaxers(data, datasets_root).items() if r in (b, c)}
    if relaxed_by:
        blocks.append(("md", f"Note: the 'relaxed' structures of {', '.join(sorted(relaxed_by))} were relaxed with "
                             f"{', '.join(sorted(set(relaxed_by.values())))}, one of the two backbones compared: "
                             f"they sit at its minima, which may favour it or not; see predictions per structure "
                             f"in sweep/predictions.csv."))
    blocks += [
        ("md", f"## Gate: {'/'.join(result.rule.models)} {result.rule.metric} at the largest training size "
               f"({UNITS.get(result.rule.metric, '')}, mean ± std over seeds)"),
        ("md", gate_markdown(result.comparison, result.rule, result.failures)),
        ("md", "## Every metric at the largest training size (paired over seeds)"),
        ("md", "“worse”/“better”: the paired mean difference is beyond 2 standard errors; “–”: not "
               "significant (with few seeds, 2 standard errors is a looser bar than p < 0.05: read the p-value "
               "too). Metrics without a value on any seed (e.g. Spearman ρ when no composition has 3+ test "
               "structures) are left out. All training sizes are in tables/paired_differences.csv."),
        ("md", all_metrics_markdown(result.comparison)),
        ("md", "## Paired plot"),
        ("md", f"![paired plot]({fig.relative_to(out).as_posix()})"),
    ]
    energies = golden_energy_changes(b, c, golden_dir)
    if energies is not None:
        energies.to_csv(table_dir / "golden_energy_changes.csv", index=False)
        lines = ["| structure | atoms | baseline (eV) | candidate (eV) | change (meV/atom) |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r.structure} | {r.n_atoms} | {r.baseline_ev:.4f} | {r.candidate_ev:.4f} | "
                  f"{r.change_mev_per_atom:+.1f} |" for r in energies.itertuples(index=False)]
        blocks += [("md", "## Energies on the golden structures (reports/baselines, no DFT)"),
                   ("md", "Total energies of both backbones on the fixed generator structures; the change is "
                          "candidate − baseline. Energies are comparable across backbones; embedding fingerprints "
                          "are not."),
                   ("md", "\n".join(lines))]
    errors = results[results.backbone.isin([b, c]) & (results.metric == "fit_error")]
    if not errors.empty:
        blocks.append(("md", f"{len(errors)} Δ cell(s) could not be fitted and are left out of the pairs, e.g.: "
                             f"{errors.note.iloc[0]}"))
    for note in result.notes:
        blocks.append(("md", f"Note: {note}."))
    blocks.append(("md", f"Sweep results (both backbones) in `{sweep_dir.relative_to(out).as_posix()}/`; paired "
                         f"differences in `tables/paired_differences.csv`; the gate decision in `summary.json`."))
    write_text_atomic(out / "regress.md", "\n\n".join(text for _, text in blocks) + "\n")
    write_text_atomic(out / "regress.html", _html([(k, t.replace("**", "")) for k, t in blocks]))
    write_json_atomic(out / "summary.json", {
        "baseline": b, "candidate": c, "exit_code": code, "rule": result.rule.describe(),
        "tolerance": result.rule.tolerance, "gate_metric": result.rule.metric, "gate_models": list(result.rule.models),
        "seeds": seeds, "widths": {b: wb, c: wc}, "notes": result.notes,
        "gate": json.loads(_gate_rows(result.comparison, result.rule).to_json(orient="records")),
        "failures": json.loads(result.failures.to_json(orient="records")),
    })
    return out / "regress.md"
