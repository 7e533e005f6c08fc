"""The search engine, measured: AGOX's random structure search against uipbench's (ase + ase-ga).

Same problem (a card from ``problems/``), same backbone (CHGNet 0.3.0, its own ASE calculator), same
budget (relaxations per run), same relaxation (ASE BFGS, fmax 0.05 eV/Å, at most 300 steps), same
seeds. Each engine's run is a separate process in its own environment, timed in process CPU seconds
(user + system of the process and its children):

* **uipbench**: ``uipbench search PROBLEM --backbone chgnet-0.3.0 --budget N --seed S`` (candidates from
  ase-ga's StartGenerator inside the card's height range, minimum distances from the card);
* **AGOX** 3.11.1: ``benchmarks/agox_rss.py`` (RandomGenerator in the same confinement box,
  LocalOptimizationEvaluator with the same calculator), run by the interpreter of an environment that
  holds ``agox==3.11.1 ase==3.27.0 numpy==2.2.6 chgnet==0.4.2`` (``--agox-python``; AGOX is GPL-3.0-only
  and not a dependency of uipbench: nothing of it is imported here, and the environment is not shipped).

Success of a run = its best energy is within ``--threshold`` (0.1 eV) of the lowest energy any run of
either engine found on this problem (the backbone's best-known minimum; an engine comparison, so the
backbone's energies are the judge, not DFT). Results: ``reports/benchmarks/engines.json``.

    .venv/bin/python benchmarks/bench_engines.py --problem cu-s3-3x3 --budget 10 --seeds 0 1 2 \\
        --agox-python /path/to/agox-env/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from uipbench._interrupt import children_cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
BACKBONE = "chgnet-0.3.0"


def timed(command: list[str], env: dict[str, str], cwd: Path | None = None
          ) -> tuple[float, float, subprocess.CompletedProcess]:
    """CPU seconds (the process and everything it started) and wall seconds of one command."""
    cpu, wall = children_cpu_seconds(), time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=cwd)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return children_cpu_seconds() - cpu, time.perf_counter() - wall, proc


def uipbench_run(problem: str, budget: int, seed: int, out: Path, env: dict[str, str]) -> dict:
    folder = out / "uipbench" / f"seed-{seed}"
    command = [str(ROOT / ".venv/bin/uipbench"), "search", problem, "--backbone", BACKBONE, "--budget", str(budget),
               "--seed", str(seed), "--out", str(folder), "--no-progress"]
    cpu, wall, _ = timed(command, env)
    summary = json.loads((folder / "search.json").read_text())
    relax_cpu = summary["timing"]["cpu_seconds_per_relaxation"]["total"]
    return {"engine": "uipbench (ase + ase-ga)", "seed": seed, "best_energy": summary["best_energy"],
            "cpu_seconds": cpu, "relaxation_cpu_seconds": relax_cpu, "wall_seconds": wall,
            "evaluations": summary["evaluations"]}


def agox_run(problem: str, budget: int, seed: int, out: Path, python: str, env: dict[str, str]) -> dict:
    folder = out / "agox" / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [python, str(ROOT / "benchmarks" / "agox_rss.py"), "--problem", problem, "--budget", str(budget),
               "--seed", str(seed), "--out", str(folder)]
    cpu, wall, _ = timed(command, {**env, "PYTHONPATH": str(ROOT)}, cwd=folder)  # AGOX writes plots into its cwd
    result = json.loads((folder / "result.json").read_text())
    return {"engine": "AGOX 3.11.1", "seed": seed, "best_energy": result["best_energy"], "cpu_seconds": cpu,
            "relaxation_cpu_seconds": result["relaxation_cpu_seconds"], "wall_seconds": wall,
            "evaluations": result["evaluations"]}


def summarise(runs: list[dict], threshold: float) -> dict:
    best = min(r["best_energy"] for r in runs)
    for r in runs:
        r["above_best_known"] = r["best_energy"] - best
        r["success"] = r["above_best_known"] <= threshold
    engines = {}
    for name in sorted({r["engine"] for r in runs}):
        mine = [r for r in runs if r["engine"] == name]
        engines[name] = {"runs": len(mine), "successes": sum(r["success"] for r in mine),
                         "success_rate": sum(r["success"] for r in mine) / len(mine),
                         "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in mine),
                         "median_relaxation_cpu_seconds": statistics.median(r["relaxation_cpu_seconds"] for r in mine),
                         "median_above_best_known": statistics.median(r["above_best_known"] for r in mine)}
    return {"best_known_energy": best, "engines": engines}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default="cu-s3-3x3")
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--agox-python", required=True)
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the runs (default: a new temporary folder; an existing one is refused, "
                             "since finished searches there would be resumed, not timed)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks" / "engines.json")
    args = parser.parse_args()
    if args.work is None:
        import tempfile

        args.work = Path(tempfile.mkdtemp(prefix="bench_engines-"))
    elif args.work.exists():
        parser.error(f"--work {args.work} exists: its finished runs would be resumed, not timed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    load_start = os.getloadavg()
    runs = []
    for seed in args.seeds:  # the engines take turns, so load changes hit both alike
        runs.append(uipbench_run(args.problem, args.budget, seed, args.work, env))
        runs.append(agox_run(args.problem, args.budget, seed, args.work, args.agox_python, env))
        print(json.dumps(runs[-2:], indent=1), flush=True)
    summary = summarise(runs, args.threshold)
    ours, theirs = summary["engines"]["uipbench (ase + ase-ga)"], summary["engines"]["AGOX 3.11.1"]
    report = {"benchmark": "search engines: AGOX random search vs uipbench random search", "problem": args.problem,
              "backbone": BACKBONE, "budget": args.budget, "seeds": args.seeds, "threshold_eV": args.threshold,
              "machine": {"cpus": os.cpu_count(), "load_average_at_start": load_start,
                          "load_average_at_end": os.getloadavg()},
              **summary,
              "notes": ["cpu_seconds: the whole command (start-up, model loading, search), process and children",
                        "relaxation_cpu_seconds: uipbench: the relaxations' own CPU (search.json timing); AGOX: the "
                        "whole AGOX.run loop (generation, relaxations, database writes)"],
              "ratios": {"uipbench_over_agox_median_cpu": ours["median_cpu_seconds"] / theirs["median_cpu_seconds"],
                         "uipbench_relaxations_over_agox_loop_median_cpu":
                             ours["median_relaxation_cpu_seconds"] / theirs["median_relaxation_cpu_seconds"]},
              "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps({k: report[k] for k in ("engines", "ratios")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
