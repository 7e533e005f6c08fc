"""The embedding records and their one .npz format (cache, worker and `uipbench embed`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from uipbench.embedding import EmbeddingBatch, EmbeddingFileError, EmbeddingMetadata, StructureEmbedding, \
    read_embeddings, write_embeddings

META = EmbeddingMetadata("fake", "none", "0", "f" * 64, "radial sums", 3)


def _batch(n_atoms=(3, 5), forces=True) -> EmbeddingBatch:
    rng = np.random.default_rng(1)
    return EmbeddingBatch([
        StructureEmbedding(float(rng.normal()), rng.normal(size=(n, 3)), rng.integers(1, 90, n),
                           rng.normal(size=(n, 3)) if forces else None)
        for n in n_atoms
    ], META)


@pytest.mark.parametrize("forces", [True, False])
def test_round_trip_keeps_every_array_and_the_metadata(tmp_path, forces):
    batch = _batch(forces=forces)
    write_embeddings(tmp_path / "e.npz", batch, ["a", "b"])
    again, hashes = read_embeddings(tmp_path / "e.npz")
    assert hashes == ["a", "b"] and again.metadata == META
    for a, b in zip(batch, again):
        assert a.energy == b.energy and np.array_equal(a.embedding, b.embedding)
        assert np.array_equal(a.numbers, b.numbers) and b.numbers.dtype == np.int64
        assert (a.forces is None and b.forces is None) or np.array_equal(a.forces, b.forces)
    with np.load(tmp_path / "e.npz", allow_pickle=False) as data:
        assert np.array_equal(data["structure_index"], [0, 0, 0, 1, 1, 1, 1, 1])


def test_an_empty_batch_round_trips(tmp_path):
    write_embeddings(tmp_path / "e.npz", EmbeddingBatch([], META))
    batch, hashes = read_embeddings(tmp_path / "e.npz")
    assert len(batch) == 0 and hashes is None


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(embedding=a["embedding"][:, :2]), "shapes"),
    (lambda a: a.update(structure_index=a["structure_index"][::-1].copy()), "non-decreasing"),
    (lambda a: a.pop("numbers"), "missing arrays numbers"),
    (lambda a: a.update(forces=a["forces"][:2]), "forces of shape"),
    (lambda a: a.update(metadata_json=np.array("{not json")), "not a readable embedding file"),
], ids=["width", "index-order", "missing", "forces", "metadata"])
def test_inconsistent_files_are_clear_errors_naming_the_file(tmp_path, change, message):
    path = tmp_path / "e.npz"
    arrays = _batch().stacked()
    arrays["metadata_json"] = np.array(json.dumps(META.to_dict()))
    change(arrays)
    np.savez(path, **arrays)
    with pytest.raises(EmbeddingFileError, match=f"{path}.*{message}"):
        read_embeddings(path)


def test_not_a_zip_file_is_a_clear_error(tmp_path):
    (tmp_path / "e.npz").write_bytes(b"nothing")
    with pytest.raises(EmbeddingFileError, match="not a readable embedding file"):
        read_embeddings(tmp_path / "e.npz")
