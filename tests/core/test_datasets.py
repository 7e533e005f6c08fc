"""Generator, dataset I/O, validation and splitting (no DFT here; see test_labelling.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from uipbench.datasets.generate import BLOCK_SIZE, MIN_CONTACT, plan, plan_entry
from uipbench.datasets.io import (DatasetError, count_summary, load, read_structures, structure_hash,
                                  to_extxyz_text, train_test_split, validate)
from uipbench.datasets.label import write_card, generator_settings
from uipbench.datasets.protocol import PROTOCOL_V1, system_metal


def test_plan_is_deterministic_and_prefix_stable():
    short = plan("ag-s", 6)
    long = plan("ag-s", 12)
    for a, b in zip(short, long):
        assert a.plan_id == b.plan_id
        assert np.array_equal(a.atoms.positions, b.atoms.positions)


@pytest.mark.parametrize("system", ["cu-s", "ag-s", "au-s"])
def test_plan_geometries_follow_the_protocol(system):
    metal = system_metal(system)
    for entry in plan(system, 54):
        atoms = entry.atoms
        assert tuple(atoms.pbc) == PROTOCOL_V1.pbc
        assert atoms.get_chemical_symbols().count("S") == entry.n_sulfur
        assert 1 <= entry.n_sulfur <= 4 and entry.repeat in (2, 3)
        assert atoms.get_chemical_symbols().count(metal) == 3 * entry.repeat**2
        d = atoms.get_all_distances(mic=True)
        s = atoms.numbers == 16
        np.fill_diagonal(d, np.inf)
        assert d[np.ix_(s, s)].min(initial=np.inf) >= MIN_CONTACT["S-S"]
        assert d[np.ix_(~s, s)].min() >= MIN_CONTACT["M-S"]
        if entry.motif in ("dimer", "cluster"):
            assert d[np.ix_(s, s)].min() < 2.4, "an S–S motif must contain an S–S bond"
        if entry.motif in ("adatom", "dispersed") and entry.n_sulfur > 1:
            assert d[np.ix_(s, s)].min() >= 2.4, "dispersed S atoms are not bonded"


def test_plan_blocks_share_a_composition_and_third_of_cells_are_3x3():
    entries = plan("cu-s", 60)
    for start in range(0, 60, BLOCK_SIZE):
        block = entries[start:start + BLOCK_SIZE]
        assert len({e.atoms.get_chemical_formula() for e in block}) == 1
    assert sum(e.repeat == 3 for e in entries) >= 20


def test_distorted_heights_in_range():
    for entry in plan("au-s", 54):
        if entry.variant == "distorted":
            atoms = entry.atoms
            top = atoms.positions[atoms.numbers != 16, 2].max()
            heights = atoms.positions[atoms.numbers == 16, 2] - top
            # heights are drawn in 1.3–2.5 Å above the (rattled) top layer
            assert np.all(heights > 1.0) and np.all(heights < 2.9)


def test_unknown_system_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown system 'pt-s'"):
        plan_entry("pt-s", 0)
    with pytest.raises(DatasetError, match="unknown system 'pt-s'"):
        load("pt-s", root=tmp_path)


def _write_dataset(tmp_path, structures, system="cu-s"):
    directory = tmp_path / system
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "structures.extxyz").write_text(to_extxyz_text(structures))
    write_card(directory, system, structures, PROTOCOL_V1, generator_settings(0, None))
    return directory


def test_load_and_validate_roundtrip(tmp_path, labelled_structures):
    _write_dataset(tmp_path, labelled_structures)
    loaded = load("cu-s", root=tmp_path)
    assert len(loaded) == 3
    for a, b in zip(loaded, labelled_structures):
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy())
        np.testing.assert_allclose(a.get_forces(), b.get_forces())
    report = validate("cu-s", root=tmp_path)
    assert report.ok, report.problems


def test_malformed_extxyz_is_a_clear_error(tmp_path, labelled_structures):
    directory = _write_dataset(tmp_path, labelled_structures)
    text = (directory / "structures.extxyz").read_text().splitlines()
    (directory / "structures.extxyz").write_text("\n".join(text[:5]) + "\nthis is not an atom line\n")
    with pytest.raises(DatasetError, match="malformed extxyz"):
        load("cu-s", root=tmp_path)
    assert not validate("cu-s", root=tmp_path).ok


def test_missing_energy_is_a_clear_error(tmp_path, labelled_structures):
    unlabelled = [a.copy() for a in labelled_structures]  # copy() drops the calculator
    for a in unlabelled:
        a.info.update(protocol="gpaw-lcao-dzp-pbe-v1")
    directory = tmp_path / "cu-s"
    directory.mkdir()
    (directory / "structures.extxyz").write_text(to_extxyz_text(unlabelled))
    with pytest.raises(DatasetError, match="structure 0: structure has no energy"):
        load("cu-s", root=tmp_path)


def test_validator_finds_duplicates_wrong_protocol_and_stale_counts(tmp_path, labelled_structures):
    structures = labelled_structures + [labelled_structures[0]]
    directory = _write_dataset(tmp_path, structures)
    card = json.loads((directory / "card.json").read_text())
    card["counts"]["structures"] = 99
    (directory / "card.json").write_text(json.dumps(card))
    bad = read_structures(directory / "structures.extxyz")
    bad[1].info["protocol"] = "vasp-something"
    (directory / "structures.extxyz").write_text(to_extxyz_text(bad))
    problems = "\n".join(validate("cu-s", root=tmp_path).problems)
    assert "duplicate of structure 0" in problems
    assert "protocol is 'vasp-something'" in problems
    assert "counts.structures is 99" in problems


def test_non_finite_energy_is_rejected(tmp_path, labelled_structures):
    from uipbench.datasets.io import with_results

    bad = with_results(labelled_structures[0], float("nan"), labelled_structures[0].get_forces())
    bad.info.update(labelled_structures[0].info)
    _write_dataset(tmp_path, [bad])
    with pytest.raises(DatasetError, match="energy is not finite"):
        load("cu-s", root=tmp_path)


def test_split_is_deterministic_disjoint_and_nested():
    items = list(range(40))
    train_a, test_a = train_test_split(items, seed=3)
    train_b, test_b = train_test_split(items, seed=3)
    assert (train_a, test_a) == (train_b, test_b)
    assert not set(train_a) & set(test_a) and len(train_a) + len(test_a) == 40
    assert train_test_split(items, seed=4) != (train_a, test_a)
    small, test_small = train_test_split(items, seed=3, n_train=5)
    large, test_large = train_test_split(items, seed=3, n_train=20)
    assert test_small == test_large and set(small) <= set(large)
    with pytest.raises(ValueError, match="larger than the 30 structures"):
        train_test_split(items, seed=3, n_train=31)


def test_count_summary_groups(labelled_structures):
    counts = count_summary(labelled_structures * 1)
    assert counts["structures"] == 3
    assert sum(counts["by_composition"].values()) == 3
    assert counts["composition_groups_3plus"] == 1  # all three are Cu12S2


def test_structure_hash_sensitive_to_positions(slab_structures):
    a = slab_structures[0]
    b = a.copy()
    b.positions[0, 0] += 1e-3
    assert structure_hash(a) != structure_hash(b)
    assert structure_hash(a) == structure_hash(a.copy())
