"""The regression report: regress.md + regress.html, tables/, figures/paired.{png,svg}, summary.json."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..harness.metrics import FIT_ERROR, MAE, N_TEST, get_metric
from ..harness.results import at_largest_size, largest_sizes
from .golden import golden_energy_changes
from .stats import SIGNIFICANCE_SE, compared_metrics, gate_rows, paired_stats, pairs

if TYPE_CHECKING:
    from .run import RegressResult

Blocks = list[tuple[str, str]]


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


def _digits(metric: str) -> int:
    """Decimals of a metric's values: 3 for fractions, correlations and forces (eV/Å), else 2."""
    m = get_metric(metric)
    return 3 if m.lower_is_better is False or m.unit == "eV/Å" else 2


def gate_markdown(comparison, rule, failures) -> str:
    """The gate cells as a Markdown table, each marked FAIL or pass."""
    failing = set(failures.index)
    lines = ["| system | model | n train | seeds | baseline | candidate | Δ (cand − base) mean ± std | 2·SEM "
             "| p (paired t) | significant | gate |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for idx, r in gate_rows(comparison, rule).iterrows():
        lines.append(f"| {r.system} | {_model_label(r)} | {r.train_size} | {r.n} | {_pm(r.baseline_mean, r.baseline_std)} | "
                     f"{_pm(r.candidate_mean, r.candidate_std)} | {_signed(r.diff_mean, r.diff_std)} | "
                     f"{SIGNIFICANCE_SE * r.diff_sem:.2f} | {_p(r.p_value)} | {'yes' if r.significant else 'no'} | "
                     f"{'FAIL' if idx in failing else 'pass'} |")
    return "\n".join(lines)


def all_metrics_markdown(comparison) -> str:
    """Every compared metric at the largest training size, with its verdict."""
    rows = at_largest_size(comparison)
    lines = ["| system | model | metric | n train | seeds | baseline | candidate | Δ mean ± std | p | change |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    order = {m: i for i, m in enumerate(compared_metrics())}
    rows = rows[rows.n > 0]  # e.g. no composition group with 3+ test structures: no Spearman ρ
    rows = rows.assign(_o=rows.metric.map(order)).sort_values(["system", "model", "aggregation", "_o"])
    for r in rows.itertuples(index=False):
        digits, unit = _digits(r.metric), get_metric(r.metric).unit
        flag = {"worse": "**worse**", "better": "better", "same": "–", "n/a": "n/a"}[r.verdict]
        lines.append(f"| {r.system} | {_model_label(r)} | {r.metric}{f' ({unit})' if unit else ''} | {r.train_size} | "
                     f"{r.n} | {_pm(r.baseline_mean, r.baseline_std, digits)} | "
                     f"{_pm(r.candidate_mean, r.candidate_std, digits)} | {_signed(r.diff_mean, r.diff_std, digits)} | "
                     f"{_p(r.p_value)} | {flag} |")
    return "\n".join(lines)


def _paired_panel(ax, part, metric: str) -> None:
    """One panel: each seed's pair joined by a line (red: candidate worse, green: better, grey: same)."""
    lower_better = get_metric(metric).lower_is_better
    for r in part.itertuples(index=False):
        worse = (r.candidate > r.baseline) if lower_better else (r.candidate < r.baseline)
        same = abs(r.candidate - r.baseline) <= 1e-9 * max(1.0, abs(r.baseline))
        colour = "0.6" if same else ("tab:red" if worse else "tab:green")
        ax.plot([0, 1], [r.baseline, r.candidate], "-", color=colour, lw=1.2, alpha=0.8)
        ax.plot([0, 1], [r.baseline, r.candidate], "o", color="0.2", ms=3.5)
        ax.annotate(str(int(r.seed)), (1.04, r.candidate), fontsize=6, va="center", color="0.35")


def paired_figure(results, baseline: str, candidate: str, out: Path, metric: str = MAE,
                  seeds: Sequence[int] | None = None) -> Path:
    """Per system (columns) and model (rows), at the largest training size: baseline vs candidate per seed,
    a line joining each seed's pair (red: candidate worse, green: better)."""
    from ..report.figures import save, subplots

    p = at_largest_size(pairs(results, baseline, candidate, (metric,), seeds))
    p = p[(p.model == "raw") | (p.descriptor == "embedding")]
    systems = sorted(p.system.unique(), key=lambda s: (s == "all", s))
    models = [("raw", "-")] + [("delta", a) for a in ("global", "species", "atomic")
                               if ((p.model == "delta") & (p.aggregation == a)).any()]
    fig, axes = subplots(len(models), max(1, len(systems)),
                             figsize=(max(4.2, 2.6 * len(systems)), 2.3 * len(models)), squeeze=False)
    for i, (model, agg) in enumerate(models):
        for j, system in enumerate(systems):
            ax = axes[i][j]
            part = p[(p.system == system) & (p.model == model) & (p.aggregation == agg)].sort_values("seed")
            _paired_panel(ax, part, metric)
            if not part.empty:
                s = paired_stats(part.baseline.to_numpy(), part.candidate.to_numpy())
                ax.set_title(f"{system} · {'raw' if model == 'raw' else 'Δ ' + agg} (n={int(part.train_size.iloc[0])})"
                             f"\nΔ = {_signed(s.mean, s.std)}", fontsize=8)
            ax.set_xticks([0, 1], [baseline, candidate], fontsize=6.5)
            ax.set_xlim(-0.3, 1.3)
            ax.tick_params(axis="y", labelsize=7)
            if j == 0:
                ax.set_ylabel(get_metric(metric).axis_label, fontsize=7)
    fig.suptitle(f"{baseline} → {candidate}: {get_metric(metric).label} per seed, largest training set\n"
                 f"(lines join the two backbones on the same split; red: candidate worse, green: better)", fontsize=8)
    fig.tight_layout()
    return save(fig, out, "paired")[0]


def _relaxers(members, datasets_root: Path | None) -> dict[str, str]:
    from ..datasets.io import load_card

    out = {}
    for m in members:
        try:
            relaxer = load_card(m, datasets_root).get("generator", {}).get("relaxer")
        except ValueError:
            continue
        if relaxer:
            out[m] = relaxer
    return out


@dataclass(frozen=True)
class _Context:
    """What the report says about the run besides the comparison: data, widths, sizes, seeds."""

    meta: dict
    widths: dict[str, int]
    n_test: dict[str, float]
    sizes: dict[str, int]
    seeds: list[int]

    @property
    def data(self) -> dict:
        return self.meta.get("data", {})


def _context(result: RegressResult, results, meta: dict) -> _Context:
    from ..adapters.card import get_card

    stored = meta.get("backbones", {})
    names = (result.baseline, result.candidate)
    widths = {n: int(stored.get(n, {}).get("metadata", {}).get("width") or get_card(n).embedding_width) for n in names}
    used = results[results.backbone.isin(names) & (results.metric == N_TEST)]
    seeds = sorted(int(s) for s in result.comparison.seeds.str.split().explode().unique())
    return _Context(meta, widths, used.groupby("system")["value"].max().to_dict(),
                    largest_sizes(results).to_dict(), seeds)


def _intro(result: RegressResult, ctx: _Context) -> Blocks:
    b, c, code = result.baseline, result.candidate, result.exit_code
    data_line = ", ".join(f"{k}: {v.get('structures')} structures" for k, v in ctx.data.items()) or "?"
    wb, wc = ctx.widths[b], ctx.widths[c]
    return [
        ("md", f"# Regression report: {b} → {c}"),
        ("md", f"**Verdict: {'FAIL' if code else 'PASS'}** (exit code {code}): "
               + (f"{len(result.failures)} gate cell(s) worse beyond the tolerance."
                  if code else "no gate cell is worse beyond the tolerance.")),
        ("md", f"Rule: {result.rule.describe()}. Exit codes: 0 pass, 1 regression, 2 bad input."),
        ("md", f"Data: {data_line} (protocol `{ctx.meta.get('protocol', {}).get('name', '?')}`). Seeds {ctx.seeds}: "
               f"the same seed gives both backbones the same train/test split, so each seed is a pair. Largest "
               f"training size per system: {_per_system(ctx.sizes)}; test structures per split: "
               f"{_per_system(ctx.n_test)}. Δ (cand − base) > 0 means the candidate has the "
               f"larger value (worse for errors, better for Spearman ρ and lowest-found fraction)."),
        ("md", f"Embedding widths: {b} {wb}, {c} {wc}. "
               + ("Different widths: the Δ-metrics are errors in energy and compare fine; the embeddings "
                  "themselves (golden fingerprints) are not compared across backbones."
                  if wb != wc else "Same width, but the embeddings of two different models still live in "
                                   "different spaces: only metrics and energies are compared, never the "
                                   "fingerprints.")),
    ]


def _cautions(result: RegressResult, ctx: _Context, datasets_root: Path | None) -> Blocks:
    blocks: Blocks = []
    small = [s for s, n in ctx.n_test.items() if n < 5]
    if small:
        structures = {k: v.get("structures") for k, v in ctx.data.items()}
        blocks.append(("md", f"Caution, small data: only {', '.join(f'{s}: {int(ctx.n_test[s])}' for s in small)} "
                             f"test structures per split (datasets: {_per_system(structures) or '?'} structures). "
                             f"The seeds redraw the test set from the same few structures, so they are not "
                             f"independent samples: the standard error (and the significance flag) understates "
                             f"the real uncertainty, and a difference is only as general as these few "
                             f"structures. Treat the verdict as indicative until the datasets are larger."))
    relaxed_by = {m: r for m, r in _relaxers(ctx.data, datasets_root).items() if r in (result.baseline, result.candidate)}
    if relaxed_by:
        blocks.append(("md", f"Note: the 'relaxed' structures of {', '.join(sorted(relaxed_by))} were relaxed with "
                             f"{', '.join(sorted(set(relaxed_by.values())))}, one of the two backbones compared: "
                             f"they sit at its minima, which may favour it or not; see predictions per structure "
                             f"in sweep/predictions.csv."))
    return blocks


def _comparison_blocks(result: RegressResult, figure: Path) -> Blocks:
    rule = result.rule
    return [
        ("md", f"## Gate: {'/'.join(rule.models)} {rule.metric} at the largest training size "
               f"({get_metric(rule.metric).unit}, mean ± std over seeds)"),
        ("md", gate_markdown(result.comparison, rule, result.failures)),
        ("md", "## Every metric at the largest training size (paired over seeds)"),
        ("md", "“worse”/“better”: the paired mean difference is beyond 2 standard errors; “–”: not "
               "significant (with few seeds, 2 standard errors is a looser bar than p < 0.05: read the p-value "
               "too). Metrics without a value on any seed (e.g. Spearman ρ when no composition has 3+ test "
               "structures) are left out. All training sizes are in tables/paired_differences.csv."),
        ("md", all_metrics_markdown(result.comparison)),
        ("md", "## Paired plot"),
        ("md", f"![paired plot]({figure.relative_to(result.out).as_posix()})"),
    ]


def _golden_blocks(result: RegressResult, golden_dir: Path | None, table_dir: Path) -> Blocks:
    energies = golden_energy_changes(result.baseline, result.candidate, golden_dir)
    if energies is None:
        return []
    energies.to_csv(table_dir / "golden_energy_changes.csv", index=False)
    lines = ["| structure | atoms | baseline (eV) | candidate (eV) | change (meV/atom) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r.structure} | {r.n_atoms} | {r.baseline_ev:.4f} | {r.candidate_ev:.4f} | "
              f"{r.change_mev_per_atom:+.1f} |" for r in energies.itertuples(index=False)]
    return [("md", "## Energies on the golden structures (reports/baselines, no DFT)"),
            ("md", "Total energies of both backbones on the fixed generator structures; the change is "
                   "candidate − baseline. Energies are comparable across backbones; embedding fingerprints "
                   "are not."),
            ("md", "\n".join(lines))]


def _closing(result: RegressResult, results, sweep_dir: Path) -> Blocks:
    blocks: Blocks = []
    errors = results[results.backbone.isin([result.baseline, result.candidate]) & (results.metric == FIT_ERROR)]
    if not errors.empty:
        blocks.append(("md", f"{len(errors)} Δ cell(s) could not be fitted and are left out of the pairs, e.g.: "
                             f"{errors.note.iloc[0]}"))
    blocks += [("md", f"Note: {note}.") for note in result.notes]
    blocks.append(("md", f"Sweep results (both backbones) in `{sweep_dir.relative_to(result.out).as_posix()}/`; "
                         f"paired differences in `tables/paired_differences.csv`; the gate decision in "
                         f"`summary.json`."))
    return blocks


def _summary(result: RegressResult, ctx: _Context) -> dict:
    rule = result.rule
    return {"baseline": result.baseline, "candidate": result.candidate, "exit_code": result.exit_code,
            "rule": rule.describe(), "tolerance": rule.tolerance, "gate_metric": rule.metric,
            "gate_models": list(rule.models), "seeds": ctx.seeds, "widths": ctx.widths, "notes": result.notes,
            "gate": json.loads(gate_rows(result.comparison, rule).to_json(orient="records")),
            "failures": json.loads(result.failures.to_json(orient="records"))}


def write_regress_report(result: RegressResult, results, sweep_dir: Path, golden_dir: Path | None = None,
                         datasets_root: Path | None = None, metadata: dict | None = None) -> Path:
    """regress.md + regress.html + tables/ + figures/ in ``result.out``; returns regress.md.

    ``results`` and ``metadata``: the sweep's, as :func:`uipbench.harness.results.load_run` reads
    them (``metadata`` None: read from ``sweep_dir``).
    """
    from .._atomic import write_json_atomic, write_text_atomic
    from ..harness.results import load_run
    from ..report.html import write_html

    out = result.out
    table_dir = out / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)
    result.comparison.to_csv(table_dir / "paired_differences.csv", index=False)
    result.failures.to_csv(table_dir / "gate_failures.csv", index=False)
    figure = paired_figure(results, result.baseline, result.candidate, out / "figures", result.rule.metric, None)
    ctx = _context(result, results, load_run(sweep_dir).metadata if metadata is None else metadata)
    blocks = [*_intro(result, ctx), *_cautions(result, ctx, datasets_root), *_comparison_blocks(result, figure),
              *_golden_blocks(result, golden_dir, table_dir), *_closing(result, results, sweep_dir)]
    write_text_atomic(out / "regress.md", "\n\n".join(text for _, text in blocks) + "\n")
    write_html([(k, t.replace("**", "")) for k, t in blocks], out / "regress.html",
               f"Regression report: {result.baseline} → {result.candidate}")
    write_json_atomic(out / "summary.json", _summary(result, ctx))
    return out / "regress.md"
