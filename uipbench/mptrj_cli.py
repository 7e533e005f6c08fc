"""``uipbench mptrj-envs``: count the centre-atom environments of a training file (see :mod:`uipbench.mptrj`).

Wire it into the main parser with ``mptrj_cli.add_parser(subparsers)``; until then it also runs as
``python -m uipbench.mptrj_cli mptrj-envs PATH ...``.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from .cli_common import standalone_main

from .mptrj import DEFAULT_CHUNK_SIZE, DEFAULT_CUTOFF, DEFAULT_MATERIAL_KEYS

DEFAULT_REPORTS = Path("reports") / "mptrj-envs"


def _default_output(path: Path) -> Path:
    name = path.name
    for suffix in (".gz", ".json", ".extxyz", ".xyz"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{path.parent.name}-{name}" if name == "structures" else name)
    return DEFAULT_REPORTS / stem


def _read_table(path: Path):
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".json":
        return pd.read_json(path)
    return pd.read_csv(path)


def run(args: argparse.Namespace) -> int:
    """Count, write the table, metadata and figures, print the summary; 0 on success."""
    from .mptrj import (CountSpec, count_environments, format_summary, plot_relation, relate_to_errors,
                        write_outputs)

    spec = CountSpec(centers=tuple(args.center), neighbors=tuple(args.neighbors), cutoff=args.cutoff,
                     material_keys=tuple(args.material_key), require=tuple(args.require))
    path = Path(args.path)
    workers = args.workers if args.workers is not None else max(1, os.cpu_count() or 1)
    result = count_environments(path, spec, workers=workers, fmt=args.format, chunk_size=args.chunk_size,
                                progress=not args.no_progress)
    output = Path(args.output) if args.output is not None else _default_output(path)
    written = write_outputs(result, output)
    print(format_summary(result))
    if args.sweep_results is not None:
        sweep = _read_table(Path(args.sweep_results))
        for center in spec.centers:
            relation = relate_to_errors(result.table, sweep, center=center, category=args.relate_category,
                                        unit=args.relate_unit, metric=args.metric)
            if relation.empty:
                print(f"no sweep results for systems matching centre {center} (e.g. cu-{center.lower()})")
                continue
            suffix = "" if len(spec.centers) == 1 else f"_{center}"
            csv = output / f"mptrj_envs_vs_errors{suffix}.csv"
            relation.to_csv(csv, index=False)
            png, svg = plot_relation(relation, output / f"mptrj_envs_vs_errors{suffix}")
            written.update({f"relation{suffix}_csv": csv, f"relation{suffix}_png": png, f"relation{suffix}_svg": svg})
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``mptrj-envs`` on ``subparsers`` (the main ``uipbench`` parser's sub-commands)."""
    p = subparsers.add_parser(
        "mptrj-envs",
        help="count S–metal / S–S environments in MPtrj (or any extxyz) by neighbour composition",
        description="Stream MPtrj_2022.9_full.json (figshare, CHGNet authors) or an extxyz file and count, for each "
                    "centre atom, the elements within the cutoff: per atom, per frame and per material.")
    p.add_argument("path", type=Path, help="MPtrj JSON (.json or .json.gz) or extxyz file")
    p.add_argument("--center", nargs="+", default=["S"], metavar="EL", help="centre element(s) (default: S)")
    p.add_argument("--neighbors", nargs="+", default=["Cu", "Ag", "Au", "S"], metavar="EL",
                   help="neighbour elements of interest; all but the centre count as metals (default: Cu Ag Au S)")
    p.add_argument("--cutoff", type=float, default=DEFAULT_CUTOFF, help="neighbour cutoff in Å (default: 3.0)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--output", type=Path, default=None,
                   help=f"output folder (default: {DEFAULT_REPORTS}/<input name>)")
    p.add_argument("--format", choices=("auto", "json", "extxyz"), default="auto")
    p.add_argument("--material-key", nargs="+", default=list(DEFAULT_MATERIAL_KEYS), metavar="KEY",
                   help="extxyz info keys holding the material id, first present wins "
                        "(default: mp_id material_id mpid; else '<formula>#<frame>')")
    p.add_argument("--require", nargs="+", default=[], metavar="FIELD",
                   help="skip (and count) frames lacking these fields, e.g. force uncorrected_total_energy")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="frames per worker task")
    p.add_argument("--sweep-results", type=Path, default=None,
                   help="sweep results table (csv/parquet: backbone, system, aggregation, train_size, seed, metric, "
                        "value) to relate the counts to each backbone's raw error")
    p.add_argument("--metric", default="energy_mae_mev_per_atom", help="sweep metric to relate to")
    p.add_argument("--relate-category", default="any_metal", help="count category used for the relation")
    p.add_argument("--relate-unit", choices=("atoms", "frames", "materials"), default="atoms")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def main(argv: list[str] | None = None) -> int:
    return standalone_main(add_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
