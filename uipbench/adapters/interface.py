"""The one interface every backbone adapter implements, and the checks shared by all of them.

An adapter turns ASE structures into what the Δ-model needs: the backbone's own
total energy and the per-atom embedding the energy readout sees.  Two paths:

* :meth:`Backbone.embed` – NumPy results for many structures (batched), used by
  the cache, the sweep and the CLI; runs in-process or through a worker.
* :meth:`Backbone.forward_differentiable` – torch tensors that stay connected to
  the atomic positions, so a Δ-model on the embedding yields forces by autograd.

Every family module (``chgnet``, ``sevennet``, ``mace``, ``orb``) has one entry point with
the signature of :class:`Loader`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
from ase import Atoms

from ..embedding import EmbeddingBatch, EmbeddingMetadata, Identity, StructureEmbedding
from .errors import BackboneInputError

if TYPE_CHECKING:  # torch is only needed inside a backbone environment
    import torch

    from .card import BackboneCard

__all__ = ["Backbone", "BackboneInputError", "DifferentiableOutput", "EmbeddingBatch", "EmbeddingMetadata",
           "Loader", "StructureEmbedding", "check_structure", "periodic_gap"]


class Loader(Protocol):
    """The one ``load`` signature of every family module.

    ``weights``: a weights file (else the card's environment variable, the package's wheel or
    cache, or a download when ``download``); ``random_weights``: the card's architecture with
    weights drawn from ``seed`` (identified as ``random:seed=<seed>``); ``precision``: ``float32``
    or ``float64`` (``None``: the family's default; one it cannot honour is a PrecisionError);
    ``trust_unpinned_weights``: allow unpickling a file whose sha256 the card does not pin.
    """

    def __call__(self, card: "BackboneCard", weights: Path | None = None, *, random_weights: bool = False,
                 seed: int = 0, precision: str | None = None, trust_unpinned_weights: bool = False,
                 download: bool = True) -> "Backbone": ...


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
    #: the floating-point precision the model runs in, and its family's default (the adapters of families
    #: that run in float64 only keep these)
    precision: str = "float64"
    default_precision: str = "float64"

    def _card_metadata(self, weights_sha256: str, packages: Sequence[str], **extra: str) -> EmbeddingMetadata:
        """The metadata record of this adapter: card facts plus the installed versions of ``packages``
        (the first one is the backbone's own package)."""
        from importlib import metadata as importlib_metadata

        versions = {p: importlib_metadata.version(p) for p in packages}
        return EmbeddingMetadata(
            backbone=self.name, package=packages[0], package_version=versions[packages[0]],
            weights_sha256=weights_sha256, layer=self.card.embedding_layer,
            width=self.card.embedding_width, dtype="float64", device="cpu",
            versions={**versions, **extra}, precision=self.precision,
        )

    def weights_identity(self) -> Identity:
        """What an embedding cache is keyed by: name, weights sha256, width and precision."""
        meta = self.metadata()
        return Identity(meta.backbone, meta.weights_sha256, meta.width, self.precision, self.default_precision)

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
