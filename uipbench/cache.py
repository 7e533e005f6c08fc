"""On-disk cache of backbone embeddings.

One ``.npz`` per (backbone card, weights sha256, structure content hash), under
``<root>/<backbone>/<weights sha256[:16]>/<structure hash>.npz`` — arrays only,
the metadata as a JSON string, loaded with ``allow_pickle=False`` and written
atomically.  A file that does not parse, or whose contents do not match the
structure or backbone it is filed under, is reported and recomputed, never used.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from ._atomic import write_atomic
from .adapters.base import Backbone, EmbeddingBatch, EmbeddingMetadata, StructureEmbedding
from .datasets.io import structure_hash
from .paths import cache_dir


class CacheWarning(UserWarning):
    """A cache entry was corrupt or mismatched and is recomputed."""


def default_cache_dir() -> Path:
    return cache_dir()


class EmbeddingCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, identity: tuple[str, str, int], key: str) -> Path:
        backbone, sha256, _ = identity
        return self.root / backbone / sha256[:16] / f"{key}.npz"

    def get(self, identity: tuple[str, str, int], atoms: Atoms, forces: bool = False) -> StructureEmbedding | None:
        """The cached embedding of ``atoms`` for backbone ``identity`` = (name, weights sha256, width)."""
        found = self.lookup(identity, atoms, forces)
        return found[0] if found else None

    def lookup(self, identity: tuple[str, str, int], atoms: Atoms,
               forces: bool = False) -> tuple[StructureEmbedding, EmbeddingMetadata] | None:
        """The cached embedding and the metadata it was stored with, or ``None`` (miss or unusable file)."""
        backbone, sha256, width = identity
        key = structure_hash(atoms)
        path = self.path(identity, key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = json.loads(str(data["metadata_json"]))
                entry = StructureEmbedding(
                    energy=float(data["energy"]),
                    embedding=np.asarray(data["embedding"], dtype=np.float64),
                    numbers=np.asarray(data["numbers"], dtype=np.int64),
                    forces=np.asarray(data["forces"]) if "forces" in data.files else None,
                )
                recorded_key = str(data["structure_hash"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            warnings.warn(f"corrupt cache file {path} ({type(exc).__name__}: {exc}); recomputing", CacheWarning,
                          stacklevel=3)
            return None
        problems = []
        if recorded_key != key:
            problems.append("structure hash")
        if stored.get("backbone") != backbone or stored.get("weights_sha256") != sha256:
            problems.append("backbone or weights")
        if entry.embedding.shape != (len(atoms), width) or not np.array_equal(entry.numbers, atoms.numbers):
            problems.append("shape or atomic numbers")
        if not np.isfinite(entry.energy) or not np.all(np.isfinite(entry.embedding)):
            problems.append("non-finite values")
        if problems:
            warnings.warn(f"cache file {path} does not match ({', '.join(problems)}); recomputing", CacheWarning,
                          stacklevel=3)
            return None
        if forces and entry.forces is None:
            return None
        return entry, EmbeddingMetadata.from_dict(stored)

    def put(self, metadata: EmbeddingMetadata, atoms: Atoms, entry: StructureEmbedding) -> Path:
        key = structure_hash(atoms)
        path = self.path((metadata.backbone, metadata.weights_sha256, metadata.width), key)
        arrays = {
            "energy": np.float64(entry.energy),
            "embedding": np.asarray(entry.embedding, dtype=np.float64),
            "numbers": np.asarray(entry.numbers, dtype=np.int64),
            "structure_hash": np.array(key),
            "metadata_json": np.array(json.dumps(metadata.to_dict())),
        }
        if entry.forces is not None:
            arrays["forces"] = np.asarray(entry.forces, dtype=np.float64)
        write_atomic(path, lambda fh: np.savez(fh, **arrays), mode="wb")
        return path


def cached_embed(backbone: Backbone, structures: Sequence[Atoms], cache: EmbeddingCache | None = None,
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
        for i, entry in zip(missing, batch.structures):
            cache.put(metadata, structures[i], entry)
            found[i] = entry
    if metadata is None:
        metadata = backbone.metadata()
    return EmbeddingBatch(list(found), metadata)  # type: ignore[arg-type]
