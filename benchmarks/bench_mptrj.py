"""Throughput and peak memory of ``uipbench mptrj-envs`` on synthetic MPtrj-format JSON.

    python benchmarks/bench_mptrj.py                      # 50 000 and 200 000 frames, workers 1 and 2
    python benchmarks/bench_mptrj.py --frames 20000 --workers 1

Writes ``reports/benchmarks/mptrj.json`` and prints a Markdown table.  The synthetic files go to
``--tmp`` (default ``/tmp/uipbench-bench-mptrj``) and are deleted afterwards unless ``--keep``.

Synthetic data: a pool of random small periodic structures (2–8 atoms, cells 3–7 Å; elements from
S, Cu, Ag, Au, O, Fe, Li, Zn; about 40 % of them contain S) serialised once in the MPtrj layout
(pymatgen ``Structure.as_dict()`` plus energies, forces, stress, magmoms), then written repeatedly
under new material/frame ids, 10 frames per material.  Each counting run is a fresh process, so its
``ru_maxrss`` is the peak resident memory of that run alone (workers: ``RUSAGE_CHILDREN``, the largest
worker).  Throughput is frames read per wall-clock second of ``count_environments``; the JSON
splitter alone (the main process's share of the work) is timed again afterwards, in CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAMES_PER_MATERIAL = 10
ELEMENTS = ["S", "Cu", "Ag", "Au", "O", "Fe", "Li", "Zn"]


def _template(rng: np.random.Generator) -> str:
    """One frame in the MPtrj layout, serialised, up to (not including) its mp_id value and closing brace."""
    n = int(rng.integers(2, 9))
    with_s = rng.random() < 0.4
    symbols = list(rng.choice(ELEMENTS[1:], size=n))
    if with_s:
        k = int(rng.integers(1, n // 2 + 1))
        symbols[:k] = ["S"] * k
    cell = np.diag(rng.uniform(3.0, 7.0, 3)) + np.triu(rng.uniform(-0.5, 0.5, (3, 3)), 1)
    frac = rng.random((n, 3))
    xyz = frac @ cell
    structure = {
        "@module": "pymatgen.core.structure", "@class": "Structure", "charge": 0,
        "lattice": {"matrix": cell.tolist(), "pbc": [True, True, True],
                    "a": float(np.linalg.norm(cell[0])), "b": float(np.linalg.norm(cell[1])),
                    "c": float(np.linalg.norm(cell[2])), "alpha": 90.0, "beta": 90.0, "gamma": 90.0,
                    "volume": float(abs(np.linalg.det(cell)))},
        "properties": {},
        "sites": [{"species": [{"element": str(s), "occu": 1}], "abc": f.tolist(), "xyz": p.tolist(),
                   "label": str(s), "properties": {"magmom": float(rng.normal())}}
                  for s, f, p in zip(symbols, frac, xyz)],
    }
    energy = float(rng.normal(-5.0, 1.0) * n)
    frame = {"structure": structure, "uncorrected_total_energy": energy, "corrected_total_energy": energy - 0.3,
             "energy_per_atom": energy / n, "ef_per_atom": float(rng.normal()), "e_per_atom_relaxed": energy / n,
             "ef_per_atom_relaxed": float(rng.normal()), "force": rng.normal(0, 0.5, (n, 3)).tolist(),
             "stress": rng.normal(0, 2.0, (3, 3)).tolist(), "magmom": rng.normal(0, 1, n).tolist(),
             "bandgap": float(abs(rng.normal()))}
    return json.dumps(frame)[:-1] + ', "mp_id": '


def write_synthetic_mptrj(path: Path, n_frames: int, seed: int = 0, n_templates: int = 500) -> int:
    """Write ``n_frames`` frames in the MPtrj JSON layout, streaming; return the file size in bytes."""
    rng = np.random.default_rng(seed)
    templates = [_template(rng) for _ in range(n_templates)]
    picks = rng.integers(0, n_templates, n_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1 << 20) as fh:
        fh.write("{")
        for i in range(n_frames):
            m, f = divmod(i, FRAMES_PER_MATERIAL)
            mp = f'"mp-{m}"'
            if f == 0:
                fh.write(("}, " if i else "") + mp + ": {")
            else:
                fh.write(", ")
            fh.write(f'"mp-{m}-{f}": ' + templates[picks[i]] + mp + "}")
        fh.write("}}" if n_frames else "}")
    return path.stat().st_size


def _child(path: str, workers: int) -> None:
    """Count one file in this (fresh) process and print a JSON record on stdout."""
    from uipbench.mptrj import CountSpec, count_environments, iter_json_raw_frames

    before = resource.getrusage(resource.RUSAGE_SELF)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = count_environments(path, CountSpec(), workers=workers, progress=False)
    wall = time.perf_counter() - started
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_main = me.ru_utime + me.ru_stime - before.ru_utime - before.ru_stime
    cpu_workers = kids.ru_utime + kids.ru_stime
    n = result.metadata.frames_read
    split_started = time.process_time()
    n_split = sum(1 for _ in iter_json_raw_frames(path))
    split_cpu = time.process_time() - split_started
    record = {
        "frames": n, "skipped": result.metadata.frames_skipped,
        "wall_s": wall, "frames_per_s": n / wall,
        "cpu_main_s": cpu_main, "cpu_workers_s": cpu_workers,
        "cpu_us_per_frame": (cpu_main + cpu_workers) / n * 1e6,
        "split_frames_per_cpu_s": n_split / split_cpu,
        "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
        "maxrss_before_count_mib": before.ru_maxrss / 1024,
        "maxrss_main_mib": me.ru_maxrss / 1024,              # taken before the splitter-only pass
        "maxrss_largest_worker_mib": kids.ru_maxrss / 1024,
        "table": result.table.to_dict(orient="records"),
    }
    print(json.dumps(record))


def _run_child(path: Path, workers: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_child", str(path), str(workers)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    header = ("| frames | file (MiB) | workers | wall (s) | frames/s | CPU main + workers (s) | CPU µs/frame | "
              "split alone (frames/CPU s) | load avg | peak RSS main (MiB) | peak RSS largest worker (MiB) | "
              "RSS before counting (MiB) |")
    lines = [header, "|" + "---|" * 12]
    for r in rows:
        worker = f"{r['maxrss_largest_worker_mib']:.0f}" if r["workers"] > 1 else "–"
        lines.append(f"| {r['frames']:,} | {r['file_mib']:.0f} | {r['workers']} | {r['wall_s']:.1f} | "
                     f"{r['frames_per_s']:,.0f} | {r['cpu_main_s']:.1f} + {r['cpu_workers_s']:.1f} | "
                     f"{r['cpu_us_per_frame']:.0f} | {r['split_frames_per_cpu_s']:,.0f} | "
                     f"{r['loadavg_1min_before']:.1f} | {r['maxrss_main_mib']:.0f} | "
                     f"{worker} | {r['maxrss_before_count_mib']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tmp", type=Path, default=Path("/tmp/uipbench-bench-mptrj"))
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "benchmarks" / "mptrj.json")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic files")
    parser.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        _child(args._child[0], int(args._child[1]))
        return 0

    rows = []
    for n in args.frames:
        path = args.tmp / f"synthetic_mptrj_{n}.json"
        t0 = time.perf_counter()
        size = write_synthetic_mptrj(path, n)
        gen_s = time.perf_counter() - t0
        print(f"generated {path} ({n} frames, {size / 2**20:.0f} MiB) in {gen_s:.1f} s", file=sys.stderr)
        tables = []
        for w in args.workers:
            rec = _run_child(path, w)
            if rec["frames"] != n or rec["skipped"]:
                raise SystemExit(f"benchmark run read {rec['frames']} frames ({rec['skipped']} skipped), expected {n}")
            tables.append(rec.pop("table"))
            rows.append({"frames": n, "file_mib": size / 2**20, "workers": w, "generate_s": gen_s, **rec})
            print(f"  workers={w}: {rec['frames_per_s']:.0f} frames/s, main peak {rec['maxrss_main_mib']:.0f} MiB",
                  file=sys.stderr)
        if any(t != tables[0] for t in tables):
            raise SystemExit(f"counts differ between worker settings on {path}")
        if not args.keep:
            path.unlink()

    table = _markdown(rows)
    report = {
        "benchmark": "mptrj-envs streaming counter", "spec": {"centers": ["S"], "neighbors": ["Cu", "Ag", "Au", "S"],
                                                              "cutoff": 3.0},
        "synthetic_data": {"frames_per_material": FRAMES_PER_MATERIAL, "templates": 500, "atoms_per_frame": "2-8",
                           "share_of_templates_with_S": 0.4},
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "note": "2 cores shared with a low-priority background DFT job and other users' processes; "
                            "wall-clock throughput depends on that load (see loadavg columns), CPU time less so"},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
        "markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
