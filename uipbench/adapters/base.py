"""The one interface every backbone adapter implements, and the checks shared by all of them.

An adapter turns ASE structures into what the Δ-model needs: the backbone's own
total energy and the per-atom embedding the energy readout sees.  Two paths:

* :meth:`Backbone.embed` – NumPy results for many structures (batched), used by
  the cache, the sweep and the CLI; runs in-process or through a worker.
* :meth:`Backbone.forward_differentiable` – torch tensors that stay connected to
  the atomic positions, so a Δ-model on the embedding yields forces by autograd.
"""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from ase import Atoms

if TYPE_CHECKING:  # torch is only needed inside a backbone environment
    import torch


class BackboneInputError(ValueError):
    """A structure cannot be evaluated by a backbone (unknown element, no cell, NaN, ...)."""


@dataclass(frozen=True)
class EmbeddingMetadata:
    """Where an embedding came from."""

    backbone: str
    package: str
    package_version: str
    weights_sha256: str
    layer: str
    width: int
    dtype: str = "float64"
    device: str = "cpu"
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
    """Result of :meth:`Backbone.embed` for several structures."""

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
        """The arrays of ``uipbench embed``: energy, embedding, numbers, structure_index."""
        width = self.metadata.width
        return {
            "energy": self.energies,
            "embedding": np.concatenate([s.embedding for s in self.structures])
            if self.structures else np.zeros((0, width)),
            "numbers": np.concatenate([s.numbers for s in self.structures]).astype(np.int64)
            if self.structures else np.zeros(0, np.int64),
            "structure_index": np.concatenate(
                [np.full(s.n_atoms, i, dtype=np.int64) for i, s in enumerate(self.structures)]
            ) if self.structures else np.zeros(0, np.int64),
        }

    @classmethod
    def from_stacked(cls, arrays: dict[str, np.ndarray], metadata: EmbeddingMetadata) -> "EmbeddingBatch":
        index = arrays["structure_index"]
        structures = []
        for i, energy in enumerate(arrays["energy"]):
            mask = index == i
            structures.append(StructureEmbedding(float(energy), np.asarray(arrays["embedding"][mask], np.float64),
                                                 np.asarray(arrays["numbers"][mask], np.int64)))
        return cls(structures, metadata)


@dataclass
class DifferentiableOutput:
    """Torch view of one structure, connected to ``positions``.

    ``forces`` holds the backbone's own forces when it predicts them directly
    (ORB); otherwise it is ``None`` and the forces are ``-dE/dpositions``.
    """

    positions: "torch.Tensor"  # [n_atoms, 3], part of the autograd graph
    energy: "torch.Tensor"  # scalar
    embedding: "torch.Tensor"  # [n_atoms, d]
    numbers: np.ndarray
    forces: "torch.Tensor | None" = None


class Backbone(abc.ABC):
    """A universal interatomic potential seen through its per-atom embedding."""

    #: the card this adapter was built from
    card: "Any"

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def cutoff(self) -> float:
        return float(self.card.cutoff)

    @property
    @abc.abstractmethod
    def supported_numbers(self) -> frozenset[int]:
        """Atomic numbers the backbone was trained on."""

    @abc.abstractmethod
    def metadata(self) -> EmbeddingMetadata:
        """The metadata record attached to every embedding."""

    @abc.abstractmethod
    def _embed_batch(self, structures: list[Atoms], forces: bool) -> list[StructureEmbedding]:
        """Embed already-checked, fully periodic copies of the structures in one forward pass."""

    @abc.abstractmethod
    def forward_differentiable(self, atoms: Atoms) -> DifferentiableOutput:
        """Energy and embedding as tensors connected to the positions."""

    @abc.abstractmethod
    def calculator(self):
        """The package's own ASE calculator for this backbone (for checks and relaxations)."""

    batch_size: int = 16

    def _card_metadata(self, weights_sha256: str, packages: Sequence[str], **extra: str) -> EmbeddingMetadata:
        """The metadata record of this adapter: card facts plus the installed versions of ``packages``
        (the first one is the backbone's own package)."""
        from importlib import metadata as importlib_metadata

        versions = {p: importlib_metadata.version(p) for p in packages}
        return EmbeddingMetadata(
            backbone=self.name, package=packages[0], package_version=versions[packages[0]],
            weights_sha256=weights_sha256, layer=self.card.embedding_layer,
            width=self.card.embedding_width, dtype="float64", device="cpu",
            versions={**versions, **extra},
        )

    def weights_identity(self) -> tuple[str, str, int]:
        """(backbone name, weights sha256, width): what an embedding cache is keyed by."""
        meta = self.metadata()
        return meta.backbone, meta.weights_sha256, meta.width

    def embed(self, structures: Sequence[Atoms], forces: bool = False) -> EmbeddingBatch:
        """Energies and per-atom embeddings of ``structures``, batched where the package allows."""
        from tqdm.auto import tqdm

        prepared = [self.prepare(a, where=f"structure {i}") for i, a in enumerate(structures)]
        out: list[StructureEmbedding] = []
        starts = range(0, len(prepared), self.batch_size)
        # a bar when there is more than one batch
        for start in tqdm(starts, desc=f"embedding with {self.name}", unit="batch", leave=False,
                          disable=len(starts) <= 1):
            out.extend(self._embed_batch(prepared[start:start + self.batch_size], forces))
        return EmbeddingBatch(out, self.metadata())

    def prepare(self, atoms: Atoms, where: str = "structure") -> Atoms:
        """Check a structure and return a fully periodic copy (see :func:`check_structure`)."""
        return check_structure(atoms, self.supported_numbers, self.cutoff, self.name, where)

    def relax(self, atoms: Atoms, fmax: float = 0.05, steps: int = 200) -> Atoms:
        """Relax a copy with the package's calculator (BFGS, constraints kept), slab pbc restored."""
        from ase.optimize import BFGS

        work = atoms.copy()
        work.pbc = self.prepare(atoms).pbc
        work.calc = self.calculator()
        BFGS(work, logfile=None).run(fmax=fmax, steps=steps)
        out = atoms.copy()
        out.positions = work.positions
        return out


