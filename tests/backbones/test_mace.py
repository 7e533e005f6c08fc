"""MACE-MP-0 adapter, run inside the ``mace`` environment (skipped elsewhere).

Random weights on the real MACE-MP-0 medium architecture; the real-weights test
skips, naming the file and the variable to set, when the weights are absent.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np
import pytest

# Like pytest.importorskip("mace"), without importing mace before the adapter does: mace's
# __init__ sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 for the process, which the adapter undoes.
if importlib.util.find_spec("mace") is None:
    pytest.skip("mace-torch is not installed here: run inside the mace environment", allow_module_level=True)

NO_WEIGHTS_ONLY_BEFORE = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")

import torch  # noqa: E402
from ase import Atoms  # noqa: E402

from uipbench.adapters import mace as adapter  # noqa: E402
from uipbench.adapters.card import get_card  # noqa: E402
from uipbench.adapters.errors import UntrustedWeightsError, WeightsError  # noqa: E402
from uipbench.adapters.remote import RemoteBackbone  # noqa: E402

from ..structures import cu_s_slab  # noqa: E402

CARD = get_card("mace-mp-0-medium")


@pytest.fixture(scope="module")
def backbone() -> adapter.MaceBackbone:
    return adapter.load(CARD, random_weights=True, seed=0)


@pytest.fixture(scope="module")
def structures() -> list[Atoms]:
    return [cu_s_slab(), cu_s_slab(("fcc", "hcp"), layers=2)]


def test_real_architecture_and_card(backbone):
    meta = backbone.metadata()
    assert meta.width == CARD.embedding_width == 256
    assert meta.weights_sha256 == "random:seed=0"
    assert sum(p.numel() for p in backbone.model.parameters()) == 4_688_656  # MACE-MP-0 medium
    assert [str(p.linear.irreps_out) for p in backbone.model.products] == ["128x0e+128x1o", "128x0e"]
    assert backbone.supported_numbers == adapter.MPTRJ_NUMBERS and len(backbone.supported_numbers) == 89
    assert float(backbone.model.r_max) == CARD.cutoff == 6.0


def test_import_leaves_torch_load_weights_only(backbone):
    assert os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD") == NO_WEIGHTS_ONLY_BEFORE


def test_energy_forces_and_descriptors_match_package_calculator(backbone, structures):
    emb = backbone.embed(structures[1:], forces=True)[0]
    atoms = backbone.prepare(structures[1])
    calc = backbone.calculator()
    atoms.calc = calc
    assert abs(atoms.get_potential_energy() - emb.energy) < 1e-5
    np.testing.assert_allclose(atoms.get_forces(), emb.forces, atol=1e-6)
    np.testing.assert_allclose(calc.get_descriptors(atoms, invariants_only=True), emb.embedding, atol=1e-8)


def test_differentiable_forces_are_energy_gradient(backbone, structures):
    out = backbone.forward_differentiable(structures[1])
    assert out.forces is None  # MACE forces are -dE/dr
    (grad,) = torch.autograd.grad(out.energy, out.positions)
    reference = backbone.embed(structures[1:], forces=True)[0].forces
    np.testing.assert_allclose(-grad.numpy(), reference, atol=1e-8)


# slab periodicity and bad input are covered for every adapter by test_conformance.py


def test_missing_weights_name_file_and_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(CARD.weights_env_var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match=f"2023-12-03-mace-128-L1_epoch-199.model.*{CARD.weights_env_var}"):
        adapter.load(CARD, download=False)
    with pytest.raises(WeightsError, match="not found"):
        adapter.load(CARD, tmp_path / "absent.model")


def test_random_weights_cache_identity_is_the_same_through_the_worker(backbone):
    """Was "random" through the worker and "random:seed=0" in-process: two cache identities."""
    remote = RemoteBackbone(CARD, random_weights=True)
    assert remote.weights_identity() == backbone.weights_identity() == (CARD.name, "random:seed=0", 256, "float64",
                                                                        "float64")
    assert RemoteBackbone(CARD, random_weights=True, seed=3).weights_identity()[1] == "random:seed=3"


def test_weights_file_is_checked_and_recorded(backbone, structures, monkeypatch, tmp_path):
    """The file path end to end, with the random model saved the way mace saves models (a pickle):
    refused while unpinned and untrusted, used when trusted or pinned."""
    path = tmp_path / "model.model"
    torch.save(backbone.model, path)
    monkeypatch.setenv(CARD.weights_env_var, str(path))
    with pytest.raises(UntrustedWeightsError, match=f"refusing to load {path} \\(sha256 [0-9a-f]{{64}}\\).*"
                                                    "--trust-unpinned-weights"):
        adapter.load(CARD, download=False)
    with pytest.warns(UserWarning, match="pins no sha256.*trusted by the user"):
        loaded = adapter.load(CARD, download=False, trust_unpinned_weights=True)
    digest = loaded.metadata().weights_sha256
    assert len(digest) == 64 and digest != backbone.metadata().weights_sha256
    assert loaded.embed(structures[:1])[0].energy == backbone.embed(structures[:1])[0].energy
    pinned = dataclasses.replace(CARD, weights=dataclasses.replace(CARD.weights, sha256=digest))
    assert adapter.load(pinned, path).metadata().weights_sha256 == digest
    wrong = dataclasses.replace(CARD, weights=dataclasses.replace(CARD.weights, sha256="0" * 64))
    with pytest.raises(WeightsError, match="sha256"):
        adapter.load(wrong, path, trust_unpinned_weights=True)


class _CreatesAFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_crafted_model_file_is_refused_in_process_and_through_the_worker(tmp_path):
    marker, crafted = tmp_path / "created-by-unpickling", tmp_path / "crafted.model"
    torch.save(_CreatesAFile(marker), crafted)
    with pytest.raises(UntrustedWeightsError, match=str(crafted)):
        adapter.load(CARD, crafted)
    with pytest.raises(UntrustedWeightsError, match=str(crafted)):
        RemoteBackbone(CARD, crafted).metadata()
    assert not marker.exists()
    with pytest.raises(Exception):  # the file is what the test says: trusting it runs its code
        adapter.load(CARD, crafted, trust_unpinned_weights=True)
    assert marker.exists()


@pytest.mark.real_weights
def test_real_weights(structures):
    try:
        backbone = adapter.load(CARD, download=False, trust_unpinned_weights=True)
    except WeightsError as exc:
        pytest.skip(str(exc))
    batch = backbone.embed(structures[:1])
    assert len(batch.metadata.weights_sha256) == 64
    assert batch[0].embedding.shape == (len(structures[0]), 256)
    assert -5.0 < batch[0].energy / len(structures[0]) < -2.0  # Cu-S slab: a few eV per atom
