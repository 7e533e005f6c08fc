"""ORB-v2 adapter, run inside the ``orb`` environment (skipped elsewhere).

Random weights on the real ORB-v2 architecture; the real-weights test skips,
naming the file and the variable to set, when the weights are absent.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("orb_models")

import torch  # noqa: E402
from ase import Atoms  # noqa: E402

from uipbench.adapters import orb as adapter  # noqa: E402
from uipbench.adapters.card import get_card  # noqa: E402
from uipbench.adapters.errors import WeightsError  # noqa: E402
from uipbench.adapters.remote import RemoteBackbone  # noqa: E402

from ..structures import cu_s_slab  # noqa: E402

CARD = get_card("orb-v2-mptrj-only")


@pytest.fixture(scope="module")
def backbone() -> adapter.OrbBackbone:
    return adapter.load(CARD, random_weights=True, seed=0)


@pytest.fixture(scope="module")
def structures() -> list[Atoms]:
    return [cu_s_slab(), cu_s_slab(("fcc", "hcp"), layers=2)]


def test_real_architecture_and_card(backbone):
    meta = backbone.metadata()
    assert meta.width == CARD.embedding_width == 256
    assert meta.weights_sha256 == "random:seed=0"
    assert sum(p.numel() for p in backbone.model.parameters()) == 25_213_601  # ORB-v2
    assert len(backbone.model.model.gnn_stacks) == 15
    assert backbone.model.system_config.radius == CARD.cutoff == 6.0
    assert backbone.model.system_config.max_num_neighbors == 20
    assert len(backbone.supported_numbers) == 89
    assert torch.get_default_dtype() == torch.float32  # the adapter leaves torch's default alone


def test_random_weights_follow_the_seed(backbone):
    def weights(seed: int) -> torch.Tensor:
        model = adapter.build_random_model(CARD, seed, adapter.import_orb())
        return torch.cat([p.detach().flatten()[:1000].double() for p in model.parameters()])

    first = torch.cat([p.flatten()[:1000] for p in backbone.model.parameters()])
    assert torch.equal(weights(0), first)
    assert not torch.equal(weights(1), first)


def test_energy_and_forces_match_package_calculator(backbone, structures):
    emb = backbone.embed(structures[1:], forces=True)[0]
    atoms = backbone.prepare(structures[1])
    atoms.calc = backbone.calculator()
    assert abs(atoms.get_potential_energy() - emb.energy) < 1e-5
    np.testing.assert_allclose(atoms.get_forces(), emb.forces, atol=1e-6)


def test_differentiable_path_returns_direct_forces(backbone, structures):
    out = backbone.forward_differentiable(structures[1])
    reference = backbone.embed(structures[1:], forces=True)[0].forces
    assert out.forces is not None and out.forces.shape == (len(structures[1]), 3)
    np.testing.assert_allclose(out.forces.detach().numpy(), reference, atol=1e-8)
    (grad,) = torch.autograd.grad(out.energy, out.positions)
    assert torch.all(torch.isfinite(grad)) and torch.any(grad != 0)  # energy is connected too


# slab periodicity and bad input are covered for every adapter by test_conformance.py


def test_missing_weights_name_file_and_variable(monkeypatch, tmp_path):
    import cached_path.common

    monkeypatch.delenv(CARD.weights_env_var, raising=False)
    monkeypatch.setattr(cached_path.common, "CACHE_DIRECTORY", tmp_path)
    with pytest.raises(WeightsError, match=f"orb-mptraj-only-v2-20241014.ckpt.*{CARD.weights_env_var}"):
        adapter.load(CARD, download=False)
    with pytest.raises(WeightsError, match="not found"):
        adapter.load(CARD, tmp_path / "absent.ckpt")


def test_status_finds_the_file_where_cached_path_caches_it(monkeypatch, tmp_path):
    """`uipbench backbones` looks in cached_path's cache without importing it: same file as cached_path."""
    import time

    import cached_path
    from cached_path.util import resource_to_filename

    from uipbench.adapters.registry import cached_path_file, status

    monkeypatch.delenv(CARD.weights_env_var, raising=False)
    monkeypatch.setenv("CACHED_PATH_CACHE_ROOT", str(tmp_path))
    url = CARD.weights.source
    assert not status(CARD).weights_present
    old = tmp_path / resource_to_filename(url, etag="old")
    old.write_bytes(b"old")
    (tmp_path / (resource_to_filename(url, etag="old") + ".json")).write_text("{}")
    time.sleep(0.01)
    new = tmp_path / resource_to_filename(url, etag="new")
    new.write_bytes(b"new")
    (tmp_path / resource_to_filename("https://example.org/other.ckpt")).write_bytes(b"other")
    assert cached_path_file(url, CARD.weights.cache_dir) == new
    assert cached_path.find_latest_cached(url, cache_dir=tmp_path) == new
    assert status(CARD).weights_present and status(CARD).weights == new


def test_weights_file_is_checked_and_recorded(backbone, structures, monkeypatch, tmp_path):
    """The file path end to end, with the random model's state dict saved as a checkpoint."""
    path = tmp_path / "orb.ckpt"
    torch.save(backbone.model.state_dict(), path)
    monkeypatch.setenv(CARD.weights_env_var, str(path))
    with pytest.warns(UserWarning, match="pins no sha256"):
        loaded = adapter.load(CARD, download=False)
    assert len(loaded.metadata().weights_sha256) == 64
    assert loaded.embed(structures[:1])[0].energy == backbone.embed(structures[:1])[0].energy
    wrong = dataclasses.replace(CARD, weights=dataclasses.replace(CARD.weights, sha256="0" * 64))
    with pytest.raises(WeightsError, match="sha256"):
        adapter.load(wrong, path)


def test_random_weights_cache_identity_is_the_same_through_the_worker(backbone):
    """Was "random" through the worker and "random:seed=0" in-process: two cache identities."""
    remote = RemoteBackbone(CARD, random_weights=True)
    assert remote.weights_identity() == backbone.weights_identity() == (CARD.name, "random:seed=0", 256, "float64",
                                                                        "float64")


@pytest.mark.real_weights
def test_real_weights(structures):
    try:
        backbone = adapter.load(CARD, download=False)
    except WeightsError as exc:
        pytest.skip(str(exc))
    batch = backbone.embed(structures[:1])
    assert len(batch.metadata.weights_sha256) == 64
    assert batch[0].embedding.shape == (len(structures[0]), 256)
    assert -5.0 < batch[0].energy / len(structures[0]) < -2.0  # Cu-S slab: a few eV per atom
