"""A tiny deterministic backbone for tests of the layers above the adapters (no ML package)."""
from __future__ import annotations

import numpy as np
from ase import Atoms

from uipbench.adapters.interface import Backbone, DifferentiableOutput
from uipbench.embedding import EmbeddingMetadata, StructureEmbedding


class FakeCard:
    name = "fake"
    cutoff = 4.0
    embedding_width = 3
    embedding_layer = "radial sums"


class FakeBackbone(Backbone):
    """Embedding = three radial sums per atom; energy = -sum of the first column. Counts its calls.

    ``precision="float32"`` rounds its results to float32, as a model run in float32 would
    (its family's default is float64)."""

    def __init__(self, precision: str = "float64") -> None:
        self.card = FakeCard()
        self.calls = 0
        self.precision = precision

    @property
    def supported_numbers(self) -> frozenset[int]:
        return frozenset({16, 29, 47, 79})

    def metadata(self) -> EmbeddingMetadata:
        return EmbeddingMetadata("fake", "none", "0", "f" * 64, "radial sums", 3, precision=self.precision)

    def _embed_batch(self, structures: list[Atoms], forces: bool) -> list[StructureEmbedding]:
        self.calls += 1
        out = []
        for atoms in structures:
            d = atoms.get_all_distances(mic=True)
            np.fill_diagonal(d, np.inf)
            emb = np.stack([np.exp(-(d / w) ** 2).sum(axis=1) for w in (1.5, 2.5, 3.5)], axis=1)
            emb = emb.astype(self.precision).astype(np.float64)
            fake_forces = 0.01 * (atoms.positions - atoms.positions.mean(axis=0)) if forces else None
            out.append(StructureEmbedding(float(-emb[:, 0].sum()), emb, atoms.numbers.astype(np.int64), fake_forces))
        return out

    def forward_differentiable(self, atoms: Atoms) -> DifferentiableOutput:
        raise NotImplementedError

    def calculator(self):
        raise NotImplementedError
