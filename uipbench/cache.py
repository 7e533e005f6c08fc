"""On-disk cache of backbone embeddings.

One file per (backbone card, weights sha256, model precision, structure content hash), under
``<root>/<backbone>/<weights sha256[:16]>/<structure hash>.npz`` for the precision the backbone's
family runs in by default and ``<root>/<backbone>/<weights sha256[:16]>-<precision>/...`` for the
other one, in the one embedding format of :mod:`uipbench.embedding` (a batch of one structure,
with its hash), written atomically.  A file that does not parse, or whose contents do not
match the structure, backbone or precision it is filed under, is reported and recomputed,
never used.  A cache that cannot be written does not lose the computed embeddings: they are
returned, with one warning naming the directory.

A write killed midway (SIGKILL) leaves a temporary file beside the entry (see :mod:`uipbench._atomic`):
lookups read entries by their own name only, so it is never read, and the first write into its folder
(per :class:`EmbeddingCache`) removes the leftovers whose writer is gone or which are old.

Entries written before precision was part of the key stay valid: they lie where the default
precision's entries lie, and a file that records no precision is of the default one (CHGNet and
SevenNet files record it since those families could run in float64; MACE and ORB run in float64
only), so an entry of the other precision filed there is recognised and recomputed.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from ase import Atoms

from ._atomic import remove_stale_temporaries
from .datasets.io import structure_hash
from .embedding import EmbeddingBatch, EmbeddingFileError, EmbeddingMetadata, Identity, StructureEmbedding, \
    read_embeddings, write_embeddings
from .paths import cache_dir

if TYPE_CHECKING:
    from .adapters.interface import Backbone

__all__ = ["CacheWarning", "EmbeddingCache", "Identity", "cached_embed", "default_cache_dir"]


class CacheWarning(UserWarning):
    """A cache entry was corrupt or mismatched and is recomputed, or the cache cannot be written."""


def default_cache_dir() -> Path:
    return cache_dir()


class EmbeddingCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._swept: set[Path] = set()  # folders whose leftover temporary files were removed

    def path(self, identity: Identity, key: str) -> Path:
        folder = identity.weights_sha256[:16]
        if identity.precision != identity.default_precision:
            folder += f"-{identity.precision}"
        return self.root / identity.backbone / folder / f"{key}.npz"

    def get(self, identity: Identity, atoms: Atoms, forces: bool = False) -> StructureEmbedding | None:
        """The cached embedding of ``atoms`` for backbone ``identity``."""
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
        return entry, _with_precision(batch.metadata, identity)

    def put(self, identity: Identity, metadata: EmbeddingMetadata, atoms: Atoms, entry: StructureEmbedding) -> Path:
        """File ``entry`` (the embedding of ``atoms`` by backbone ``identity``, described by ``metadata``);
        an ``OSError`` when the cache cannot be written."""
        key = structure_hash(atoms)
        path = self.path(identity, key)
        if path.parent not in self._swept and path.parent.is_dir():
            remove_stale_temporaries(path.parent)
            self._swept.add(path.parent)
        write_embeddings(path, EmbeddingBatch([entry], _with_precision(metadata, identity)), [key])
        return path


def _with_precision(metadata: EmbeddingMetadata, identity: Identity) -> EmbeddingMetadata:
    """``metadata`` saying the precision of ``identity`` where it says none (see the module docstring)."""
    return metadata if metadata.recorded_precision() else replace(metadata, precision=identity.precision)


def _mismatches(identity: Identity, atoms: Atoms, key: str, batch: EmbeddingBatch,
                hashes: list[str] | None) -> list[str]:
    """What in a cache file disagrees with the structure, backbone and precision it is filed under."""
    if len(batch) != 1:
        return [f"{len(batch)} structures in one entry"]
    entry, meta, problems = batch.structures[0], batch.metadata, []
    if hashes != [key]:
        problems.append("structure hash")
    if meta.backbone != identity.backbone or meta.weights_sha256 != identity.weights_sha256:
        problems.append("backbone or weights")
    precision = meta.recorded_precision() or identity.default_precision  # see the module docstring
    if precision != identity.precision:
        problems.append(f"precision {precision}, not {identity.precision}")
    if entry.embedding.shape != (len(atoms), identity.width) or not np.array_equal(entry.numbers, atoms.numbers):
        problems.append("shape or atomic numbers")
    if not np.isfinite(entry.energy) or not np.all(np.isfinite(entry.embedding)):
        problems.append("non-finite values")
    return problems


def _store(cache: EmbeddingCache, identity: Identity, metadata: EmbeddingMetadata, structures: Sequence[Atoms],
           entries: Sequence[StructureEmbedding]) -> None:
    """File the new entries; when the cache cannot be written, one warning naming its directory."""
    for atoms, entry in zip(structures, entries):
        try:
            cache.put(identity, metadata, atoms, entry)
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
        _store(cache, identity, metadata, [structures[i] for i in missing], batch.structures)
        for i, entry in zip(missing, batch.structures):
            found[i] = entry
    if metadata is None:
        metadata = backbone.metadata()
    return EmbeddingBatch(list(found), metadata)  # type: ignore[arg-type]
