"""The benchmark's report: ``runs.csv``, ``cells.csv``, ``candidates.csv``, ``report.md`` and ``report.html``
(:mod:`uipbench.report.html`), with the figures in ``figures/``."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from ..._atomic import write_text_atomic
from ...report.html import Block, write_html
from .figures import METHOD_LABELS, minima_picture, success_vs_cpu
from .labelling import DftPoint, PointKey, key_of
from .plan import BenchmarkPlan
from .score import METRICS, SUCCESS_THRESHOLD_EV, CellScore, ProblemReference, RunScore

CAVEAT = ("Every candidate gets one DFT single point at the geometry the backbone relaxed it to; nothing is "
          "relaxed with DFT. So candidates are compared at backbone geometries: the DFT minimum near each geometry "
          "may be lower, by a different amount for each candidate, and two candidates whose DFT relaxations would "
          "end in the same minimum (or swap order) are scored as they stand. E_min^DFT is the lowest energy among "
          "the structures labelled here (all runs' top candidates and the structures the active-learning runs "
          "labelled), not the true global minimum: a structure no run found is not in the reference.")
DENOMINATOR = ("Success k/n: k successes among the n runs *scored*, those whose predicted minimum has a DFT energy. "
               "'Not scored' counts the runs left out of n: runs that failed, and runs whose predicted minimum has no "
               "DFT energy (its single point failed: `failures.json`), so a method whose DFT fails more often is not "
               "penalised by k/n; the figure plots k/n too. `cells.csv` also gives `success_rate_all` = k / (n + not "
               "scored), every run of the cell in the denominator and an unscored one counted as no success.")
COSTS = ("CPU time per run: raw = the search's relaxations (search.json); Δ = those plus the whole Δ-fit of the "
         "backbone (CPU of the fit's processes, counted in full for every Δ run, though one fit serves all "
         "problems and seeds; the DFT data it was fitted on is not counted); active learning = the relaxations "
         "of all its rounds plus the core-seconds of its own DFT labelling (its per-round Δ-fits are not counted: "
         "its folder keeps their wall time only). The DFT single points of this benchmark's scoring are counted "
         "for no method. CPU to success counts the relaxations up to the first one that found the eventually "
         "successful minimum (plus the Δ-fit); for active learning, the whole run, and its evaluations to "
         "success include the earlier rounds' relaxations (the final minima need every round). The Δ-model of "
         "`delta` is fitted once per backbone on `uipbench delta fit`'s default systems; active learning starts "
         "from the problem's own metal system and adds its labels.")
FIT_CACHE = ("A Δ-fit's CPU time depends on whether its training structures' embeddings were cached already, so each "
             "fit embeds through an embedding cache of its own, `models/.cache/<backbone>`, empty before it: its CPU "
             "time includes embedding every training structure with the backbone, whatever the shared cache holds.")


def fit_note(backbone: str, record: dict[str, Any] | None) -> str:
    """How a backbone's Δ-fit was timed, from its ``models/<backbone>.fit.json`` (None: there is none)."""
    if record is None:
        return f"{backbone}: a Δ-model put there by hand, its fit's CPU time unknown (not counted)"
    empty = record.get("embedding_cache_empty_before")
    if empty is None:
        return (f"{backbone}: fitted through the shared embedding cache (by an older uipbench), so its CPU time "
                f"leaves out the embeddings that cache held already")
    return f"{backbone}: " + ("embedded every training structure (its own cache was empty)" if empty else
                              "its own cache held embeddings already (a fit retried after a kill): its CPU time "
                              "may leave some out")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def run_rows(scores: Sequence[RunScore]) -> list[dict[str, Any]]:
    return [{"problem": s.spec.problem, "backbone": s.spec.backbone, "method": s.spec.method, "seed": s.spec.seed,
             "status": s.status, "dft_energy": s.dft_energy, "dft_above_minimum": s.dft_above_minimum,
             "success": s.success, "dft_rank": s.dft_rank, "bonds_predicted": s.bonds_predicted,
             "bonds_dft_lowest": s.bonds_dft_lowest, "gap_predicted": s.gap_predicted, "gap_dft": s.gap_dft,
             "gap_error": s.gap_error, "evaluations": s.evaluations, "evaluations_to_success": s.evaluations_to_success,
             "cpu_search": s.cpu_search, "cpu_delta_fit": s.cpu_delta_fit, "cpu_dft": s.cpu_dft,
             "cpu_seconds": s.cpu_seconds, "cpu_seconds_to_success": s.cpu_to_success} for s in scores]


