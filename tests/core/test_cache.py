"""The embedding cache: hits, misses, and corrupt or mismatched files recomputed, never used."""
from __future__ import annotations

import numpy as np
import pytest

from uipbench.cache import CacheWarning, EmbeddingCache, Identity, cached_embed
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
    b.weights_identity = lambda: Identity("fake", "0" * 64, 3, "float64", "float64")
    b.metadata = lambda: a.metadata().__class__("fake", "none", "0", "0" * 64, "radial sums", 3)
    cached_embed(b, slab_structures, cache)
    assert b.calls == 1


def test_entries_in_the_layout_before_the_one_format_still_hit(tmp_path, slab_structures):
    """Cache files written before embedding.py (0-d energy and hash, no structure_index) are read as they are."""
    import json

    backbone, cache = FakeBackbone(), EmbeddingCache(tmp_path)
    atoms = slab_structures[0]
    entry = backbone.embed([atoms])[0]
    path = _path(cache, backbone, atoms)
    path.parent.mkdir(parents=True)
    np.savez(path, energy=np.float64(entry.energy), embedding=entry.embedding, numbers=entry.numbers,
             structure_hash=np.array(structure_hash(atoms)),
             metadata_json=np.array(json.dumps(backbone.metadata().to_dict())))
    calls = backbone.calls
    batch = cached_embed(backbone, [atoms], cache)
    assert backbone.calls == calls, "served from the old file"
    np.testing.assert_array_equal(batch[0].embedding, entry.embedding)


def test_the_precision_is_part_of_the_identity(tmp_path, slab_structures):
    """float32 and float64 embeddings of one backbone and weights are separate entries, each a hit for its own."""
    cache = EmbeddingCache(tmp_path)
    single, double = FakeBackbone("float32"), FakeBackbone("float64")
    in_double = cached_embed(double, slab_structures, cache)
    in_single = cached_embed(single, slab_structures, cache)
    assert single.calls == 1, "a float32 backbone does not get the float64 entries"
    assert not np.array_equal(in_single[0].embedding, in_double[0].embedding)
    assert in_single.metadata.precision == "float32" and in_double.metadata.precision == "float64"
    for fresh, expected in ((FakeBackbone("float32"), in_single), (FakeBackbone("float64"), in_double)):
        again = cached_embed(fresh, slab_structures, cache)
        assert fresh.calls == 0, f"{fresh.precision}: served from its own entries"
        assert all(np.array_equal(a.embedding, b.embedding) for a, b in zip(again, expected))
    assert len(list(tmp_path.rglob("*.npz"))) == 6
    assert single.weights_identity() == ("fake", "f" * 64, 3, "float32", "float64")


def _write_old_entry(path, atoms, entry, metadata: dict) -> None:
    """A cache file as written before precision was part of the key (its metadata has no precision field)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, energy=np.array([entry.energy]), embedding=entry.embedding, numbers=entry.numbers,
             structure_index=np.zeros(len(atoms), np.int64), structure_hash=np.array([structure_hash(atoms)]),
             metadata_json=np.array(json.dumps(metadata)))


def test_entries_written_before_precision_was_recorded_are_of_the_default_precision(tmp_path, slab_structures):
    """An old entry (no precision recorded) serves the family's default precision and only that; an old entry that
    records another precision in ``versions`` (as CHGNet and SevenNet did) does not serve the default one."""
    cache, atoms = EmbeddingCache(tmp_path), slab_structures[0]
    entry = FakeBackbone("float64").embed([atoms])[0]
    default = FakeBackbone("float64")
    old = {k: v for k, v in default.metadata().to_dict().items() if k != "precision"}
    _write_old_entry(_path(cache, default, atoms), atoms, entry, old)
    assert cached_embed(default, [atoms], cache)[0].energy == entry.energy and default.calls == 0, "a hit"
    single = FakeBackbone("float32")
    assert cached_embed(single, [atoms], cache) and single.calls == 1, "not the float32 entry"
    _write_old_entry(_path(cache, default, atoms), atoms, entry, {**old, "versions": {"model_precision": "float32"}})
    fresh = FakeBackbone("float64")
    with pytest.warns(CacheWarning, match="precision float32, not float64"):
        cached_embed(fresh, [atoms], cache)
    assert fresh.calls == 1


def test_a_cache_that_cannot_be_written_still_returns_the_embeddings_with_one_warning(tmp_path, slab_structures):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory should be")
    backbone = FakeBackbone()
    with pytest.warns(CacheWarning, match=f"embedding cache {blocked} cannot be written") as caught:
        batch = cached_embed(backbone, slab_structures, EmbeddingCache(blocked))
    assert len([w for w in caught if issubclass(w.category, CacheWarning)]) == 1
    fresh = FakeBackbone().embed(slab_structures)
    assert len(batch) == 3 and all(np.array_equal(a.embedding, b.embedding) for a, b in zip(batch, fresh))


def test_cache_files_are_the_one_embedding_format(tmp_path, slab_structures):
    from uipbench.embedding import read_embeddings

    backbone, cache = FakeBackbone(), EmbeddingCache(tmp_path)
    cached_embed(backbone, slab_structures[:1], cache, forces=True)
    batch, hashes = read_embeddings(_path(cache, backbone, slab_structures[0]))
    assert hashes == [structure_hash(slab_structures[0])] and len(batch) == 1
    assert batch[0].forces.shape == (len(slab_structures[0]), 3)
    assert batch.metadata == backbone.metadata()


def test_leftover_temporary_files_are_ignored_and_the_stale_ones_removed_by_the_next_write(tmp_path, slab_structures):
    """Planted leftovers of killed writes beside the entries: lookups never read them; the next write into their
    folder removes those whose writer is gone (this host) or that are old, and keeps writes that may be running."""
    import os
    import subprocess
    import sys
    import time
    import warnings

    from uipbench._atomic import STALE_TEMPORARY_S, host_tag

    cache, atoms = EmbeddingCache(tmp_path), slab_structures[0]
    folder = _path(cache, FakeBackbone(), atoms).parent
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    key = f".{structure_hash(atoms)}.npz"
    planted = {  # name -> (age in s, removed?)
        f"{key}.uipbench-{host_tag()}-{int(dead.stdout)}-dead1234.tmp": (0, True),  # its writer is gone
        f"{key}.uipbench-{host_tag()}-{os.getpid()}-live1234.tmp": (0, False),  # a write of a live process
        f"{key}.uipbench-0badc0de-{os.getpid()}-away1234.tmp": (0, False),  # another host's: cannot tell yet
        f"{key}.uipbench-0badc0de-1-oldaway1.tmp": (STALE_TEMPORARY_S + 60, True),  # ... until it is old
        f"{key}.abcd1234.tmp": (STALE_TEMPORARY_S + 60, True),  # named before writers were recorded, old
        "notes.txt": (STALE_TEMPORARY_S + 60, False),  # not a temporary file
    }
    for name, (age, _) in planted.items():
        (folder / name).write_bytes(b"PK\x03\x04 half an npz")
        os.utime(folder / name, (time.time() - age, time.time() - age))
    backbone = FakeBackbone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.lookup(backbone.weights_identity(), atoms) is None  # the leftovers are no entry
        cached_embed(backbone, [atoms], cache)
    assert {name: not (folder / name).exists() for name in planted} == {n: gone for n, (_, gone) in planted.items()}
    assert cached_embed(FakeBackbone(), [atoms], cache) and (folder / f"{structure_hash(atoms)}.npz").is_file()
