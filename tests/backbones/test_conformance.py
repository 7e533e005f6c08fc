"""The shared conformance test every backbone adapter must pass.

Runs in each backbone environment (``make test`` does that) and covers every card whose
package is importable there: real weights when present, otherwise the real architecture
with random weights (the weights-dependent checks are then the same, only the numbers differ).
"""
from __future__ import annotations

import dataclasses
import importlib
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import fcc111

from uipbench.adapters.card import all_cards, get_card
from uipbench.adapters.conformance import check_conformance
from uipbench.adapters.errors import BackboneInputError, PrecisionError, WeightsError
from uipbench.adapters.registry import FAMILIES, importable_here, load_backbone, status
from uipbench.adapters.remote import RemoteBackbone
from uipbench.cache import EmbeddingCache, cached_embed

HERE = [name for name, card in sorted(all_cards().items()) if importable_here(card)]
if not HERE:
    pytest.skip("no backbone package is importable in this environment", allow_module_level=True)
#: one card of each family importable here (the load path is the family's, not the card's)
ONE_PER_FAMILY = sorted({all_cards()[name].family: name for name in reversed(HERE)}.values())

_loaded: dict[str, object] = {}
_random: dict[str, object] = {}


def random_backbone(name: str):
    """The card's architecture with random weights from seed 0, in-process (loaded once per session)."""
    if name not in _random:
        _random[name] = load_backbone(name, in_process=True, random_weights=True)
    return _random[name]


def backbone_for(name: str):
    """Real weights when present, else the same architecture with random weights (no download try)."""
    if name not in _loaded:
        present = status(get_card(name)).weights_present
        try:
            _loaded[name] = load_backbone(name, in_process=True, random_weights=not present)
        except WeightsError:  # present by the card's rules, but e.g. a corrupt or mismatched file
            _loaded[name] = load_backbone(name, in_process=True, random_weights=True)
    return _loaded[name]


@pytest.fixture(params=HERE)
def backbone(request):
    return backbone_for(request.param)


def test_conformance(backbone, slab_structures):
    check_conformance(backbone, slab_structures)


def test_width_matches_card(backbone, slab_structures):
    batch = backbone.embed(slab_structures[:1])
    assert batch.metadata.width == backbone.card.embedding_width
    assert batch.structures[0].embedding.shape[1] == backbone.card.embedding_width
    assert batch.metadata.backbone == backbone.name


def test_energy_matches_the_package_calculator(backbone, slab_structures):
    """embed's energy is the package's own ASE calculator energy (same model) to 1e-5 eV."""
    calc = backbone.calculator()
    batch = backbone.embed(slab_structures)
    for atoms, emb in zip(slab_structures, batch.structures):
        periodic = atoms.copy()
        periodic.pbc = True
        periodic.calc = calc
        assert emb.energy == pytest.approx(periodic.get_potential_energy(), abs=1e-5)


def test_slab_pbc_false_along_z_equals_fully_periodic(backbone, slab_structures):
    slab = slab_structures[0]
    periodic = slab.copy()
    periodic.pbc = True
    a, b = backbone.embed([slab, periodic]).structures
    assert a.energy == pytest.approx(b.energy, abs=1e-6)
    np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-6)


def test_too_little_vacuum_is_an_error(backbone):
    slab = fcc111("Cu", size=(2, 2, 3), a=3.632, vacuum=1.0, periodic=False)
    slab.pbc = (True, True, False)
    with pytest.raises(BackboneInputError, match="vacuum"):
        backbone.embed([slab])


def test_forces_are_minus_energy_gradient_or_direct(backbone, slab_structures):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = backbone.embed(slab_structures[:1], forces=True)
    forces = batch.structures[0].forces
    assert forces.shape == (len(slab_structures[0]), 3) and np.all(np.isfinite(forces))
    # energies leave autograd cleanly (no float() of a tensor that requires grad, in our code or theirs)
    assert not [str(w.message) for w in caught if "requires_grad=True to a scalar" in str(w.message)]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Atoms(cell=[10, 10, 10], pbc=True), "empty structure"),
        (lambda: Atoms("CuS", positions=[[0, 0, 0], [np.nan, 0, 2]], cell=[8, 8, 8], pbc=True), "NaN"),
        (lambda: Atoms("CuS", positions=[[0, 0, 0], [0, 0, 2.1]]), "no 3D cell"),
        (lambda: Atoms("CuOg", positions=[[0, 0, 0], [0, 0, 2.1]], cell=[8, 8, 8], pbc=True), "Og"),
    ],
    ids=["empty", "nan-positions", "no-cell", "unknown-element"],
)
def test_bad_input_is_a_clear_error(backbone, make, message):
    with pytest.raises(BackboneInputError, match=message):
        backbone.embed([make()])
    with pytest.raises(BackboneInputError, match=message):
        backbone.forward_differentiable(make())


@pytest.fixture(params=ONE_PER_FAMILY)
def family_card(request):
    return request.param


def test_the_one_load_signature_runs_in_float64(family_card, slab_structures):
    import torch

    backbone = load_backbone(family_card, in_process=True, random_weights=True, precision="float64")
    assert next(backbone.model.parameters()).dtype == torch.float64
    emb = backbone.embed(slab_structures[:1])[0]
    assert emb.embedding.dtype == np.float64 and np.isfinite(emb.energy)


