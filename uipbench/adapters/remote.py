"""A backbone used from another environment: ``embed`` and ``relax`` run in a worker process."""
from __future__ import annotations

import io
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from ase import Atoms
from ase.io import read, write

from .base import Backbone, BackboneInputError, DifferentiableOutput, EmbeddingBatch, EmbeddingMetadata, \
    StructureEmbedding, check_structure
from .card import BackboneCard
from .envs import ensure
from .worker import INPUT_ERROR_EXIT, load_batch

ALL_ELEMENTS = frozenset(range(1, 119))


class WorkerError(RuntimeError):
    """The worker process failed for a reason other than bad input."""


class RemoteBackbone(Backbone):
    def __init__(self, card: BackboneCard, weights: Path | None = None, random_weights: bool = False) -> None:
        self.card = card
        self.weights = weights
        self.random_weights = random_weights
        self._metadata: EmbeddingMetadata | None = None

    @property
    def supported_numbers(self) -> frozenset[int]:
        return ALL_ELEMENTS  # the worker checks the elements

    def _call(self, task: str, structures: Sequence[Atoms], output: Path, *extra: str) -> None:
        spec = ensure(self.card)
        with tempfile.TemporaryDirectory(prefix="uipbench-worker-") as tmp:
            inp = Path(tmp) / "input.extxyz"
            buffer = io.StringIO()
            if structures:
                write(buffer, list(structures), format="extxyz")
            inp.write_text(buffer.getvalue())
            error_file = Path(tmp) / "error.json"
            cmd = [str(spec.python), "-m", "uipbench.adapters.worker", task, "--backbone", self.card.name,
                   "--input", str(inp), "--output", str(output), "--error-file", str(error_file), *extra]
            if self.weights:
                cmd += ["--weights", str(self.weights)]
            if self.random_weights:
                cmd.append("--random-weights")
            # stderr goes to the user's terminal: progress bars, warnings and tracebacks stay visible
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
            if proc.returncode == INPUT_ERROR_EXIT and error_file.exists():
                raise BackboneInputError(json.loads(error_file.read_text())["message"])
        if proc.returncode != 0:
            raise WorkerError(f"{self.card.name} worker ({task}) failed in environment {spec.name} "
                              f"(exit {proc.returncode}); its error is printed above")

    def weights_identity(self) -> tuple[str, str, int]:
        """Known without starting a worker: the card's sha256, or the local file's."""
        from .card import sha256_file

        if self.random_weights:
            return self.card.name, "random", self.card.embedding_width
        local = self.card.local_weights(self.weights)
        if local is not None and local.is_file():
            return self.card.name, sha256_file(local), self.card.embedding_width
        if self.card.weights_sha256:
            return self.card.name, self.card.weights_sha256, self.card.embedding_width
        return super().weights_identity()

    def metadata(self) -> EmbeddingMetadata:
        if self._metadata is None:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "metadata.json"
                self._call("metadata", [], out)
                self._metadata = EmbeddingMetadata.from_dict(json.loads(out.read_text()))
        return self._metadata

    def embed(self, structures: Sequence[Atoms], forces: bool = False) -> EmbeddingBatch:
        for i, atoms in enumerate(structures):  # fail fast, before starting a worker
            check_structure(atoms, ALL_ELEMENTS, self.cutoff, self.name, f"structure {i}")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "embedding.npz"
            self._call("embed", structures, out, *(["--forces"] if forces else []))
            batch = load_batch(out)
        self._metadata = batch.metadata
        return batch

    def _embed_batch(self, structures: list[Atoms], forces: bool) -> list[StructureEmbedding]:
        return self.embed(structures, forces).structures

    def relax(self, atoms: Atoms, fmax: float = 0.05, steps: int = 200) -> Atoms:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "relaxed.extxyz"
            self._call("relax", [atoms], out, "--fmax", str(fmax), "--steps", str(steps))
            relaxed = read(out, format="extxyz")
        result = atoms.copy()
        result.positions = relaxed.positions
        return result

    def forward_differentiable(self, atoms: Atoms) -> DifferentiableOutput:
        raise RuntimeError(
            f"the differentiable path of {self.name} needs its package in this process; run it in the "
            f"backbone's environment ({self.card.environment}), e.g. through `uipbench` commands that do so"
        )

    def calculator(self):
        raise RuntimeError(f"{self.name}'s ASE calculator lives in environment {self.card.environment}")
