"""Search problems of the '8' Cu oxide: matrix cells, mixed compositions with the slab's own metal, the
clean slab, compositions that cannot fit; candidates respect every pair's minimum distance; a toy search."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uipbench.datasets.cells import OXIDE_8, cell_area, make_cell_slab
from uipbench.search import ProblemError, SearchSettings, all_problems, load_problem, search_to_folder
from uipbench.search.candidates import CandidateGenerator, blmin
from uipbench.search.engine import rng_for

from .test_search_toy import ToyBackbone

OXIDE_CARD = """
name = "my-oxide"
description = "test"
protocol = "gpaw-lcao-dzp-pbe-v1"
[slab]
metal = "Cu"
surface_cell = [[3, 2], [-1, 2]]
layers = 3
fixed_layers = 1
vacuum = 6.0
[adsorbates]
composition = { Cu = 5, O = 4 }
height_range = [0.6, 3.4]
[min_distances]
Cu-Cu = 2.2
Cu-O = 1.6
O-O = 2.2
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my-oxide.toml"
    path.write_text(text)
    return path


def test_the_shipped_oxide_cards_span_compositions_around_cu5o4():
    problems = {n: p for n, p in all_problems().items() if n.startswith("cu-o8-")}
    compositions = {dict(p.composition).get("Cu", 0) * 10 + dict(p.composition).get("O", 0) for p in problems.values()}
    assert {54, 44, 64, 53, 55, 43, 2, 0} == compositions  # Cu5O4, its one-atom neighbours, Cu4O3, O2, clean
    for problem in problems.values():
        assert problem.surface_cell == ((3, 2), (-1, 2)) and problem.cell_matrix == OXIDE_8.matrix
        template = problem.template()
        assert len(template) == 24 and set(template.get_chemical_symbols()) == {"Cu"}
        np.testing.assert_allclose(template.positions, make_cell_slab("Cu", OXIDE_8).positions)
        assert len(template.constraints[0].get_indices()) == 8  # the bottom layer
        assert problem.to_dict()["slab"]["surface_cell"] == [[3, 2], [-1, 2]]


def test_an_old_card_keeps_its_identity():
    assert load_problem("cu-s3-3x3").to_dict() == {
        "name": "cu-s3-3x3", "description": "Three S on Cu(111) 3x3 (1/3 ML): S-S dimers and trimers compete with "
        "dispersed hollow-site adatoms", "protocol": "gpaw-lcao-dzp-pbe-v1",
        "slab": {"metal": "Cu", "surface_cell": [3, 3], "layers": 3, "fixed_layers": 1, "vacuum": 6.0},
        "adsorbates": {"composition": {"S": 3}, "height_range": [1.2, 3.2]},
        "min_distances": {"Cu-Cu": 2.2, "Cu-S": 1.8, "S-S": 1.8}}
    assert load_problem("cu-s3-3x3").cell_label == "3x3"


@pytest.mark.parametrize("old, new, field, match", [
    ("surface_cell = [[3, 2], [-1, 2]]", "surface_cell = [[2, 3], [2, -1]]", "slab.surface_cell", "determinant -8"),
    ("surface_cell = [[3, 2], [-1, 2]]", "surface_cell = [[3, 2], [-1, 2.5]]", "slab.surface_cell", "two integers"),
    ("surface_cell = [[3, 2], [-1, 2]]", "surface_cell = [[3, 2], [-1]]", "slab.surface_cell", "two integers"),
    ("O-O = 2.2\n", "", "min_distances", "missing O-O"),
    ("composition = { Cu = 5, O = 4 }", "composition = { Cu = 40, O = 40 }", "adsorbates.composition",
     "80 adsorbates cannot fit the \\[\\[3, 2\\], \\[-1, 2\\]\\] cell: at most 40"),
    ("composition = { Cu = 5, O = 4 }", "composition = { Cu = 1, O = 21 }", "adsorbates.composition",
     "21 O cannot fit .* at most 20 O .* O-O minimum distance 2.2"),
])
def test_bad_oxide_card_names_file_and_field(tmp_path, old, new, field, match):
    assert old in OXIDE_CARD
    path = _write(tmp_path, OXIDE_CARD.replace(old, new, 1))
    with pytest.raises(ProblemError, match=match) as info:
        load_problem(path)
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)


