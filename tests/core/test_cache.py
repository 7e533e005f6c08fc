"""The embedding cache: hits, misses, and corrupt or mismatched files recomputed, never used."""
from __future__ import annotations

import numpy as np
import pytest

from uipbench.cache import CacheWarning, EmbeddingCache, cached_embed
from uipbench.datasets.io import structure_hash

from .fake_backbone import FakeBackbone


def test_second_call_is_served_from_the_cache(tmp_path, slab_structures):
    backbone, cache = FakeBackbone(), EmbeddingCache(tmp_path)
    first = cached_embed(backbone, slab_structures, cache)
    assert backbone.calls == 1
    second = cached_embed(backbone, slab_structures, cache)
    assert backbone.calls == 1, "nothing recomputed"
    for a, b in zip(first.structures, second.structures):
        assert a.energy == b.energy and np.array_equal(a.embedding, b.embedding)
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 3
    with np.load(files[0], allow_pickle=False) as data:  # safe format: no pickle needed
        assert data["embedding"].dtype == np.float64


def test_only_misses_are_computed(tmp_path, slab_structures):
    backbone, cache = FakeBackbone(), EmbeddingCache(tmp_path)
    cached_embed(backbone, slab_structures[:2], cache)
    moved = slab_structures[2].copy()
    moved.positions[0, 0] += 0.01
    batch = cached_embed(backbone, slab_structures[:2] + [moved], cache)
    assert backbone.calls == 2 and len(batch) == 3
    assert len(list(tmp_path.rglob("*.npz"))) == 3


def _path(cache, backbone, atoms):
    return cache.path(backbone.weights_identity(), structure_hash(atoms))


def test_corrupt_file_is_detected_and_recomputed(tmp_path, slab_structures):
    backbone, cache = FakeBackbone(), EmbeddingCache(tmp_path)
    reference = cached_embed(backbone, slab_structures, cache)
    _path(cache, backbone, slab_structures[1]).write_bytes(b"not a zip file")
    with pytest.warns(CacheWarning, match="corrupt cache file"):
        again = cached_embed(backbone, slab_structures, cache)
    assert backbone.calls == 2
    np.testing.assert_array_equal(again[1].embedding, reference[1].embedding)
    with np.load(_path(cache, backbone, slab_structures[1]), allow_pickle=False) as data:
        assert data["embedding"].shape == reference[1].embedding.shape  # rewritten


def test_mismatched_file_is_not_used(tmp_path, slab_structures):
    backbone, cache = FakeBackbone(), EmbeddingCache(tmp_path)
    cached_embed(backbone, slab_structures, cache)
    # file the entry of structure 0 under structure 2's name (e.g. a copied cache)
    src, dst = _path(cache, backbone, slab_structures[0]), _path(cache, backbone, slab_structures[2])
    dst.write_bytes(src.read_bytes())
    with pytest.warns(CacheWarning, match="does not match"):
        batch = cached_embed(backbone, slab_structures, cache)
    fresh = FakeBackbone().embed([slab_structures[2]])[0]
    np.testing.assert_array_equal(batch[2].embedding, fresh.embedding)


def test_other_weights_do_not_share_entries(tmp_path, slab_structures):
    cache = EmbeddingCache(tmp_path)
    a = FakeBackbone()
    cached_embed(a, slab_structures, cache)
    b = FakeBackbone()
    b.weights_identity = lambda: ("fake", "0" * 64, 3)
    b.metadata = lambda: a.metadata().__class__("fake", "none", "0", "0" * 64, "radial sums", 3)
    cached_embed(b, slab_structures, cache)
    assert b.calls == 1