def cell_rows(cells: Sequence[CellScore]) -> list[dict[str, Any]]:
    return [{"problem": c.problem, "backbone": c.backbone, "method": c.method, "n": c.n, "successes": c.successes,
             "success_rate": c.success_rate, "unscored": c.unscored, "success_rate_all": c.success_rate_all,
             "median_dft_rank": c.median_dft_rank,
             "bonds_predicted": " ".join(map(str, c.bonds_predicted)), "bonds_dft_lowest": c.bonds_dft_lowest,
             "mean_gap_error": c.mean_gap_error, "median_cpu_seconds": c.median_cpu_seconds,
             "median_cpu_seconds_to_success": c.median_cpu_to_success,
             "median_evaluations_to_success": c.median_evaluations_to_success} for c in cells]


def candidate_rows(runs: dict, points: dict[PointKey, DftPoint]) -> list[dict[str, Any]]:
    rows = []
    for run in runs.values():
        for c in run.candidates:
            point = points.get(key_of(c))
            rows.append({"problem": c.spec.problem, "backbone": c.spec.backbone, "method": c.spec.method,
                         "seed": c.spec.seed, "rank": c.rank, "predicted_energy": c.predicted_energy,
                         "structure_hash": c.structure_hash, "dft_energy": point.energy if point else math.nan,
                         "dft_source": point.source if point else ""})  # "top-k", "al" or "alias of <hash>"
    return rows


