"""Search-problem cards: the shipped ones are valid, a bad one names its file and field."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.constraints import FixAtoms

from uipbench.datasets.generate import make_slab
from uipbench.search import ProblemError, all_problems, load_problem
from uipbench.search.problem import problems_dir

CARD = """
name = "my-problem"
description = "test"
protocol = "gpaw-lcao-dzp-pbe-v1"
[slab]
metal = "Cu"
surface_cell = [2, 2]
layers = 3
fixed_layers = 1
vacuum = 6.0
[adsorbates]
composition = { S = 2 }
height_range = [1.2, 3.2]
[min_distances]
S-S = 1.8
Cu-S = 1.8
Cu-Cu = 2.2
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my-problem.toml"
    path.write_text(text)
    return path


def test_shipped_problems_one_per_metal_and_a_harder_one():
    problems = all_problems()
    assert {"cu-s3-3x3", "ag-s3-3x3", "au-s3-3x3"} <= set(problems)
    assert {p.metal for p in problems.values()} == {"Cu", "Ag", "Au"}
    assert max(p.n_adsorbates for p in problems.values()) >= 4
    for name, problem in problems.items():
        assert problem.path == problems_dir() / f"{name}.toml"


def test_template_is_the_protocol_slab_with_the_bottom_layer_fixed():
    problem = load_problem("ag-s3-3x3")
    template = problem.template()
    reference = make_slab("Ag", 3)
    np.testing.assert_allclose(template.positions, reference.positions)
    np.testing.assert_allclose(template.cell.array, reference.cell.array)
    assert tuple(template.pbc) == (True, True, False)
    (constraint,) = template.constraints
    assert isinstance(constraint, FixAtoms)
    z = template.positions[:, 2]
    assert sorted(constraint.get_indices()) == list(np.flatnonzero(np.isclose(z, z.min())))
    assert len(constraint.get_indices()) == 9
    assert problem.adsorbate_symbols == ["S"] * 3


def test_card_from_a_path(tmp_path):
    problem = load_problem(_write(tmp_path, CARD))
    assert problem.name == "my-problem" and problem.surface_cell == (2, 2)
    assert problem.min_distance("S", "Cu") == 1.8
    assert problem.to_dict()["min_distances"] == {"Cu-Cu": 2.2, "Cu-S": 1.8, "S-S": 1.8}


@pytest.mark.parametrize("old, new, field", [
    ('metal = "Cu"', 'metal = "Xx"', "slab.metal"),
    ('metal = "Cu"', 'metal = "Pt"', "slab.metal"),
    ("surface_cell = [2, 2]", "surface_cell = [2, 3]", "slab.surface_cell"),
    ("layers = 3", "layers = 4", "slab.layers"),
    ("layers = 3", 'layers = "3"', "slab.layers"),
    ("fixed_layers = 1", "fixed_layers = 3", "slab.fixed_layers"),
    ("vacuum = 6.0", "vacuum = 8.0", "slab.vacuum"),
    ("composition = { S = 2 }", "composition = { S = 0 }", "adsorbates.composition.S"),
    ("composition = { S = 2 }", "composition = { Qq = 2 }", "adsorbates.composition"),
    ("height_range = [1.2, 3.2]", "height_range = [3.2, 1.2]", "adsorbates.height_range"),
    ("Cu-S = 1.8\n", "", "min_distances"),
    ("S-S = 1.8", "S-S = -1.0", "min_distances.S-S"),
    ('protocol = "gpaw-lcao-dzp-pbe-v1"', 'protocol = "vasp"', "protocol"),
    ('description = "test"\n', "", "description"),
])
def test_bad_card_names_file_and_field(tmp_path, old, new, field):
    assert old in CARD
    path = _write(tmp_path, CARD.replace(old, new, 1))
    with pytest.raises(ProblemError) as info:
        load_problem(path)
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)


def test_unknown_problem_and_broken_toml(tmp_path):
    with pytest.raises(ProblemError, match="unknown search problem 'nope'.*cu-s3-3x3"):
        load_problem("nope")
    with pytest.raises(ProblemError, match="not valid TOML"):
        load_problem(_write(tmp_path, "name = "))
