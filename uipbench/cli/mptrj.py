"""``uipbench mptrj-envs``: count the centre-atom environments of a training file (see :mod:`uipbench.mptrj`)."""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from .common import check_input_files, check_output_folder, command_line, given, positive_int

DEFAULT_REPORTS = Path("reports") / "mptrj-envs"


def _default_output(path: Path) -> Path:
    name = path.name
    for suffix in (".gz", ".json", ".extxyz", ".xyz"):
        name = name.removesuffix(suffix)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{path.parent.name}-{name}" if name == "structures" else name)
    return DEFAULT_REPORTS / stem


def _read_table(path: Path):
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".json":
        return pd.read_json(path)
    return pd.read_csv(path)


#: what ``--sweep-results`` must hold (the relation's columns), checked before the count starts
SWEEP_COLUMNS = ("backbone", "system", "metric", "value")


def _sweep_table(path: Path):
    """The ``--sweep-results`` table, read and checked before the count (which can take hours)."""
    try:
        table = _read_table(path)
    except (ValueError, OSError) as exc:
        raise ValueError(f"--sweep-results {path}: cannot be read as a table ({exc})") from None
    missing = [c for c in SWEEP_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"--sweep-results {path}: not a sweep results table (lacks column(s) {missing})")
    return table


def _relate(args: argparse.Namespace, result, centers: tuple[str, ...], output: Path, sweep) -> dict[str, Path]:
    """The counts against each backbone's raw error (``--sweep-results``): a CSV and a figure per centre."""
    from ..mptrj import plot_relation, relate_to_errors

    written: dict[str, Path] = {}
    for center in centers:
        relation = relate_to_errors(result.table, sweep, center=center, category=args.relate_category,
                                    unit=args.relate_unit, metric=args.metric)
        if relation.empty:
            print(f"no sweep results for systems matching centre {center} (e.g. cu-{center.lower()})")
            continue
        suffix = "" if len(centers) == 1 else f"_{center}"
        csv = output / f"mptrj_envs_vs_errors{suffix}.csv"
        relation.to_csv(csv, index=False)
        png, svg = plot_relation(relation, output / f"mptrj_envs_vs_errors{suffix}")
        written.update({f"relation{suffix}_csv": csv, f"relation{suffix}_png": png, f"relation{suffix}_svg": svg})
    return written


def run(args: argparse.Namespace) -> int:
    """Count, write the table, metadata and figures, print the summary; 0 on success."""
    path = Path(args.path)
    output = Path(args.output) if args.output is not None else _default_output(path)
    check_input_files({"PATH": path, "--sweep-results": args.sweep_results})
    check_output_folder("--output" if args.output is not None else "the output folder", output, inputs=[path])
    sweep = _sweep_table(Path(args.sweep_results)) if args.sweep_results is not None else None
    from .._lock import OutputLock

    with OutputLock(output, command=" ".join(command_line())):
        return _count(args, path, output, sweep)


def _count(args: argparse.Namespace, path: Path, output: Path, sweep) -> int:
    from ..mptrj import CountSpec, count_environments, format_summary, write_outputs

    spec = CountSpec(centers=tuple(args.center), neighbors=tuple(args.neighbors), require=tuple(args.require),
                     **given(cutoff=args.cutoff, material_keys=args.material_key and tuple(args.material_key)))
    workers = args.workers if args.workers is not None else max(1, os.cpu_count() or 1)
    result = count_environments(path, spec, workers=workers, fmt=args.format, progress=not args.no_progress,
                                **given(chunk_size=args.chunk_size))
    written = write_outputs(result, output)
    print(format_summary(result))
    if sweep is not None:
        written.update(_relate(args, result, spec.centers, output, sweep))
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mptrj-envs`` to the ``uipbench`` sub-commands.

    Options left out take :mod:`uipbench.mptrj`'s defaults, which the help names (a test keeps them equal), so
    the parser does not import the counter.
    """
    p = subparsers.add_parser(
        "mptrj-envs",
        help="count S–metal / S–S environments in MPtrj (or any extxyz) by neighbour composition",
        description="Stream MPtrj_2022.9_full.json (figshare, CHGNet authors) or an extxyz file and count, for each "
                    "centre atom, the elements within the cutoff: per atom, per frame and per material.")
    p.add_argument("path", type=Path, help="MPtrj JSON (.json or .json.gz) or extxyz file")
    p.add_argument("--center", nargs="+", default=["S"], metavar="EL", help="centre element(s) (default: S)")
    p.add_argument("--neighbors", nargs="+", default=["Cu", "Ag", "Au", "S"], metavar="EL",
                   help="neighbour elements of interest; all but the centre count as metals (default: Cu Ag Au S)")
    p.add_argument("--cutoff", type=float, default=None, help="neighbour cutoff in Å (default: 3)")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--output", type=Path, default=None,
                   help=f"output folder (default: {DEFAULT_REPORTS}/<input name>)")
    p.add_argument("--format", choices=("auto", "json", "extxyz"), default="auto")
    p.add_argument("--material-key", nargs="+", default=None, metavar="KEY",
                   help="extxyz info keys holding the material id, first present wins "
                        "(default: mp_id material_id mpid; else '<formula>#<frame>')")
    p.add_argument("--require", nargs="+", default=[], metavar="FIELD",
                   help="skip (and count) frames lacking these fields, e.g. force uncorrected_total_energy")
    p.add_argument("--chunk-size", type=positive_int, default=None, help="frames per worker task (default: 256)")
    p.add_argument("--sweep-results", type=Path, default=None,
                   help="sweep results table (csv/parquet: backbone, system, aggregation, train_size, seed, metric, "
                        "value) to relate the counts to each backbone's raw error")
    p.add_argument("--metric", default="energy_mae_mev_per_atom", help="sweep metric to relate to")
    p.add_argument("--relate-category", default="any_metal", help="count category used for the relation")
    p.add_argument("--relate-unit", choices=("atoms", "frames", "materials"), default="atoms")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
