"""On-disk cache of backbone embeddings.

One file per (backbone card, weights sha256, structure content hash), under
``<root>/<backbone>/<weights sha256[:16]>/<structure hash>.npz``, in the one
embedding format of :mod:`uipbench.embedding` (a batch of one structure, with its
hash), written atomically.  A file that does not parse, or whose contents do not
match the structure or backbone it is filed under, is reported and recomputed,
never used.  A cache that cannot be written does not lose the computed embeddings:
they are returned, with one warning naming the directory.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from ase import Atoms

from .datasets.io import structure_hash
from .embedding import EmbeddingBatch, EmbeddingFileError, EmbeddingMetadata, StructureEmbedding, \
    read_embeddings, write_embeddings
from .paths import cache_dir

if TYPE_CHECKING:
    from .adapters.interface import Backbone

#: (backbone name, weights sha256 or random-weights identity, embedding width)
Identity = tuple[str, str, int]


class CacheWarning(UserWarning):
    """A cache entry was corrupt or mismatched and is recomputed, or the cache cannot be written."""


def default_cache_dir() -> Path:
    return cache_dir()


class EmbeddingCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, identity: Identity, key: str) -> Path:
        backbone, sha256, _ = identity
        return self.root / backbone / sha256[:16] / f"{key}.npz"

    def get(self, identity: Identity, atoms: Atoms, forces: bool = False) -> StructureEmbedding | None:
        """The cached embedding of ``atoms`` for backbone ``identity`` = (name, weights sha256, width)."""
        found = self.lookup(identity, atoms, forces)
        return found[0] if found else None

    def lookup(self, identity: Identity, atoms: Atoms,
               forces: bool = False) -> tuple[StructureEmbedding, EmbeddingMetadata] | None:
        """The cached embedding and the metadata it was stored with, or ``None`` (miss or unusable file)."""
        key = structure_hash(atoms)
        path = self.path(identity, key)
        if not path.exists():
            return None
        try:
            batch, hashes = read_embeddings(path)
        except EmbeddingFileError as exc:
            warnings.warn(f"corrupt cache file {path} ({exc.__cause__ or exc}); recomputing", CacheWarning,
                          stacklevel=3)
            return None
        problems = _mismatches(identity, atoms, key, batch, hashes)
        if problems:
            warnings.warn(f"cache file {path} does not match ({', '.join(problems)}); recomputing", CacheWarning,
                          stacklevel=3)
            return None
        entry = batch.structures[0]
        if forces and entry.forces is None:
            return None
        return entry, batch.metadata

    def put(self, metadata: EmbeddingMetadata, atoms: Atoms, entry: StructureEmbedding) -> Path:
        """File ``entry`` (the embedding of ``atoms``); an ``OSError`` when the cache cannot be written."""
        key = structure_hash(atoms)
        path = self.path((metadata.backbone, metadata.weights_sha256, metadata.width), key)
        write_embeddings(path, EmbeddingBatch([entry], metadata), [key])
        return path


def _mismatches(identity: Identity, atoms: Atoms, key: str, batch: EmbeddingBatch,
                hashes: list[str] | None) -> list[str]:
    """What in a cache file disagrees with the structure and backbone it is filed under."""
    backbone, sha256, width = identity
    if len(batch) != 1:
        return [f"{len(batch)} structures in one entry"]
    entry, problems = batch.structures[0], []
    if hashes != [key]:
        problems.append("structure hash")
    if batch.metadata.backbone != backbone or batch.metadata.weights_sha256 != sha256:
        problems.append("backbone or weights")
    if entry.embedding.shape != (len(atoms), width) or not np.array_equal(entry.numbers, atoms.numbers):
        problems.append("shape or atomic numbers")
    if not np.isfinite(entry.energy) or not np.all(np.isfinite(entry.embedding)):
        problems.append("non-finite values")
    return problems


def _store(cache: EmbeddingCache, metadata: EmbeddingMetadata, structures: Sequence[Atoms],
           entries: Sequence[StructureEmbedding]) -> None:
    """File the new entries; when the cache cannot be written, one warning naming its directory."""
    for atoms, entry in zip(structures, entries):
        try:
            cache.put(metadata, atoms, entry)
        except OSError as exc:
            warnings.warn(f"embedding cache {cache.root} cannot be written ({type(exc).__name__}: {exc}); "
                          f"the {len(entries)} new embedding(s) are used but not cached", CacheWarning,
                          stacklevel=3)
            return


def cached_embed(backbone: "Backbone", structures: Sequence[Atoms], cache: EmbeddingCache | None = None,
                 forces: bool = False) -> EmbeddingBatch:
    """``backbone.embed`` with the cache in front: only the misses are computed (in one batch)."""
    cache = cache or EmbeddingCache()
    identity = backbone.weights_identity()
    hits = [cache.lookup(identity, a, forces) for a in structures]
    found = [hit[0] if hit else None for hit in hits]
    missing = [i for i, entry in enumerate(found) if entry is None]
    metadata = next((hit[1] for hit in hits if hit), None)
    if missing:
        batch = backbone.embed([structures[i] for i in missing], forces=forces)
        metadata = batch.metadata
        _store(cache, metadata, [structures[i] for i in missing], batch.structures)
        for i, entry in zip(missing, batch.structures):
            found[i] = entry
    if metadata is None:
        metadata = backbone.metadata()
    return EmbeddingBatch(list(found), metadata)  # type: ignore[arg-type]
