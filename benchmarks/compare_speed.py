"""Compare a speed run (benchmarks/test_speed.py) with the saved baselines: prints current / baseline ratios.

    python benchmarks/compare_speed.py [--storage reports/baselines/speed] [--current .cache/speed]
                                       [--threshold 1.3] [--fail]

``--storage``: pytest-benchmark storage written with ``--benchmark-save=TAG`` (one TAG per
environment: ``core``, ``chgnet``, ``sevennet``, ...); the newest ``*_TAG.json`` is the baseline of TAG.
``--current``: a folder of ``TAG.json`` files written with ``--benchmark-json``.  Ratios current / baseline
(> 1 = slower now) of the minimum over rounds (other processes only ever add time, so the minimum is the
steadiest statistic) and of the median; a minimum ratio above ``--threshold`` is flagged, and with
``--fail`` makes the exit code 1.  On a loaded machine (e.g. DFT labelling on the same cores) timings move
by 30–50 % with no code change: the load average is printed; compare on an idle machine before acting.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def medians(path: Path) -> dict[str, dict]:
    data = json.loads(path.read_text())
    return {b["fullname"].split("::")[-1]: {"min": b["stats"]["min"], "median": b["stats"]["median"],
                                            "extra": b.get("extra_info", {})} for b in data["benchmarks"]}


def baselines(storage: Path) -> dict[str, Path]:
    """Newest saved run per tag (file names NNNN_TAG.json, counter first)."""
    found: dict[str, Path] = {}
    for path in sorted(storage.rglob("*.json"), key=lambda p: p.name):
        counter, _, tag = path.stem.partition("_")
        if counter.isdigit() and tag:
            found[tag] = path  # sorted by counter: the last one wins
    return found


def compare(storage: Path, current: Path, threshold: float) -> tuple[list[tuple], list[str]]:
    base = baselines(storage)
    if not base:
        raise SystemExit(f"no saved baseline in {storage}: run `make bench-baseline` first")
    rows, problems = [], []
    runs = sorted(current.glob("*.json")) if current.is_dir() else []
    if not runs:
        raise SystemExit(f"no current run in {current}: run `make bench-compare` (or pytest ... --benchmark-json)")
    for run in runs:
        tag = run.stem
        if tag not in base:
            problems.append(f"{tag}: no saved baseline (tags with one: {', '.join(sorted(base))})")
            continue
        old, new = medians(base[tag]), medians(run)
        for name in sorted(set(old) | set(new)):
            if name not in old or name not in new:
                problems.append(f"{tag}: {name} only in the {'current run' if name in new else 'baseline'}")
                continue
            ratio = new[name]["min"] / old[name]["min"]
            median_ratio = new[name]["median"] / old[name]["median"]
            flag = "SLOWER" if ratio > threshold else ("faster" if ratio < 1 / threshold else "")
            rows.append((tag, name, old[name]["min"], new[name]["min"], ratio, flag, base[tag].name, median_ratio))
    return rows, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", type=Path, default=ROOT / "reports" / "baselines" / "speed")
    parser.add_argument("--current", type=Path, default=ROOT / ".cache" / "speed")
    parser.add_argument("--threshold", type=float, default=1.3)
    parser.add_argument("--fail", action="store_true", help="exit 1 when a ratio is above the threshold")
    args = parser.parse_args(argv)
    rows, problems = compare(args.storage, args.current, args.threshold)
    print("| env | benchmark | baseline min (ms) | current min (ms) | ratio of min | ratio of median | |")
    print("|---|---|---:|---:|---:|---:|---|")
    for tag, name, old, new, ratio, flag, _, median_ratio in rows:
        print(f"| {tag} | {name} | {1e3 * old:.1f} | {1e3 * new:.1f} | {ratio:.2f} | {median_ratio:.2f} | {flag} |")
    for line in problems:
        print(f"note: {line}", file=sys.stderr)
    slower = [r for r in rows if r[5] == "SLOWER"]
    print(f"\n{len(rows)} benchmarks compared, {len(slower)} slower than {args.threshold:g}x the baseline "
          f"(baselines: {', '.join(sorted({r[6] for r in rows}))})")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    print(f"load average {load:.1f} on {cores} cores" + (": the machine is busy, timings are unreliable"
                                                       if load > 0.75 * cores else ""))
    return 1 if (args.fail and slower) else 0


if __name__ == "__main__":
    sys.exit(main())