def periodic_gap(atoms: Atoms, axis: int) -> float:
    """Empty space (Å) between the structure and its periodic image along cell vector ``axis``."""
    cell = atoms.cell.array
    normal = np.cross(cell[(axis + 1) % 3], cell[(axis + 2) % 3])
    normal /= np.linalg.norm(normal)
    heights = atoms.positions @ normal
    return float(abs(cell[axis] @ normal) - (heights.max() - heights.min()))


def check_structure(atoms: Atoms, supported: frozenset[int], cutoff: float, backbone: str,
                    where: str = "structure") -> Atoms:
    """Validate a structure for a backbone and return a fully periodic copy.

    Non-periodic directions are made periodic when the vacuum gap exceeds the
    backbone's cutoff (so no atom sees its image); otherwise a clear error.
    """
    if len(atoms) == 0:
        raise BackboneInputError(f"{where}: empty structure (no atoms)")
    positions = np.asarray(atoms.positions)
    if not np.all(np.isfinite(positions)):
        raise BackboneInputError(f"{where}: positions contain NaN or infinite values")
    if atoms.cell.rank < 3 or abs(atoms.cell.volume) < 1e-8:
        raise BackboneInputError(
            f"{where}: structure has no 3D cell (cell volume {atoms.cell.volume:.3g} Å^3); "
            f"{backbone} needs a cell, with vacuum along non-periodic directions"
        )
    unknown = sorted(set(int(z) for z in atoms.numbers) - set(supported))
    if unknown:
        from ase.data import chemical_symbols

        names = ", ".join(chemical_symbols[z] for z in unknown)
        raise BackboneInputError(f"{where}: element(s) {names} not supported by backbone {backbone}")
    out = atoms.copy()
    out.calc = None
    out.set_constraint()
    for axis in range(3):
        if not out.pbc[axis]:
            gap = periodic_gap(out, axis)
            if gap <= cutoff:
                raise BackboneInputError(
                    f"{where}: non-periodic along cell vector {axis} with only {gap:.2f} Å of vacuum, "
                    f"not more than the {cutoff} Å cutoff of {backbone}; add vacuum"
                )
    out.pbc = True
    return out


def check_conformance(backbone: Backbone, structures: Sequence[Atoms], atol: float = 1e-5) -> None:
    """Shared conformance check run by every adapter's tests; raises AssertionError on failure.

    * the input structures are not mutated;
    * shapes and dtypes: embedding [n_atoms, width] float64, numbers match the input;
    * the batched result equals the one-by-one result;
    * repeated calls give identical results;
    * the differentiable path agrees with ``embed`` and is connected to the positions.
    """
    import torch

    before = [(a.positions.copy(), a.numbers.copy(), a.cell.array.copy(), a.pbc.copy(), dict(a.info))
              for a in structures]
    width = backbone.metadata().width
    batch = backbone.embed(structures)
    assert len(batch) == len(structures), "one result per structure"
    for atoms, emb in zip(structures, batch.structures):
        assert emb.embedding.shape == (len(atoms), width), f"embedding shape {emb.embedding.shape}"
        assert emb.embedding.dtype == np.float64, f"embedding dtype {emb.embedding.dtype}"
        assert np.array_equal(emb.numbers, atoms.numbers), "numbers must follow the input order"
        assert np.isfinite(emb.energy) and np.all(np.isfinite(emb.embedding))
    for (pos, num, cell, pbc, info), atoms in zip(before, structures):
        assert np.array_equal(pos, atoms.positions), "positions were mutated"
        assert np.array_equal(num, atoms.numbers), "numbers were mutated"
        assert np.array_equal(cell, atoms.cell.array), "cell was mutated"
        assert np.array_equal(pbc, atoms.pbc), "pbc was mutated"
        assert info == dict(atoms.info), "info was mutated"
    singles = [backbone.embed([a]).structures[0] for a in structures]
    for b, s in zip(batch.structures, singles):
        assert abs(b.energy - s.energy) < atol, f"batched energy {b.energy} != single {s.energy}"
        np.testing.assert_allclose(b.embedding, s.embedding, atol=atol, err_msg="batched != one-by-one")
    again = backbone.embed(structures)
    for a, b in zip(batch.structures, again.structures):
        assert a.energy == b.energy and np.array_equal(a.embedding, b.embedding), "repeat calls differ"
    out = backbone.forward_differentiable(structures[0])
    assert out.embedding.shape == (len(structures[0]), width)
    assert abs(out.energy.item() - batch.structures[0].energy) < atol, "differentiable energy != embed energy"
    np.testing.assert_allclose(out.embedding.detach().cpu().double().numpy(), batch.structures[0].embedding,
                               atol=atol, err_msg="differentiable embedding != embed embedding")
    (grad,) = torch.autograd.grad(out.embedding.sum(), out.positions, allow_unused=True)
    assert grad is not None and torch.any(grad != 0), "embedding is not connected to the positions"
