"""From per-atom embeddings of structures to the points a kernel compares.

Three aggregations (the words of the field):

* ``global``  – one point per structure: the sum (or mean) of its atomic embeddings;
* ``species`` – one point per structure: per-species sums (or means) concatenated
  over a fixed species list taken from the training data;
* ``atomic``  – one point per atom; a structure's energy is the sum of atomic
  contributions, so the structure–structure kernel is a sum of atom–atom kernels.

The NumPy path (:func:`aggregate`) serves fit/predict, the torch path
(:func:`aggregate_torch`) the differentiable prediction; both give the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import scipy.sparse as sp

from ..embedding import EmbeddingBatch, StructureEmbedding

if TYPE_CHECKING:
    import torch

AGGREGATIONS = ("global", "species", "atomic")
REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class Structures:
    """The atoms of several structures, flattened; a structure's atoms are contiguous."""

    embedding: np.ndarray  # [n_atoms_total, d] float64
    numbers: np.ndarray  # [n_atoms_total] int64
    index: np.ndarray  # [n_atoms_total] int64, structure of each atom, non-decreasing
    n_structures: int

    @property
    def width(self) -> int:
        return int(self.embedding.shape[1])

    @property
    def bounds(self) -> np.ndarray:
        """[n_structures + 1]: structure s holds atoms ``bounds[s]:bounds[s + 1]``."""
        return np.searchsorted(self.index, np.arange(self.n_structures + 1))

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @classmethod
    def from_rows(cls, X: np.ndarray) -> "Structures":
        """A 2-D array where each row is one structure made of one atom of species 0."""
        n = X.shape[0]
        return cls(np.asarray(X, np.float64), np.zeros(n, np.int64), np.arange(n, dtype=np.int64), n)

    def species_counts(self, species: np.ndarray) -> np.ndarray:
        """[n_structures, n_species] number of atoms of each species in each structure."""
        column = np.searchsorted(species, self.numbers)
        column = np.clip(column, 0, max(len(species) - 1, 0))
        known = species[column] == self.numbers if len(species) else np.zeros(self.n_atoms, bool)
        counts = np.zeros((self.n_structures, len(species)))
        np.add.at(counts, (self.index[known], column[known]), 1.0)
        return counts


@dataclass(frozen=True)
class Points:
    """What the kernel compares: ``features[p]`` belongs to structure ``owner[p]``."""

    features: np.ndarray  # [n_points, D]
    species: np.ndarray  # [n_points] atomic number (atomic) or 0 (structure-level points)
    owner: np.ndarray  # [n_points], non-decreasing
    n_structures: int

    @property
    def n_points(self) -> int:
        return int(self.features.shape[0])

    @property
    def one_per_structure(self) -> bool:
        return self.n_points == self.n_structures

    @property
    def bounds(self) -> np.ndarray:
        """[n_structures + 1]: structure s owns points ``bounds[s]:bounds[s + 1]``."""
        return np.searchsorted(self.owner, np.arange(self.n_structures + 1))

    def summing_matrix(self, start: int = 0, stop: int | None = None) -> sp.csr_matrix:
        """[n_structures, stop - start] matrix that sums points ``start:stop`` into their structures."""
        stop = self.n_points if stop is None else stop
        cols = np.arange(stop - start)
        return sp.csr_matrix((np.ones(stop - start), (self.owner[start:stop], cols)),
                             shape=(self.n_structures, stop - start))

    def with_features(self, features: np.ndarray) -> "Points":
        return Points(features, self.species, self.owner, self.n_structures)


def _is_structure_item(item: Any) -> bool:
    if isinstance(item, StructureEmbedding):
        return True
    return isinstance(item, (tuple, list)) and len(item) == 2 and np.ndim(item[0]) == 2


def is_structure_list(X: Any) -> bool:
    """True for an :class:`EmbeddingBatch` or a non-empty sequence of structures.

    A structure is a :class:`StructureEmbedding` or an ``(embedding [n_atoms, d],
    numbers [n_atoms])`` pair; anything else is treated as a plain 2-D array.
    """
    if isinstance(X, EmbeddingBatch):
        return True
    if not isinstance(X, (list, tuple)) or len(X) == 0:
        return False
    return _is_structure_item(X[0])


