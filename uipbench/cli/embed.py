"""``uipbench embed``: energies and per-atom embeddings of structures (npz + JSON metadata beside it).

One run per output: the npz and its metadata are locked (``.<stem>.uipbench.lock`` beside them), so a
second embed writing either of them is refused while the first runs; embeds of other files in the same
folder run side by side."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_trust_argument, check_input_files, check_output_files, check_output_folder, command_line


def _check_paths(args: argparse.Namespace) -> None:
    """Every path the command writes, checked before a backbone is loaded."""
    check_input_files({"--input": args.input})
    metadata = "its metadata JSON (--output with the suffix .json)"
    check_output_files({"--output": args.output, metadata: args.output.with_suffix(".json")},
                       inputs={"--input": args.input})
    if not args.no_cache:
        from ..paths import cache_dir

        label = "--cache-dir" if args.cache_dir is not None else "the embedding cache (UIPBENCH_CACHE_DIR)"
        check_output_folder(label, args.cache_dir if args.cache_dir is not None else cache_dir())


def run(args: argparse.Namespace) -> int:
    _check_paths(args)
    from .._lock import OutputLock

    output = args.output.absolute()
    # the npz and its metadata, not the folder: other embeds may write other files beside them
    with OutputLock(output.parent, command=" ".join(command_line()), part=output.stem,
                    files=(output.name, output.with_suffix(".json").name)):
        return _embed(args)


def _embed(args: argparse.Namespace) -> int:
    from .._atomic import write_json_atomic
    from ..adapters.registry import load_backbone
    from ..adapters.worker import save_batch
    from ..cache import EmbeddingCache, cached_embed
    from ..datasets.io import read_structures

    structures = read_structures(args.input)
    if not structures:
        raise ValueError(f"{args.input}: no structures to embed")
    backbone = load_backbone(args.backbone, args.weights, trust_unpinned_weights=args.trust_unpinned_weights)
    if args.no_cache:
        batch = backbone.embed(structures)
    else:
        batch = cached_embed(backbone, structures, EmbeddingCache(args.cache_dir))
    meta = args.output.with_suffix(".json")
    save_batch(args.output, batch)
    write_json_atomic(meta, batch.metadata.to_dict())
    print(f"{args.backbone}: {len(batch)} structures, {sum(s.n_atoms for s in batch.structures)} atoms, "
          f"width {batch.metadata.width} -> {args.output} (+ {meta.name})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("embed", help="embed structures with a backbone (npz + JSON metadata)")
    p.add_argument("--backbone", required=True)
    p.add_argument("--input", type=Path, required=True, help="extxyz file")
    p.add_argument("--output", type=Path, required=True,
                   help="npz file to write; the metadata goes beside it with the suffix .json")
    p.add_argument("--weights", default=None, help="local weights file (overrides the card's source)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--no-cache", action="store_true")
    add_trust_argument(p)
    p.set_defaults(func=run)
