"""Embedding throughput per backbone: batched vs one-by-one, and vs the package's plain energy call.

Run by ``make benchmarks`` (or directly): the driver, in the main environment, starts one
measurement per ready backbone inside that backbone's environment and prints a Markdown table
of ratios; results go to ``reports/benchmarks/embed.json``.

    .venv/bin/python benchmarks/bench_embed.py [--backbones NAME ...] [--repeats 3]

All timings of one backbone are taken in one process, side by side, on the same 12 Cu(111)+S
slabs from the generator plan (2x2 and 3x3 cells), best of ``repeats`` after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, repeats: int, random_weights: bool) -> dict:
    """Runs inside the backbone's environment."""
    from uipbench.adapters.registry import load_backbone
    from uipbench.datasets.generate import plan

    structures = [e.atoms for e in plan("cu-s", 12)]
    backbone = load_backbone(name, in_process=True, random_weights=random_weights)
    prepared = [backbone.prepare(a) for a in structures]
    calc = backbone.calculator()

    def plain_calculator():
        for atoms in prepared:
            atoms = atoms.copy()
            atoms.calc = calc
            atoms.get_potential_energy()

    timings = {
        "calculator_one_by_one": _best(plain_calculator, repeats),
        "embed_one_by_one": _best(lambda: [backbone.embed([a]) for a in structures], repeats),
        "embed_batched": _best(lambda: backbone.embed(structures), repeats),
        "embed_one_by_one_with_forces": _best(lambda: [backbone.embed([a], forces=True) for a in structures],
                                              repeats),
    }
    if backbone.card.family == "chgnet":  # the package's own batched, energy-only call
        from pymatgen.io.ase import AseAtomsAdaptor

        pmg = [AseAtomsAdaptor().get_structure(a) for a in prepared]
        timings["package_batched_energy"] = _best(
            lambda: backbone.model.predict_structure(pmg, task="e", batch_size=backbone.batch_size), repeats)
    return {"backbone": name, "structures": len(structures), "atoms": sum(len(a) for a in structures),
            "random_weights": random_weights, "seconds": timings}


def ratios(result: dict) -> dict:
    t = result["seconds"]
    out = {
        "embed_1x1_over_calculator": t["embed_one_by_one"] / t["calculator_one_by_one"],
        "embed_1x1_forces_over_calculator": t["embed_one_by_one_with_forces"] / t["calculator_one_by_one"],
        "batched_speedup_over_1x1": t["embed_one_by_one"] / t["embed_batched"],
    }
    if "package_batched_energy" in t:
        out["embed_batched_over_package_batched"] = t["embed_batched"] / t["package_batched_energy"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", nargs="*")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--inner", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--random-weights", action="store_true")
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(measure(args.inner, args.repeats, args.random_weights)))
        return 0
    from uipbench.adapters.envs import ensure
    from uipbench.adapters.registry import all_status, get_card

    rows = []
    for s in all_status():
        if args.backbones and s.name not in args.backbones:
            continue
        random_weights = not s.weights_present
        spec = ensure(get_card(s.name))
        cmd = [str(spec.python), __file__, "--inner", s.name, "--repeats", str(args.repeats)]
        if random_weights:
            cmd.append("--random-weights")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"{s.name}: failed\n{proc.stderr[-1500:]}", file=sys.stderr)
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["ratios"] = ratios(result)
        rows.append(result)
    print("| backbone | weights | calculator 1×1 (s) | embed 1×1 / calculator | embed+forces 1×1 / calculator "
          "| batched speed-up | embed batched / package batched energy |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        q = r["ratios"]
        print(f"| {r['backbone']} | {'random' if r['random_weights'] else 'real'} | "
              f"{r['seconds']['calculator_one_by_one']:.2f} | {q['embed_1x1_over_calculator']:.2f} | "
              f"{q['embed_1x1_forces_over_calculator']:.2f} | {q['batched_speedup_over_1x1']:.2f} | "
              f"{q.get('embed_batched_over_package_batched', float('nan')):.2f} |")
    out = ROOT / "reports" / "benchmarks" / "embed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else []
    measured = {r["backbone"] for r in rows}
    merged = [r for r in previous if r["backbone"] not in measured] + rows  # keep other backbones' results
    out.write_text(json.dumps(merged, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
