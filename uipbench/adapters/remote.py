"""A backbone used from another environment: ``embed`` and ``relax`` run in a worker process
(:mod:`uipbench.adapters.worker`) inside the backbone's own environment.

The worker reports a user error (bad structure, missing or untrusted weights, bad card or
precision) as its class name and message; it is raised here under the same class, with no
worker traceback.  Anything else is a :class:`~uipbench.adapters.errors.WorkerError`.
"""
from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Sequence

from ase import Atoms
from ase.io import read, write

from .._interrupt import child_env, run_child, worker_tempdir
from ..embedding import EmbeddingBatch, EmbeddingMetadata, Identity, StructureEmbedding, read_embeddings
from ._common import FAMILY_PRECISIONS, check_precision, random_identity, sha256_file
from .card import BackboneCard
from .envs import ensure
from .errors import USER_ERRORS, CardError, WeightsError, WorkerError
from .interface import Backbone, DifferentiableOutput, check_structure

ALL_ELEMENTS = frozenset(range(1, 119))


class RemoteBackbone(Backbone):
    def __init__(self, card: BackboneCard, weights: Path | None = None, *, random_weights: bool = False,
                 seed: int = 0, precision: str | None = None, trust_unpinned_weights: bool = False,
                 download: bool = True) -> None:
        self.card = card
        self.weights = weights
        self.random_weights = random_weights
        self.seed = seed
        self.precision_option = precision  # what the worker is asked for (None: the family's default)
        if card.family not in FAMILY_PRECISIONS:
            raise CardError(f"{card.path}: unknown backbone family {card.family!r}; "
                            f"known: {', '.join(FAMILY_PRECISIONS)}")
        supported = FAMILY_PRECISIONS[card.family]
        self.precision = check_precision(card.family, precision, supported)  # refused before a worker starts
        self.default_precision = supported[0]
        self.trust_unpinned_weights = trust_unpinned_weights
        self.download = download
        self._metadata: EmbeddingMetadata | None = None

    @property
    def supported_numbers(self) -> frozenset[int]:
        return ALL_ELEMENTS  # the worker checks the elements

    def _options(self) -> list[str]:
        """The worker's command-line options that reproduce this backbone's load arguments."""
        options = ["--backbone", self.card.name, "--seed", str(self.seed)]
        if self.weights:
            options += ["--weights", str(self.weights)]
        if self.precision_option:
            options += ["--precision", self.precision_option]
        flags = {"--random-weights": self.random_weights, "--trust-unpinned-weights": self.trust_unpinned_weights,
                 "--no-download": not self.download}
        return options + [flag for flag, on in flags.items() if on]

    def _call(self, task: str, structures: Sequence[Atoms], output: Path, *extra: str) -> None:
        spec = ensure(self.card)
        with worker_tempdir() as tmp:  # its own, and those of killed runs, removed
            inp = Path(tmp) / "input.extxyz"
            buffer = io.StringIO()
            if structures:
                write(buffer, list(structures), format="extxyz")
            inp.write_text(buffer.getvalue())
            error_file = Path(tmp) / "error.json"
            cmd = [str(spec.python), "-m", "uipbench.adapters.worker", task, *self._options(),
                   "--input", str(inp), "--output", str(output), "--error-file", str(error_file), *extra]
            # stderr goes to the user's terminal: progress bars and warnings stay visible
            # run_child: ended by end_children when a thread runs it (a relaxation of dataset build);
            # child_env: it dies with us
            proc = run_child(cmd, stdout=subprocess.DEVNULL, env=child_env())
            report = json.loads(error_file.read_text()) if proc.returncode and error_file.is_file() else None
        if proc.returncode == 0:
            return
        where = f"{self.card.name} worker ({task}) in environment {spec.name}"
        if report is None:
            raise WorkerError(f"{where} failed (exit {proc.returncode}); its error is printed above")
        if report.get("error") in USER_ERRORS:
            raise USER_ERRORS[report["error"]](report["message"])
        raise WorkerError(f"{where} failed: {report.get('error')}: {report.get('message')} "
                          f"(the worker's traceback is printed above)")

    def weights_identity(self) -> Identity:
        """Known without starting a worker: the random-weights identity, the chosen file's sha256,
        or the card's pinned sha256 (and the precision asked for, or the family's default)."""
        if self.random_weights:
            sha256 = random_identity(self.seed)
        elif (local := self.card.local_weights(self.weights)) is not None:
            if not local.is_file():
                raise WeightsError(f"{self.card.name}: weights file {local} not found")
            sha256 = sha256_file(local)
        elif self.card.weights_sha256:
            sha256 = self.card.weights_sha256
        else:
            return super().weights_identity()
        return Identity(self.card.name, sha256, self.card.embedding_width, self.precision, self.default_precision)

    def metadata(self) -> EmbeddingMetadata:
        if self._metadata is None:
            with worker_tempdir() as tmp:
                out = Path(tmp) / "metadata.json"
                self._call("metadata", [], out)
                self._metadata = EmbeddingMetadata.from_dict(json.loads(out.read_text()))
        return self._metadata

    def embed(self, structures: Sequence[Atoms], forces: bool = False) -> EmbeddingBatch:
        for i, atoms in enumerate(structures):  # fail fast, before starting a worker
            check_structure(atoms, ALL_ELEMENTS, self.cutoff, self.name, f"structure {i}")
        with worker_tempdir() as tmp:
            out = Path(tmp) / "embedding.npz"
            self._call("embed", structures, out, *(["--forces"] if forces else []))
            batch, _ = read_embeddings(out)
        self._metadata = batch.metadata
        return batch

    def _embed_batch(self, structures: list[Atoms], forces: bool) -> list[StructureEmbedding]:
        return self.embed(structures, forces).structures

    def relax(self, atoms: Atoms, fmax: float = 0.05, steps: int = 200) -> Atoms:
        with worker_tempdir() as tmp:
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
