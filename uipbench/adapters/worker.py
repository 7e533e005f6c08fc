"""Worker: runs an adapter inside its backbone's environment for a caller in another environment.

    <env>/bin/python -m uipbench.adapters.worker embed --backbone NAME --input IN.extxyz --output OUT.npz
    <env>/bin/python -m uipbench.adapters.worker relax --backbone NAME --input IN.extxyz --output OUT.extxyz

Results are written atomically.  A structure the backbone cannot take is
reported as JSON in ``--error-file`` (``{"error": "BackboneInputError", "message": ...}``)
with exit code 3, so the caller can raise the same error type; stderr stays free for
progress bars and tracebacks, which the caller lets through to the user's terminal.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .._atomic import write_atomic
from .base import BackboneInputError, EmbeddingBatch

INPUT_ERROR_EXIT = 3


def save_batch(path: Path, batch: EmbeddingBatch) -> None:
    arrays = batch.stacked()
    if batch.structures and batch.structures[0].forces is not None:
        arrays["forces"] = np.concatenate([s.forces for s in batch.structures])
    arrays["metadata_json"] = np.array(json.dumps(batch.metadata.to_dict()))
    write_atomic(path, lambda fh: np.savez(fh, **arrays), mode="wb")


def load_batch(path: Path) -> EmbeddingBatch:
    from .base import EmbeddingMetadata

    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    metadata = EmbeddingMetadata.from_dict(json.loads(str(arrays.pop("metadata_json"))))
    batch = EmbeddingBatch.from_stacked(arrays, metadata)
    if "forces" in arrays:
        index = arrays["structure_index"]
        for i, s in enumerate(batch.structures):
            s.forces = arrays["forces"][index == i]
    return batch


def main(argv: list[str] | None = None) -> int:
    from ase.io import read, write

    from .registry import load_backbone

    parser = argparse.ArgumentParser(prog="uipbench-worker")
    parser.add_argument("task", choices=("embed", "relax", "metadata"))
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--input", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--forces", action="store_true")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--error-file", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        backbone = load_backbone(args.backbone, args.weights, random_weights=args.random_weights, in_process=True)
        if args.task == "metadata":
            write_atomic(args.output, lambda fh: fh.write(json.dumps(backbone.metadata().to_dict())))
            return 0
        structures = read(args.input, index=":", format="extxyz") if args.input.stat().st_size else []
        if args.task == "embed":
            save_batch(args.output, backbone.embed(structures, forces=args.forces))
        else:
            import io

            relaxed = [backbone.relax(a, fmax=args.fmax, steps=args.steps) for a in structures]
            buffer = io.StringIO()
            write(buffer, relaxed, format="extxyz")
            write_atomic(args.output, lambda fh: fh.write(buffer.getvalue()))
    except BackboneInputError as exc:
        report = json.dumps({"error": "BackboneInputError", "message": str(exc)})
        if args.error_file:
            write_atomic(args.error_file, lambda fh: fh.write(report))
        else:
            print(report, file=sys.stderr)
        return INPUT_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