def test_a_precision_the_family_cannot_honour_is_refused_naming_family_and_precision(family_card):
    card = get_card(family_card)
    supported = importlib.import_module(FAMILIES[card.family][0]).PRECISIONS
    for precision in ("float32", "float64", "float16"):
        if precision not in supported:
            with pytest.raises(PrecisionError, match=f"{card.family} backbones cannot run in precision '{precision}'"
                               if precision != "float16" else "unknown precision 'float16'"):
                load_backbone(family_card, in_process=True, random_weights=True, precision=precision)


def test_the_precision_is_part_of_the_cache_identity_in_process_and_through_the_worker(family_card):
    supported = importlib.import_module(FAMILIES[get_card(family_card).family][0]).PRECISIONS
    for precision in supported:
        local = load_backbone(family_card, in_process=True, random_weights=True, precision=precision)
        remote = load_backbone(family_card, in_process=False, random_weights=True, precision=precision)
        assert local.weights_identity() == remote.weights_identity()
        assert local.weights_identity()[3:] == (precision, supported[0])
        assert local.metadata().precision == precision


def _no_worker(*_args, **_kwargs):
    raise AssertionError("a cache hit must compute nothing (no worker, no model)")


def test_random_weights_have_one_cache_identity_in_process_and_through_the_worker(
        family_card, slab_structures, tmp_path, monkeypatch):
    local = random_backbone(family_card)
    remote = load_backbone(family_card, in_process=False, random_weights=True)
    assert isinstance(remote, RemoteBackbone)
    width = get_card(family_card).embedding_width
    default = importlib.import_module(FAMILIES[get_card(family_card).family][0]).PRECISIONS[0]
    assert remote.weights_identity() == local.weights_identity() == (family_card, "random:seed=0", width, default,
                                                                      default)
    cache = EmbeddingCache(tmp_path)
    first = cached_embed(local, slab_structures[:1], cache)
    monkeypatch.setattr(remote, "_call", _no_worker)
    again = cached_embed(remote, slab_structures[:1], cache)
    assert again[0].energy == first[0].energy and np.array_equal(again[0].embedding, first[0].embedding)


@pytest.mark.slow
def test_an_embedding_made_through_the_worker_is_a_cache_hit_in_process(family_card, slab_structures, tmp_path,
                                                                        monkeypatch):
    cache = EmbeddingCache(tmp_path)
    remote = load_backbone(family_card, in_process=False, random_weights=True)
    through_worker = cached_embed(remote, slab_structures[1:2], cache)
    local = random_backbone(family_card)
    in_process = local.embed(slab_structures[1:2])[0]
    assert abs(through_worker[0].energy - in_process.energy) < 1e-6, "the same model on both sides"
    monkeypatch.setattr(local, "embed", _no_worker)
    again = cached_embed(local, slab_structures[1:2], cache)
    assert again[0].energy == through_worker[0].energy
    np.testing.assert_array_equal(again[0].embedding, through_worker[0].embedding)


class _CreatesAFile:
    """Unpickling this creates ``path``: the stand-in for code hidden in a weights file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_crafted_weights_file_runs_no_code(family_card, tmp_path):
    """Every family, with its card's pin removed: the file is refused (untrusted, or not weights-only),
    and the code it holds never runs."""
    import torch

    marker, crafted = tmp_path / "created-by-unpickling", tmp_path / "crafted.weights"
    torch.save({"model": _CreatesAFile(marker), "config": {}, "model_state_dict": {}}, crafted)
    card = get_card(family_card)
    unpinned = dataclasses.replace(card, weights=dataclasses.replace(card.weights, sha256=""))
    module = importlib.import_module(FAMILIES[card.family][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(WeightsError, match=str(crafted)):
            module.load(unpinned, crafted)
    assert not marker.exists(), "the crafted file ran code"


def test_missing_weights_through_the_worker_are_one_clear_error(family_card, tmp_path, monkeypatch, capfd):
    card = get_card(family_card)
    monkeypatch.setenv(card.weights_env_var, str(tmp_path / "absent.weights"))
    with pytest.raises(WeightsError) as info:
        RemoteBackbone(card, download=False).metadata()
    message = str(info.value)
    assert message == f"{family_card}: weights file {tmp_path / 'absent.weights'} not found"
    assert "Traceback" not in capfd.readouterr().err


def test_weights_absent_through_the_worker_are_one_paragraph(family_card, tmp_path, monkeypatch, capfd):
    """No file, nothing in the package's cache, no download: one clear error, not a worker traceback."""
    card = get_card(family_card)
    if not card.weights.source.startswith("https:"):
        pytest.skip(f"{family_card}'s weights ship with its package")
    monkeypatch.delenv(card.weights_env_var, raising=False)
    for variable in ("XDG_CACHE_HOME", "CACHED_PATH_CACHE_ROOT"):  # mace's cache, cached_path's (orb)
        monkeypatch.setenv(variable, str(tmp_path))
    with pytest.raises(WeightsError) as info:
        RemoteBackbone(card, download=False).metadata()
    message = str(info.value)
    assert "\n" not in message and card.weights_env_var in message and card.weights.source in message
    assert "Traceback" not in capfd.readouterr().err
