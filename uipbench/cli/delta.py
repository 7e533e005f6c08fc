"""``uipbench delta fit``: fit a Δ-model on DFT-labelled structures and save it (``PATH.json`` + ``PATH.npz``).

Training data: the shipped systems (``--systems``, default all with data) plus any extxyz files of
labelled structures (``--extra``, e.g. the ``labelled.extxyz`` of an active-learning run).  The
backbone embeds them (the embedding cache first; in-process, or through a worker in its own
environment) and a Δ-GPR is fitted on E_DFT − E_backbone (:func:`uipbench.harness.fit.fit_delta`).
The model is saved with :func:`uipbench.delta.io.save` (no pickle), its provenance the backbone card
name and weights sha256, so ``uipbench search --delta PATH`` refuses it for another backbone.
Bad input (an unknown system, an empty extra file, a structure without an energy, an existing
model without ``--force``) is refused before the backbone is loaded.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..harness.defaults import AGGREGATIONS, FORCE_LABELS
from .common import add_datasets_root_argument, add_trust_argument, check_input_files, check_output_files, \
    check_output_folder


def _model_files(out: Path) -> tuple[Path, Path]:
    from ..delta.io import model_paths

    return model_paths(out)


def _refuse_existing(json_path: Path, npz_path: Path, force: bool) -> None:
    existing = [p for p in (json_path, npz_path) if p.is_file()]
    if existing and not force:
        raise ValueError(f"--out: a Δ-model exists at {', '.join(str(p) for p in existing)}; pass --force to "
                         f"overwrite it, or choose another --out")


def _training_structures(args: argparse.Namespace) -> tuple[list, list[str]]:
    """Every training structure, and where they came from; each source checked on its own."""
    from ..datasets.io import available_systems, read_structures
    from ..harness.fit import check_energies, check_training_set, shipped_structures

    systems = available_systems(args.datasets_root) if args.systems is None else args.systems
    structures = shipped_structures(systems, args.datasets_root)
    sources = [f"{', '.join(systems)}: {len(structures)}"] if systems else []
    for path in args.extra:
        extra = read_structures(path)
        if not extra:
            raise ValueError(f"--extra {path}: no structures in the file")
        check_energies(extra, f"--extra {path}")
        structures += extra
        sources.append(f"{path.name}: {len(extra)}")
    check_training_set(structures, "the training set (--systems and --extra)")
    return structures, sources


def run_fit(args: argparse.Namespace) -> int:
    from ..adapters.card import get_card

    json_path, npz_path = _model_files(args.out)
    _refuse_existing(json_path, npz_path, args.force)
    check_input_files({f"--extra {p}": p for p in args.extra})
    if json_path.parent.exists():
        check_output_files({"--out (the model's JSON)": json_path, "--out (the model's arrays)": npz_path},
                           inputs={f"--extra {p}": p for p in args.extra})
    else:  # created when the model is saved
        check_output_folder("--out", json_path.parent)
    get_card(args.backbone)  # an unknown backbone, before the data are read
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.forces and (args.dense or args.aggregation != "atomic"):
        raise ValueError("--forces fits force labels with the sparse atomic model: drop --dense and use "
                         "--aggregation atomic")
    structures, sources = _training_structures(args)

    from ..adapters.registry import load_backbone
    from ..delta.io import save
    from ..harness.fit import fit_delta

    backbone = load_backbone(args.backbone, args.weights, trust_unpinned_weights=args.trust_unpinned_weights)
    identity = backbone.weights_identity()  # before the work: a bad weights file fails here
    start = time.perf_counter()
    delta = fit_delta(backbone, structures, aggregation=args.aggregation, sparse=not args.dense,
                      random_state=args.seed, forces=args.forces)
    seconds = time.perf_counter() - start
    name = identity.backbone
    _refuse_existing(json_path, npz_path, args.force)  # another run may have saved one meanwhile
    save(delta, args.out, name, identity.weights_sha256)
    kind = f"sparse, {len(delta.support_)} inducing points" if delta.sparse_ else "exact"
    if getattr(delta, "n_force_labels_", 0):
        kind += f", {delta.n_force_labels_} force labels ({args.forces} atoms)"
    print(f"{name}: Δ-GPR ({args.aggregation}, {kind}) fitted on {len(structures)} structures, "
          f"{sum(len(a) for a in structures)} atoms ({'; '.join(sources)}) in {seconds:.1f} s "
          f"-> {json_path} (+ {npz_path.name})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("delta", help="Δ-models: fit one on labelled structures (uipbench delta fit)")
    sub = p.add_subparsers(dest="delta_command", required=True)
    f = sub.add_parser("fit", help="fit a Δ-GPR on DFT-labelled structures and save it (.json + .npz)",
                       description="Fit a Δ-GPR on E_DFT − E_backbone of labelled structures (shipped systems and "
                                   "extxyz files) and save it as PATH.json + PATH.npz (no pickle), for "
                                   "`uipbench search --delta PATH`.")
    f.add_argument("--backbone", required=True)
    f.add_argument("--out", type=Path, required=True,
                   help="base path of the model: PATH.json + PATH.npz (missing folders are created)")
    f.add_argument("--systems", nargs="*", default=None,
                   help="systems whose labelled structures are fitted (default: every one with data; "
                        "none given: only --extra)")
    f.add_argument("--extra", nargs="+", type=Path, default=[],
                   help="extxyz files of more labelled structures (energies required), e.g. the labelled.extxyz "
                        "of `uipbench search --active-learning`")
    f.add_argument("--aggregation", choices=AGGREGATIONS, default="atomic")
    f.add_argument("--dense", action="store_true", help="exact GPR instead of the sparse (projected-process) one")
    f.add_argument("--seed", type=int, default=0, help="random state of the fit: inducing points, restarts (0)")
    f.add_argument("--forces", choices=FORCE_LABELS, default=None,
                   help="also fit the force residuals F_DFT − F_backbone of these atoms (the adsorbate's, or all), "
                        "through the embedding's Jacobian by central differences (cached; uipbench.delta.jacobian)")
    f.add_argument("--weights", default=None, help="local weights file (overrides the card's source)")
    f.add_argument("--force", action="store_true", help="overwrite an existing model at --out")
    add_datasets_root_argument(f)
    add_trust_argument(f)
    f.set_defaults(func=run_fit)
