"""Worker: runs an adapter inside its backbone's environment for a caller in another environment.

    <env>/bin/python -m uipbench.adapters.worker embed --backbone NAME --input IN.extxyz --output OUT.npz
    <env>/bin/python -m uipbench.adapters.worker relax --backbone NAME --input IN.extxyz --output OUT.extxyz

The caller is :class:`~uipbench.adapters.remote.RemoteBackbone`.  Embeddings are written in
the one format of :mod:`uipbench.embedding`, atomically.  A user error (one of
:data:`~uipbench.adapters.errors.USER_ERRORS`: a structure the backbone cannot take, weights
missing or untrusted, a bad card or precision) is reported as JSON in ``--error-file``
(``{"error": class name, "message": ...}``) with exit code 3 and no traceback, so the caller
raises the same error with the same message.  Anything else is reported the same way with
exit code 1, and its traceback goes to stderr (a bug to report).
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from .._atomic import write_atomic
from ..embedding import write_embeddings
from .errors import USER_ERROR_EXIT, USER_ERRORS, error_report

#: the older name of the format's writer, kept while ``uipbench embed`` imports it from here
save_batch = write_embeddings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uipbench-worker")
    parser.add_argument("task", choices=("embed", "relax", "metadata"))
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--input", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default=None)
    parser.add_argument("--trust-unpinned-weights", action="store_true")
    parser.add_argument("--no-download", action="store_true")
    parser.add_argument("--forces", action="store_true")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--error-file", type=Path, default=None)
    return parser


def run_task(args: argparse.Namespace) -> None:
    """Load the backbone the way the caller asked and do ``args.task``."""
    import io

    from ase.io import read, write

    from .registry import load_backbone

    backbone = load_backbone(args.backbone, args.weights, random_weights=args.random_weights, seed=args.seed,
                             in_process=True, precision=args.precision,
                             trust_unpinned_weights=args.trust_unpinned_weights, download=not args.no_download)
    if args.task == "metadata":
        write_atomic(args.output, lambda fh: fh.write(json.dumps(backbone.metadata().to_dict())))
        return
    structures = read(args.input, index=":", format="extxyz") if args.input.stat().st_size else []
    if args.task == "embed":
        write_embeddings(args.output, backbone.embed(structures, forces=args.forces))
        return
    relaxed = [backbone.relax(a, fmax=args.fmax, steps=args.steps) for a in structures]
    buffer = io.StringIO()
    write(buffer, relaxed, format="extxyz")
    write_atomic(args.output, lambda fh: fh.write(buffer.getvalue()))


def main(argv: list[str] | None = None) -> int:
    from .._interrupt import child_process_init

    child_process_init()  # Ctrl-C/SIGTERM: exit at once, no traceback (the parent cleans up); dies with it
    args = _parser().parse_args(argv)
    try:
        run_task(args)
    except Exception as exc:  # every failure goes back to the caller as class name + message
        user_error = type(exc).__name__ in USER_ERRORS and isinstance(exc, USER_ERRORS[type(exc).__name__])
        if not user_error:
            traceback.print_exc()
        report = json.dumps(error_report(exc))
        if args.error_file:
            write_atomic(args.error_file, lambda fh: fh.write(report))
        else:
            print(report, file=sys.stderr)
        return USER_ERROR_EXIT if user_error else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