def cell_table(cells: Sequence[CellScore]) -> str:
    m = METRICS
    head = ["problem", "backbone", "method", "success k/n", "not scored", f"median {m['dft_rank'].label}",
            f"{m['adsorbate_bonds'].label}: predicted (per seed) / DFT-lowest",
            f"mean {m['gap_error'].axis_label}", f"median {m['cpu_seconds'].axis_label}",
            f"median {m['cpu_seconds_to_success'].axis_label}", f"median {m['evaluations_to_success'].axis_label}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for c in cells:
        bonds = f"{' '.join(map(str, c.bonds_predicted)) or '–'} / {_fmt(c.bonds_dft_lowest)}"
        row = [c.problem, c.backbone, METHOD_LABELS.get(c.method, c.method), f"{c.successes}/{c.n}", str(c.unscored),
               _fmt(c.median_dft_rank, 1), bonds, _fmt(c.mean_gap_error), _fmt(c.median_cpu_seconds, 1),
               _fmt(c.median_cpu_to_success, 1), _fmt(c.median_evaluations_to_success, 1)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _references(references: dict[str, ProblemReference | None], points: dict[PointKey, DftPoint]) -> str:
    parts = []
    for problem, ref in references.items():
        if ref is None:
            parts.append(f"{problem}: nothing labelled")
            continue
        lowest = points[(problem, ref.lowest_hash)].atoms.info
        origin = f"{lowest.get('backbone')} {lowest.get('method')} seed {lowest.get('seed')}"
        n = sum(p.problem == problem for p in points.values())
        parts.append(f"{problem}: E_min^DFT = {ref.e_min:.4f} eV ({origin}; {ref.lowest_bonds} S–S bond(s)), "
                     f"{n} labelled structure(s) in {ref.n_distinct} distinct minima")
    return "; ".join(parts) + "."


def write_report(out: Path, plan: BenchmarkPlan, runs: dict, scores: Sequence[RunScore], cells: Sequence[CellScore],
                 references: dict[str, ProblemReference | None], points: dict[PointKey, DftPoint],
                 failures: list[str], fits: dict[str, dict[str, Any] | None] | None = None) -> Path:
    """Every report file under ``out``; returns ``report.md``.  ``fits``: the ``.fit.json`` of each
    Δ-fit by backbone (:func:`fit_note`)."""
    out = Path(out)
    for name, rows in (("runs.csv", run_rows(scores)), ("cells.csv", cell_rows(cells)),
                       ("candidates.csv", candidate_rows(runs, points))):
        write_text_atomic(out / name, _csv(rows))
    figures = out / "figures"
    figure = success_vs_cpu(cells, figures).relative_to(out).as_posix()
    pictures = [minima_picture(p, ref, scores, runs, points, figures).relative_to(out).as_posix()
                for p, ref in references.items() if ref is not None]
    costs = f"{COSTS} {FIT_CACHE}" + "".join(f" Δ-fit of {fit_note(b, r)}." for b, r in (fits or {}).items())
    blocks = _blocks(plan, cells, references, points, figure, pictures, failures, costs)
    write_text_atomic(out / "report.md", "\n\n".join(text for kind, text in blocks if kind != "html") + "\n")
    write_html(blocks, out / "report.html", title="uipbench search benchmark")
    return out / "report.md"


def _blocks(plan: BenchmarkPlan, cells: Sequence[CellScore], references: dict, points: dict, figure: str,
            pictures: list[str], failures: list[str], costs: str = COSTS) -> list[Block]:
    s = plan.settings
    methods = ", ".join(METHOD_LABELS.get(m, m) for m in plan.methods)
    al = f"; active learning: {s.rounds} rounds, {s.label_per_round} labelled per round" if "al" in plan.methods else ""
    blocks: list[Block] = [
        ("md", "# Search benchmark: does the Δ-correction change which overlayer wins?"),
        ("md", f"Problems {', '.join(plan.problems)}; backbones {', '.join(plan.backbones)}; methods {methods}; "
               f"seeds {' '.join(map(str, plan.seeds))}; {s.algorithm} search, {s.budget} relaxations per run{al}. "
               f"The {s.label_top} lowest minima of every run get a DFT single point (the reference protocol of "
               f"each problem). A run succeeds when the DFT energy of its predicted minimum is within "
               f"{SUCCESS_THRESHOLD_EV} eV of the lowest DFT energy labelled for its problem, AdsorbML's threshold "
               f"(Lan et al., npj Comput. Mater. 9, 172 (2023)). DFT rank: the place of the predicted minimum among "
               f"the problem's labelled structures, grouped into distinct minima by the search's similarity rule "
               f"on DFT energies. Gap error: the predicted energy gap between a run's two lowest minima minus "
               f"their DFT gap."),
        ("md", f"**What a single point leaves out.** {CAVEAT}"),
        ("md", "## Results per problem, backbone and method"),
        ("md", cell_table(cells)),
        ("md", DENOMINATOR),
        ("md", f"Reference: {_references(references, points)}"),
        ("md", costs),
        ("md", "## Success rate against CPU time"),
        ("md", f"![success rate vs CPU time]({figure})"),
        ("md", "## Predicted minima and the DFT-lowest structure"),
        ("md", "Top views at the backbone geometries: the DFT-lowest structure found for the problem, then each "
               "distinct predicted minimum with its DFT rank and the runs that predicted it."),
    ]
    blocks += [("md", f"![predicted minima]({p})") for p in pictures]
    blocks.append(("md", "Per run: `runs.csv`; per cell: `cells.csv`; every candidate with its DFT energy: "
                         "`candidates.csv`; the labelled structures with provenance: `labelled.extxyz`."))
    if failures:
        blocks += [("md", "## Failures"), ("md", f"{len(failures)} failure(s) (details in `failures.json`): "
                                                 + "; ".join(failures[:20]) + (" …" if len(failures) > 20 else ""))]
    return blocks
