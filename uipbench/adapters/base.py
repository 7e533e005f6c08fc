"""Where the adapter interface used to live; kept so that older imports keep working.

The interface is in :mod:`uipbench.adapters.interface`, the conformance check in
:mod:`uipbench.adapters.conformance`, the embedding records in :mod:`uipbench.embedding`.
"""
from ..embedding import EmbeddingBatch, EmbeddingMetadata, StructureEmbedding
from .conformance import check_conformance
from .errors import BackboneInputError
from .interface import Backbone, DifferentiableOutput, check_structure, periodic_gap

__all__ = ["Backbone", "BackboneInputError", "DifferentiableOutput", "EmbeddingBatch", "EmbeddingMetadata",
           "StructureEmbedding", "check_conformance", "check_structure", "periodic_gap"]