def test_the_largest_composition_that_passes_the_bound_is_read(tmp_path):
    """The bound of the test above is tight: 20 O (2 layers of 10 disks of 2.2 Å in 45.7 Å²) are read."""
    assert cell_area("Cu", OXIDE_8.matrix) == pytest.approx(45.696, abs=1e-3)
    problem = load_problem(_write(tmp_path, OXIDE_CARD.replace("{ Cu = 5, O = 4 }", "{ Cu = 1, O = 20 }")))
    assert problem.n_adsorbates == 21


def _contacts_respected(atoms, n_slab: int, limits: dict) -> bool:
    d = atoms.get_all_distances(mic=True)
    z = atoms.numbers
    for i in range(n_slab, len(atoms)):
        for j in range(len(atoms)):
            if i != j and d[i, j] < limits[(z[i], z[j])] - 1e-9:
                return False
    return True


def test_mixed_candidates_respect_every_pair_and_the_region():
    problem = load_problem("cu-o8-cu5o4")
    generator = CandidateGenerator(problem)
    limits = blmin(problem)
    assert {(29, 29), (29, 8), (8, 8)} <= set(limits)
    top = generator.z_top
    for k in range(6):
        atoms = generator.random(rng_for(3, k, 0))
        assert atoms.get_chemical_symbols()[24:] == ["Cu"] * 5 + ["O"] * 4
        heights = atoms.positions[24:, 2] - top
        assert np.all((heights >= 0.6) & (heights <= 3.4))
        assert _contacts_respected(atoms, 24, limits) and generator.is_valid(atoms)
        np.testing.assert_allclose(atoms.positions[:24], generator.template.positions)  # the slab untouched
    again = generator.random(rng_for(3, 0, 0))
    np.testing.assert_allclose(again.positions, generator.random(rng_for(3, 0, 0)).positions)  # its seed's


def test_a_composition_the_placement_cannot_realise_is_a_candidate_error(tmp_path):
    from uipbench.search.candidates import CandidateError

    # 6 Cu pass the area bound (10) of a thin region, but no Cu there is 2.2 Å from the slab (a hollow needs 1.63 Å)
    path = _write(tmp_path, OXIDE_CARD.replace("{ Cu = 5, O = 4 }", "{ Cu = 6 }")
                  .replace("height_range = [0.6, 3.4]", "height_range = [0.6, 1.2]"))
    with pytest.raises(CandidateError, match="could not place 6 Cu atom by atom"):
        CandidateGenerator(load_problem(path)).random(np.random.default_rng(0))


def test_clean_slab_and_oxide_searches_run_with_a_toy_backbone(tmp_path):
    backbone = ToyBackbone(supported=("Cu", "O"))  # O is one more "metal" to the toy: mechanics only
    settings = SearchSettings("random", seed=1)
    clean = search_to_folder(load_problem("cu-o8-clean"), backbone, budget=1, settings=settings,
                             out=tmp_path / "clean", progress=False, figures=False)
    assert len(clean.evaluations) == 1 and len(clean.best.atoms) == 24
    oxide = search_to_folder(load_problem("cu-o8-cu4o3"), backbone, budget=2, settings=settings,
                             out=tmp_path / "cu4o3", progress=False, figures=False)
    assert len(oxide.evaluations) == 2
    assert oxide.best.atoms.get_chemical_formula() == "Cu28O3"
    for path in ("clean/minima.extxyz", "clean/minima.csv", "cu4o3/minima.extxyz"):
        assert (tmp_path / path).stat().st_size > 0


def test_basin_moves_of_an_oxide_go_atom_by_atom_and_stay_valid():
    problem = load_problem("cu-o8-cu6o4")
    generator = CandidateGenerator(problem)
    assert generator.atom_by_atom and not CandidateGenerator(load_problem("cu-s3-3x3")).atom_by_atom
    limits = blmin(problem)
    for k in range(4):
        start = generator.random(rng_for(5, k, 0))
        moved = generator.perturb(start, rng_for(5, k, 1), 1.5)
        assert moved is not None and generator.is_valid(moved) and _contacts_respected(moved, 24, limits)
        assert not np.allclose(moved.positions[24:], start.positions[24:])
        np.testing.assert_allclose(moved.positions[:24], start.positions[:24])
        again = generator.perturb(start, rng_for(5, k, 1), 1.5)
        np.testing.assert_allclose(again.positions, moved.positions)


def test_active_learning_base_data_follow_the_adsorbates():
    from uipbench.search.active_command import default_systems

    assert default_systems(load_problem("cu-o8-cu5o4")) == ["cu-o"]
    assert default_systems(load_problem("cu-s3-3x3")) == ["cu-s"]
    assert default_systems(load_problem("ag-s3-3x3")) == ["ag-s"]
