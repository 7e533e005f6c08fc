"""Embedding records and their one on-disk format.

A backbone's view of a structure is a :class:`StructureEmbedding` (energy, per-atom
embedding, atomic numbers, optionally forces); several make an :class:`EmbeddingBatch`
with the :class:`EmbeddingMetadata` saying where they came from.  These records belong
to no adapter: the Δ-model (``delta/``), the cache and the command line use them
without importing any backbone code.

The ``.npz`` format (:func:`write_embeddings` / :func:`read_embeddings`) is used by the
embedding cache (one structure per file), the worker that runs a backbone in its own
environment, and ``uipbench embed``.  Arrays only, read with ``allow_pickle=False``::

    energy           float64 [n_structures]        the backbone's total energy, eV
    embedding        float64 [n_atoms, width]       atoms of all structures, in order
    numbers          int64   [n_atoms]
    structure_index  int64   [n_atoms]              the structure of each atom (non-decreasing)
    forces           float64 [n_atoms, 3]           only when computed
    structure_hash   str     [n_structures]         only when given (the cache's key)
    metadata_json    str     []                     EmbeddingMetadata as JSON
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from ._atomic import write_atomic


class EmbeddingFileError(ValueError):
    """An embedding ``.npz`` file cannot be read or is not consistent."""


class Identity(NamedTuple):
    """What an embedding cache entry is filed under: the backbone, its weights, width and precision.

    ``precision`` is the floating-point precision the backbone's model runs in (``float32`` or
    ``float64``; the stored embeddings are float64 either way); ``default_precision`` is its family's
    default, whose entries keep the place they had before precision was part of the identity.
    """

    backbone: str
    weights_sha256: str
    width: int
    precision: str
    default_precision: str


@dataclass(frozen=True)
class EmbeddingMetadata:
    """Where an embedding came from.

    ``dtype`` is that of the stored arrays (always float64); ``precision`` the one the backbone's model
    ran in (``None`` in files written before it was recorded: see :meth:`recorded_precision`).
    """

    backbone: str
    package: str
    package_version: str
    weights_sha256: str
    layer: str
    width: int
    dtype: str = "float64"
    device: str = "cpu"
    versions: dict[str, str] = field(default_factory=dict)
    precision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recorded_precision(self) -> str | None:
        """The model's precision as recorded: this field, else ``versions["model_precision"]`` (which
        CHGNet and SevenNet files have held since they could run in float64), else ``None`` (a file of a
        family that runs in one precision only, or written before its family had a choice)."""
        return self.precision or self.versions.get("model_precision")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmbeddingMetadata":
        return cls(**data)


@dataclass
class StructureEmbedding:
    """The backbone's view of one structure."""

    energy: float  # eV, the backbone's total energy
    embedding: np.ndarray  # [n_atoms, d], float64
    numbers: np.ndarray  # [n_atoms], int64
    forces: np.ndarray | None = None  # [n_atoms, 3] eV/Å, when asked for

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])


@dataclass
class EmbeddingBatch:
    """Embeddings of several structures, with their metadata."""

    structures: list[StructureEmbedding]
    metadata: EmbeddingMetadata

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, i: int) -> StructureEmbedding:
        return self.structures[i]

    @property
    def energies(self) -> np.ndarray:
        return np.array([s.energy for s in self.structures], dtype=np.float64)

    def stacked(self) -> dict[str, np.ndarray]:
        """The arrays of the format: energy, embedding, numbers, structure_index (+ forces)."""
        parts = self.structures
        arrays = {
            "energy": self.energies,
            "embedding": np.concatenate([s.embedding for s in parts]).astype(np.float64)
            if parts else np.zeros((0, self.metadata.width)),
            "numbers": np.concatenate([s.numbers for s in parts]).astype(np.int64) if parts else np.zeros(0, np.int64),
            "structure_index": np.repeat(np.arange(len(parts), dtype=np.int64), [s.n_atoms for s in parts]),
        }
        if parts and all(s.forces is not None for s in parts):
            arrays["forces"] = np.concatenate([s.forces for s in parts]).astype(np.float64)
        return arrays

    @classmethod
    def from_stacked(cls, arrays: dict[str, np.ndarray], metadata: EmbeddingMetadata) -> "EmbeddingBatch":
        """The inverse of :meth:`stacked` (arrays assumed consistent, see :func:`read_embeddings`)."""
        bounds = np.searchsorted(arrays["structure_index"], np.arange(len(arrays["energy"]) + 1))
        forces = arrays.get("forces")
        structures = [
            StructureEmbedding(float(energy), np.asarray(arrays["embedding"][a:b], np.float64),
                               np.asarray(arrays["numbers"][a:b], np.int64),
                               None if forces is None else np.asarray(forces[a:b], np.float64))
            for energy, a, b in zip(arrays["energy"], bounds[:-1], bounds[1:])
        ]
        return cls(structures, metadata)


