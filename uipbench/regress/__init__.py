"""Backbone-update regression testing: paired sweeps, golden files, and the rules that decide.

Two questions, two tools:

1. **Did an update make the benchmark worse?**  :func:`run_regress` (:mod:`.run`) sweeps the
   baseline and the candidate backbone on the same systems, training sets and seeds, pairs every
   cell by seed and reports the change candidate − baseline as a paired difference over seeds
   (:mod:`.stats`: mean, standard deviation, standard error, paired t-test, significance).  The
   gate rule (:class:`GateRule`) turns it into the exit code: ``0`` pass, ``1`` regression,
   ``2`` bad input (from the CLI).  The report (:mod:`.report`) writes Markdown, HTML, tables,
   the paired plot and ``summary.json``.  Δ-metrics are errors in energy, so they are comparable
   across backbones of different embedding widths; the report names both widths.

2. **Is this backbone still the backbone we benchmarked?**  Golden files (:mod:`.golden`)
   ``reports/baselines/<backbone>.json`` hold the backbone's energies and embedding fingerprints
   on fixed generator structures; a check lists every quantity out of the code's tolerances.  A
   golden file is only ever compared with its own backbone.
"""
from __future__ import annotations

from .golden import (DEFAULT_GOLDEN_TOLERANCES, GOLDEN_DIR, GOLDEN_FORMAT, GOLDEN_STRUCTURES, GOLDEN_TOLERANCES,
                     GoldenMismatch, _load_for_golden, assert_matches_golden, check_golden, compare_golden,
                     fingerprint, golden_energy_changes, golden_path, golden_record, golden_structures,
                     load_golden, validate_golden, write_golden)
from .report import all_metrics_markdown, gate_markdown, paired_figure, write_regress_report
from .run import REGRESS_DIR, RegressResult, run_regress
from .stats import (COMPARED_METRICS, DEFAULT_TOLERANCE, MAE, PAIR_KEYS, SIGNIFICANCE_SE, GateRule, PairedStats,
                    RegressError, at_largest_size, compare, compared_metrics, directed, exit_code, gate, gate_rows,
                    paired_stats, pairs, verdict, worse_by)

__all__ = [
    "COMPARED_METRICS", "DEFAULT_GOLDEN_TOLERANCES", "DEFAULT_TOLERANCE", "GOLDEN_DIR", "GOLDEN_FORMAT",
    "GOLDEN_STRUCTURES", "GOLDEN_TOLERANCES", "MAE", "PAIR_KEYS", "REGRESS_DIR", "SIGNIFICANCE_SE", "GateRule",
    "GoldenMismatch", "PairedStats", "RegressError", "RegressResult", "all_metrics_markdown", "assert_matches_golden",
    "at_largest_size", "check_golden", "compare", "compare_golden", "compared_metrics", "directed", "exit_code",
    "fingerprint", "gate", "gate_markdown", "gate_rows", "golden_energy_changes", "golden_path", "golden_record",
    "golden_structures", "load_golden", "paired_figure", "paired_stats", "pairs", "run_regress", "validate_golden",
    "verdict", "worse_by", "write_golden", "write_regress_report",
]
