"""Bad input is refused before any relaxation, with a message naming the problem; the Δ path runs."""
from __future__ import annotations

import pytest
from ase.io import read

from tests.core.test_search_toy import ToyBackbone, toy_delta_model, toy_problem
from uipbench.delta import BackboneMismatchError, DeltaGPR, load, save
from uipbench.search import SearchInputError, SearchSettings, search, search_to_folder
from uipbench.search.candidates import CandidateError
from uipbench.search.store import delta_sha256


def _refused(tmp_path, problem, backbone, delta=None, error=SearchInputError, match=""):
    """The search raises ``error`` and has neither relaxed anything nor written its folder."""
    with pytest.raises(error, match=match):
        search_to_folder(problem, backbone, delta, budget=2, out=tmp_path / "out", progress=False)
    assert backbone.calls == 0 and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def toy_delta() -> DeltaGPR:
    return toy_delta_model()


def test_element_the_backbone_does_not_support(tmp_path):
    _refused(tmp_path, toy_problem(), ToyBackbone(supported=("Cu",)), match="element\\(s\\) S not supported by "
                                                                            "backbone toy-morse")
    _refused(tmp_path, toy_problem(metal="Ag"), ToyBackbone(supported=("Cu", "S")), match="Ag not supported")


def test_composition_that_cannot_fit_the_cell(tmp_path):
    _refused(tmp_path, toy_problem(n_sulfur=30), ToyBackbone(), match="30 adsorbates cannot fit the 2x2 cell: at most")


def test_composition_that_passes_the_area_bound_but_cannot_be_placed(tmp_path):
    problem = toy_problem(n_sulfur=8, height_range=(1.9, 2.1))  # 8 fit hexagonally, random placement jams
    _refused(tmp_path, problem, ToyBackbone(), error=CandidateError, match="could not place 8 S")


def test_template_without_fixed_atoms(tmp_path):
    _refused(tmp_path, toy_problem(fixed_layers=0), ToyBackbone(), match="no fixed atoms")


def test_template_with_overlapping_atoms(tmp_path):
    slab = toy_problem().template()
    slab.positions[7] = slab.positions[8] + [0.3, 0.0, 0.0]
    _refused(tmp_path, toy_problem().with_template(slab), ToyBackbone(), match="atoms 7 \\(Cu\\) and 8 \\(Cu\\) "
                                                                                "overlap: 0.30 Å apart")


def test_too_little_vacuum_for_the_cutoff(tmp_path):
    slab = toy_problem().template()
    slab.cell[2, 2] = 11.0  # 3.6 Å between the top of the region and the next slab: under the 4.5 Å cutoff
    _refused(tmp_path, toy_problem().with_template(slab), ToyBackbone(), error=ValueError, match="vacuum")


def test_delta_from_another_backbone_or_weights(tmp_path, toy_delta):
    backbone = ToyBackbone()
    path = tmp_path / "models" / "toy"
    save(toy_delta, path, "other-backbone", backbone.card.weights_sha256)
    _refused(tmp_path, toy_problem(), backbone, load(path), error=BackboneMismatchError,
             match="fitted on backbone 'other-backbone', not 'toy-morse'")
    save(toy_delta, path, backbone.name, "0" * 64)
    _refused(tmp_path, toy_problem(), backbone, load(path), error=BackboneMismatchError, match="refit it for these")


def test_delta_never_trained_on_an_element_of_the_problem(tmp_path, toy_delta):
    _refused(tmp_path, toy_problem(metal="Ag"), ToyBackbone(), toy_delta, match="not trained on Ag")


def test_bad_settings_and_budget():
    with pytest.raises(ValueError, match="unknown search algorithm 'gofee'"):
        SearchSettings("gofee")
    with pytest.raises(ValueError, match="budget must be at least 1"):
        search(toy_problem(), ToyBackbone(), budget=0)


def test_delta_corrected_search_records_sigma_and_the_model(tmp_path, toy_delta):
    backbone = ToyBackbone()
    path = tmp_path / "models" / "toy"
    save(toy_delta, path, backbone.name, backbone.card.weights_sha256)
    loaded = load(path)
    assert delta_sha256(loaded) == delta_sha256(toy_delta)
    summary = search_to_folder(toy_problem(), backbone, loaded, budget=2, out=tmp_path / "run", progress=False,
                               figures=False)
    assert all(e.energy_std is not None and e.energy_std >= 0 for e in summary.evaluations)
    first = read(tmp_path / "run" / "minima.extxyz", index=0)
    assert first.info["delta_sha256"] == delta_sha256(toy_delta)
    assert first.info["predicted_energy_std"] == pytest.approx(summary.best.energy_std)
    bare = ToyBackbone().energy_forces(summary.best.atoms)[0]
    delta_energy = float(toy_delta.predict(ToyBackbone().embed([summary.best.atoms]).structures)[0])
    assert summary.best.energy == pytest.approx(bare + delta_energy, abs=1e-6)
