"""The ``uipbench`` command: parses arguments and calls the modules that do the work."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_common import dispatch, training_sizes


def _cmd_dataset_build(args: argparse.Namespace) -> int:
    from .datasets.label import build_dataset
    from .datasets.relax import relaxer_for

    relaxer, relaxer_name = relaxer_for(args.relax_with)
    report = build_dataset(args.system, args.n, root=args.root, resume=args.resume, workers=args.workers,
                           seed=args.seed, relaxer=relaxer, relaxer_name=relaxer_name)
    print(f"{args.system}: labelled {report.labelled}, already present {report.skipped_existing}, "
          f"deferred (need a relaxation backbone) {report.deferred_relaxation}, failed {len(report.failed)}")
    for line in report.failed:
        print(f"  failed: {line}", file=sys.stderr)
    return 1 if report.failed else 0


def _cmd_dataset_info(args: argparse.Namespace) -> int:
    from .datasets.io import load_card, validate

    card = load_card(args.system, args.root)
    report = validate(args.system, args.root)
    if args.format == "json":
        print(json.dumps({"card": card, "valid": report.ok, "problems": report.problems}, indent=2))
    else:
        counts = card["counts"]
        lab = card.get("labelling", {})
        print(f"system        {card['system']}")
        print(f"protocol      {card['protocol']['name']}")
        print(f"structures    {counts['structures']} ({counts['atoms']} atoms)")
        print(f"surface cells {counts['by_surface_cell']}")
        print(f"motifs        {counts['by_motif']}")
        print(f"variants      {counts['by_variant']}")
        print(f"groups (3+)   {counts['composition_groups_3plus']} by composition, "
              f"{counts['arrangement_groups_3plus']} by composition and motif")
        print(f"labelling     median {lab.get('median_minutes_per_structure')} min/structure, "
              f"{lab.get('total_core_hours')} core-hours")
        print(f"valid         {'yes' if report.ok else 'NO'}")
        for problem in report.problems:
            print(f"  - {problem}")
    return 0 if report.ok else 1


def _cmd_backbones(args: argparse.Namespace) -> int:
    from .adapters.registry import all_status

    rows = all_status()
    if args.format == "json":
        print(json.dumps([{**s.__dict__, "weights": str(s.weights) if s.weights else None, "state": s.state}
                          for s in rows], indent=2))
        return 0
    header = f"{'backbone':24} {'state':24} {'env':9} {'width':>5}  layer"
    print(header)
    print("-" * len(header))
    for s in rows:
        print(f"{s.name:24} {s.state:24} {s.environment:9} {s.width:>5}  {s.layer[:70]}")
        if s.hint:
            print(f"{'':24} -> {s.hint}")
    return 0


def _cmd_env_sync(args: argparse.Namespace) -> int:
    from .adapters.envs import env_specs, sync

    specs = env_specs()
    names = args.names or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown environment(s) {', '.join(unknown)}; known: {', '.join(specs)}")
    for name in names:
        sync(specs[name], force=args.force)
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:

    from ._atomic import write_json_atomic
    from .adapters.registry import load_backbone
    from .adapters.worker import save_batch
    from .cache import EmbeddingCache, cached_embed
    from .datasets.io import read_structures

    structures = read_structures(args.input)
    if not structures:
        raise ValueError(f"{args.input}: no structures to embed")
    backbone = load_backbone(args.backbone, args.weights)
    if args.no_cache:
        batch = backbone.embed(structures)
    else:
        batch = cached_embed(backbone, structures, EmbeddingCache(args.cache_dir))
    save_batch(args.output, batch)
    write_json_atomic(args.output.with_suffix(".json"), batch.metadata.to_dict())
    print(f"{args.backbone}: {len(batch)} structures, {sum(s.n_atoms for s in batch.structures)} atoms, "
          f"width {batch.metadata.width} -> {args.output} (+ {args.output.with_suffix('.json').name})")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .harness.sweep import sweep
    from .report.tables import headline, headline_markdown

    results = sweep(args.backbones, args.systems, aggregations=args.aggregations, sizes=training_sizes(args.sizes),
                    seeds=args.seeds, descriptors=args.descriptors, test_fraction=args.test_fraction,
                    out=args.out, workers=args.workers, command=["uipbench", *sys.argv[1:]],
                    datasets_root=args.datasets_root)
    print(headline_markdown(headline(results)))
    print(f"results: {args.out}/results.csv")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report.render import write_report

    path = write_report(args.run, args.out)
    print(f"report: {path} (and {path.with_suffix('.html')})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    from .harness.sweep import sweep
    from .report.render import write_report
    from .report.tables import headline, headline_markdown

    start = time.perf_counter()
    out = Path(args.out)
    results = sweep(out=out, command=["uipbench", "demo"])
    path = write_report(out)
    print(headline_markdown(headline(results)))
    print(f"\nuipbench demo: {time.perf_counter() - start:.0f} s; report: {path} (HTML: {path.with_suffix('.html')})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uipbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dataset = sub.add_parser("dataset", help="build, inspect and validate the DFT reference datasets")
    dsub = dataset.add_subparsers(dest="dataset_command", required=True)
    build = dsub.add_parser("build", help="label structures of a system with the reference protocol")
    build.add_argument("system")
    build.add_argument("--n", type=int, required=True, help="number of plan entries the dataset should hold")
    build.add_argument("--resume", action="store_true", help="extend an existing dataset")
    build.add_argument("--workers", type=int, default=None, help="parallel GPAW processes (default: all cores)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--relax-with", default="chgnet-0.3.0",
                       help="backbone that relaxes the 'relaxed' variants ('none' defers them)")
    build.add_argument("--root", type=Path, default=None, help="datasets folder (default: the shipped one)")
    build.set_defaults(func=_cmd_dataset_build)
    info = dsub.add_parser("info", help="summarise and validate a system's dataset")
    info.add_argument("system")
    info.add_argument("--format", choices=("table", "json"), default="table")
    info.add_argument("--root", type=Path, default=None)
    info.set_defaults(func=_cmd_dataset_info)

    backbones = sub.add_parser("backbones", help="list the backbone cards and whether each is ready")
    backbones.add_argument("--format", choices=("table", "json"), default="table")
    backbones.set_defaults(func=_cmd_backbones)

    env = sub.add_parser("env", help="manage the per-backbone virtual environments")
    esub = env.add_subparsers(dest="env_command", required=True)
    esync = esub.add_parser("sync", help="create or update environments (default: all)")
    esync.add_argument("names", nargs="*")
    esync.add_argument("--force", action="store_true", help="rebuild even when up to date")
    esync.set_defaults(func=_cmd_env_sync)

    embed = sub.add_parser("embed", help="embed structures with a backbone (npz + JSON metadata)")
    embed.add_argument("--backbone", required=True)
    embed.add_argument("--input", type=Path, required=True, help="extxyz file")
    embed.add_argument("--output", type=Path, required=True, help="npz file to write")
    embed.add_argument("--weights", default=None, help="local weights file (overrides the card's source)")
    embed.add_argument("--cache-dir", type=Path, default=None)
    embed.add_argument("--no-cache", action="store_true")
    embed.set_defaults(func=_cmd_embed)

    from .harness.sweep import AGGREGATIONS, DEFAULT_SEEDS, DESCRIPTORS

    sw = sub.add_parser("sweep", help="compare backbones raw and Δ-corrected (resumable)")
    sw.add_argument("--backbones", nargs="*", help="default: every backbone whose weights are present")
    sw.add_argument("--systems", nargs="*", help="default: every system under the datasets folder and 'all' (pooled)")
    sw.add_argument("--datasets-root", type=Path, default=None,
                    help="datasets folder (default: the shipped one); each subfolder with a structures.extxyz "
                         "of labelled structures is a system")
    sw.add_argument("--aggregations", nargs="*", default=list(AGGREGATIONS))
    sw.add_argument("--descriptors", nargs="*", default=list(DESCRIPTORS))
    sw.add_argument("--sizes", nargs="*", help="training sizes (integers or 'max'); default 5 10 20 40 max")
    sw.add_argument("--seeds", nargs="*", type=int, default=list(DEFAULT_SEEDS))
    sw.add_argument("--test-fraction", type=float, default=0.25)
    sw.add_argument("--workers", type=int, default=2, help="local processes for the Δ-fits")
    sw.add_argument("--out", type=Path, default=Path("reports/sweep"), help="results folder (resumed if present)")
    sw.set_defaults(func=_cmd_sweep)

    rep = sub.add_parser("report", help="Markdown + HTML report with tables and figures of a sweep")
    rep.add_argument("run", type=Path, help="results folder of a sweep")
    rep.add_argument("--out", type=Path, default=None, help="where to write (default: the results folder)")
    rep.set_defaults(func=_cmd_report)

    from .mptrj_cli import add_parser as add_mptrj_parser

    add_mptrj_parser(sub)

    demo = sub.add_parser("demo", help="the main job on the shipped data (what `make demo` runs)")
    demo.add_argument("--out", default="reports/demo")
    demo.set_defaults(func=_cmd_demo)
    from . import regress_cli
    regress_cli.add_parser(sub)
    from .search.command import register as register_search; register_search(sub)  # noqa: E702 (moves to cli/ at merge)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return dispatch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
