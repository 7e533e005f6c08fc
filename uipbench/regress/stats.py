"""Paired statistics over seeds and the gate rule that decides a regression (pure, no I/O).

The change candidate − baseline of every (system, model, descriptor, aggregation, training
size, metric) cell is a paired difference over seeds (same seed = same split for both
backbones): mean, standard deviation (ddof=1), standard error, paired t-test p-value and a
significance flag (|mean| > :data:`SIGNIFICANCE_SE` standard errors).

**Gate rule** (the exit code): at the largest training size of each system, for the gate metric
(default the *raw* energy MAE, meV/atom), the candidate fails when it is worse by more than
``tolerance`` (default 1 meV/atom) on the seed mean **and** that difference is significant.
With a single seed there is no spread; the mean alone decides.

Which way is worse comes from the metric registry (:mod:`uipbench.harness.metrics`): every
registered metric with a direction is compared, and nothing here names a metric but the default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..harness.metrics import MAE, Metric, get_metric, metrics
from ..harness.results import at_largest_size

DEFAULT_TOLERANCE = 1.0  # meV/atom on the gate metric
SIGNIFICANCE_SE = 2.0  # a paired mean difference beyond this many standard errors is significant
PAIR_KEYS = ["system", "model", "descriptor", "aggregation", "train_size", "metric"]


class RegressError(ValueError):
    """A regression comparison cannot be made (unknown backbone, missing results, ...)."""


def compared_metrics() -> tuple[str, ...]:
    """Names of the registered metrics with a direction (lower or higher is better), in registry order."""
    return tuple(m.name for m in metrics() if m.lower_is_better is not None)


def directed(name: str, what: str = "metric") -> Metric:
    """The registered metric ``name``, which must have a direction (else a RegressError naming the choices)."""
    try:
        metric = get_metric(name)
    except ValueError:
        raise RegressError(f"unknown {what} {name!r}; choose from {', '.join(compared_metrics())}") from None
    if metric.lower_is_better is None:
        raise RegressError(f"{what} {name!r} ({metric.label}) has no direction, so it cannot be better or worse; "
                           f"choose from {', '.join(compared_metrics())}")
    return metric


#: the metrics compared when this module was imported (the CLI's choices); code asks :func:`compared_metrics`
COMPARED_METRICS = compared_metrics()


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
    return diff_mean if directed(metric).lower_is_better else -diff_mean


def verdict(metric: str, stats: PairedStats) -> str:
    """'worse' / 'better' when the change is significant, else 'same' (or 'n/a' without pairs)."""
    if stats.n == 0:
        return "n/a"
    if not stats.significant:
        return "same"
    return "worse" if worse_by(metric, stats.mean) > 0 else "better"


def pairs(results, baseline: str, candidate: str, metrics: Sequence[str] = (MAE,),
          seeds: Sequence[int] | None = None):
    """Per-seed values of both backbones side by side, joined on the cell and the seed."""
    import pandas as pd

    if isinstance(metrics, str):
        metrics = (metrics,)
    rows = results[results.metric.isin(list(metrics))]
    if seeds is not None:
        rows = rows[rows.seed.isin(list(seeds))]
    keys = [*PAIR_KEYS, "seed"]
    b = rows[rows.backbone == baseline].drop_duplicates(keys, keep="last").set_index(keys)["value"]
    c = rows[rows.backbone == candidate].drop_duplicates(keys, keep="last").set_index(keys)["value"]
    return pd.concat({"baseline": b, "candidate": c}, axis=1, join="inner").reset_index()


def _summary(key: tuple, part) -> dict:
    part = part.sort_values("seed")
    s = paired_stats(part.baseline.to_numpy(), part.candidate.to_numpy())
    metric = key[-1]
    return {**dict(zip(PAIR_KEYS, key)),
            "seeds": " ".join(str(int(v)) for v in part.seed),
            "baseline_mean": float(part.baseline.mean()), "baseline_std": float(part.baseline.std(ddof=1)),
            "candidate_mean": float(part.candidate.mean()), "candidate_std": float(part.candidate.std(ddof=1)),
            "n": s.n, "diff_mean": s.mean, "diff_std": s.std, "diff_sem": s.sem, "t": s.t,
            "p_value": s.p_value, "significant": s.significant,
            "worse_by": worse_by(metric, s.mean) if s.n else math.nan, "verdict": verdict(metric, s)}


def compare(results, baseline: str, candidate: str, metrics: Sequence[str] | None = None,
            seeds: Sequence[int] | None = None, where: str = "the results"):
    """One row per (system, model, descriptor, aggregation, training size, metric): paired stats over seeds.

    ``results`` is a sweep's tidy table holding both backbones; ``metrics`` default every metric
    with a direction.  Errors (clear messages) when a backbone has no results or the two share no cell.
    """
    import pandas as pd

    metrics = compared_metrics() if metrics is None else tuple(metrics)
    rows = results[results.metric.isin(list(metrics))]
    if seeds is not None:
        rows = rows[rows.seed.isin(list(seeds))]
    for role, name in (("baseline", baseline), ("candidate", candidate)):
        if not (rows.backbone == name).any():
            raise RegressError(f"no results for {role} backbone {name!r} in {where}"
                               + (f" (seeds {list(seeds)})" if seeds is not None else ""))
    paired = pairs(rows, baseline, candidate, metrics)
    if paired.empty:
        raise RegressError(f"{baseline} and {candidate} share no (system, training size, seed) cell in {where}")
    table = pd.DataFrame([_summary(key, part) for key, part in paired.groupby(PAIR_KEYS, sort=True)])
    table["train_size"] = table["train_size"].astype(int)
    return table


@dataclass(frozen=True)
class GateRule:
    """Which cells decide the exit code, and by how much the candidate may be worse.

    Checked when made: a rule with a negative tolerance or a metric without a direction cannot exist.
    """

    metric: str = MAE
    models: tuple[str, ...] = ("raw",)
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if not self.tolerance >= 0:
            raise RegressError(f"tolerance must be >= 0, got {self.tolerance}")
        directed(self.metric, "gate metric")

    def describe(self) -> str:
        unit = get_metric(self.metric).unit
        return (f"the candidate fails when, at the largest training size of a system, its {'/'.join(self.models)} "
                f"`{self.metric}` is worse than the baseline's by more than {self.tolerance:g} {unit} on the "
                f"mean over seeds (paired by seed) and that change is significant (|mean| > "
                f"{SIGNIFICANCE_SE:g} standard errors of the paired difference; with one seed the mean alone "
                f"decides)").replace("  ", " ")


def gate_rows(comparison, rule: GateRule):
    """The rows of ``comparison`` the rule looks at: its metric and models, at the largest training size."""
    rows = at_largest_size(comparison)
    return rows[(rows.metric == rule.metric) & rows.model.isin(list(rule.models))]


def gate(comparison, rule: GateRule = GateRule()):
    """The rows of ``comparison`` that break ``rule`` (empty = pass)."""
    rows = gate_rows(comparison, rule)
    rows = rows[rows.n > 0]
    if rows.empty:
        raise RegressError(f"no paired {'/'.join(rule.models)} {rule.metric} cells to decide on")
    failing = (rows.worse_by > rule.tolerance) & (rows.significant | (rows.n == 1))
    return rows[failing]


def exit_code(failures) -> int:
    """0 when nothing breaks the gate rule, 1 otherwise."""
    return 1 if len(failures) else 0