def write_embeddings(path: str | Path, batch: EmbeddingBatch, structure_hashes: Sequence[str] | None = None) -> None:
    """Write ``batch`` to ``path`` atomically in the one ``.npz`` format."""
    arrays = batch.stacked()
    if structure_hashes is not None:
        if len(structure_hashes) != len(batch):
            raise ValueError(f"{len(structure_hashes)} structure hashes for {len(batch)} structures")
        arrays["structure_hash"] = np.array(list(structure_hashes), dtype=str)
    arrays["metadata_json"] = np.array(json.dumps(batch.metadata.to_dict()))
    write_atomic(path, lambda fh: np.savez(fh, **arrays), mode="wb")


def read_embeddings(path: str | Path) -> tuple[EmbeddingBatch, list[str] | None]:
    """The batch stored in ``path`` and its structure hashes (``None`` when the file has none).

    Anything unreadable or inconsistent is an :class:`EmbeddingFileError` naming the file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        metadata = EmbeddingMetadata.from_dict(json.loads(str(arrays.pop("metadata_json"))))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise EmbeddingFileError(f"{path}: not a readable embedding file ({type(exc).__name__}: {exc})") from exc
    _upgrade_single(arrays)
    problem = _inconsistency(arrays, metadata.width)
    if problem:
        raise EmbeddingFileError(f"{path}: inconsistent embedding file ({problem})")
    hashes = [str(h) for h in arrays.pop("structure_hash")] if "structure_hash" in arrays else None
    return EmbeddingBatch.from_stacked(arrays, metadata), hashes


def _upgrade_single(arrays: dict[str, np.ndarray]) -> None:
    """Cache files written before this format held one structure with 0-d energy and hash and no
    structure_index; they read as a batch of one."""
    if "structure_index" not in arrays and "energy" in arrays and np.ndim(arrays["energy"]) == 0:
        arrays["energy"] = np.atleast_1d(arrays["energy"])
        arrays["structure_index"] = np.zeros(len(arrays.get("numbers", [])), np.int64)
        if "structure_hash" in arrays:
            arrays["structure_hash"] = np.atleast_1d(arrays["structure_hash"])


def _inconsistency(arrays: dict[str, np.ndarray], width: int) -> str | None:
    """What is wrong with the arrays of one file, or ``None``."""
    missing = {"energy", "embedding", "numbers", "structure_index"} - set(arrays)
    if missing:
        return f"missing arrays {', '.join(sorted(missing))}"
    energy, embedding, index = arrays["energy"], arrays["embedding"], arrays["structure_index"]
    n_atoms, n_structures = len(arrays["numbers"]), len(energy)
    if energy.ndim != 1 or embedding.shape != (n_atoms, width) or index.shape != (n_atoms,):
        return f"shapes energy {energy.shape}, embedding {embedding.shape}, structure_index {index.shape}"
    if n_atoms and (np.any(np.diff(index) < 0) or index[0] < 0 or index[-1] >= n_structures):
        return "structure_index is not a non-decreasing index into the structures"
    if "forces" in arrays and arrays["forces"].shape != (n_atoms, 3):
        return f"forces of shape {arrays['forces'].shape}"
    if "structure_hash" in arrays and arrays["structure_hash"].shape != (n_structures,):
        return f"{arrays['structure_hash'].shape} structure hashes for {n_structures} structures"
    return None