def structures_from_items(X: Sequence[Any] | EmbeddingBatch) -> Structures:
    """Validate a list of structures and flatten it."""
    items = X.structures if isinstance(X, EmbeddingBatch) else list(X)
    embeddings: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    width: int | None = None
    for i, item in enumerate(items):
        if isinstance(item, StructureEmbedding):
            emb, num = item.embedding, item.numbers
        elif _is_structure_item(item):
            emb, num = item
        else:
            raise ValueError(f"structure {i}: expected a StructureEmbedding or an (embedding [n_atoms, d], "
                             f"numbers [n_atoms]) pair, got {type(item).__name__}")
        emb = np.asarray(emb, dtype=np.float64)
        num = np.asarray(num)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError(f"structure {i}: embedding must be a non-empty [n_atoms, d] array, "
                             f"got shape {emb.shape}")
        if num.shape != (emb.shape[0],):
            raise ValueError(f"structure {i}: numbers has shape {num.shape}, expected ({emb.shape[0]},) "
                             f"to match the embedding")
        if num.dtype.kind not in "iu" and not (num.dtype.kind == "f" and np.all(num == np.round(num))):
            raise ValueError(f"structure {i}: numbers must be integers (atomic numbers), got {num.dtype}")
        if width is None:
            width = emb.shape[1]
        elif emb.shape[1] != width:
            raise ValueError(f"structure {i}: embedding width {emb.shape[1]} differs from {width} "
                             f"of structure 0; all structures must come from one backbone layer")
        if not np.all(np.isfinite(emb)):
            raise ValueError(f"structure {i}: embedding contains NaN or inf")
        embeddings.append(emb)
        numbers.append(num.astype(np.int64))
    if not embeddings:
        raise ValueError("no structures given (n_samples=0)")
    index = np.concatenate([np.full(len(n), i, np.int64) for i, n in enumerate(numbers)])
    return Structures(np.concatenate(embeddings), np.concatenate(numbers), index, len(embeddings))


def _segment_reduce(values: np.ndarray, owner: np.ndarray, n: int, reduce: str) -> np.ndarray:
    """Sum (or mean) of the rows of ``values`` per owner; owners without rows give zeros."""
    summing = sp.csr_matrix((np.ones(len(owner)), (owner, np.arange(len(owner)))), shape=(n, len(owner)))
    out = np.asarray(summing @ values)
    if reduce == "mean":
        counts = np.bincount(owner, minlength=n).astype(np.float64)
        out /= np.maximum(counts, 1.0)[:, None]
    return out


def aggregate(structures: Structures, aggregation: str, species: np.ndarray, reduce: str = "sum") -> Points:
    """The kernel points of ``structures`` (see module doc)."""
    n = structures.n_structures
    if aggregation == "atomic":
        return Points(structures.embedding, structures.numbers, structures.index, n)
    owner = np.arange(n, dtype=np.int64)
    zeros = np.zeros(n, np.int64)
    if aggregation == "global":
        return Points(_segment_reduce(structures.embedding, structures.index, n, reduce), zeros, owner, n)
    if aggregation == "species":
        blocks = []
        for z in species:
            mask = structures.numbers == z
            blocks.append(_segment_reduce(structures.embedding[mask], structures.index[mask], n, reduce))
        return Points(np.concatenate(blocks, axis=1), zeros, owner, n)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def aggregate_torch(embedding: "torch.Tensor", numbers: np.ndarray, aggregation: str, species: np.ndarray,
                    reduce: str = "sum") -> "torch.Tensor":
    """Differentiable :func:`aggregate` for one structure: [n_points, D] tensor."""
    import torch

    if aggregation == "atomic":
        return embedding
    if aggregation == "global":
        return (embedding.mean(0) if reduce == "mean" else embedding.sum(0))[None, :]
    if aggregation == "species":
        blocks = []
        for z in species:
            mask = torch.as_tensor(numbers == z)
            part = embedding[mask]
            if reduce == "mean" and part.shape[0] > 0:
                blocks.append(part.mean(0))
            else:
                blocks.append(part.sum(0))
        return torch.cat(blocks)[None, :]
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
