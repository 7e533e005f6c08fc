"""The independent validation set: its plan, its labelling into validation.extxyz, and the sweep scoring on it
(never fitting on it).  No GPAW (the fake interpreter of test_labelling), no real backbone (fake_backbone)."""
from __future__ import annotations

import functools
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

import uipbench.datasets.label as label_module
import uipbench.harness.data as data_module
from uipbench._lock import LOCK_FILE, OutputLocked
from uipbench.datasets.generate import make_slab, plan, surface_sites
from uipbench.datasets.io import (STRUCTURES_FILE, VALIDATION_FILE, DatasetError, load, load_validation,
                                  read_structures, structure_hash, to_extxyz_text, validate)
from uipbench.datasets.label import (LabellingError, build_validation, generator_settings, label_entries,
                                     write_card)
from uipbench.datasets.protocol import LATTICE_CONSTANTS, PROTOCOL_V1, system_metal
from uipbench.datasets.validation import (CELL_CYCLE, CELLS, MIN_CONTACT, S_HEIGHT_RANGE, make_cell_slab,
                                          motif_of, validation_entry, validation_generator_settings,
                                          validation_plan)
from uipbench.harness import sweep as sweep_module
from uipbench.harness.results import (EVALUATION, PREDICTIONS_FILE, RESULTS_FILE, SPLIT, VALIDATION, load_run,
                                      split_rows, validation_rows)
from uipbench.harness.sweep import sweep

from .fake_backbone import FakeBackbone
from .test_labelling import make_fake_gpaw
from .test_sweep import _fake_reference

SYSTEMS = ("cu-s", "ag-s", "au-s")


# --- the plan -------------------------------------------------------------------------------------------------

def test_the_plan_is_deterministic_prefix_stable_and_named():
    short, long = validation_plan("ag-s", 5), validation_plan("ag-s", 13)
    for a, b in zip(short, long):
        assert a.plan_id == b.plan_id and np.array_equal(a.atoms.positions, b.atoms.positions)
    assert [e.plan_id for e in short] == [f"ag-s-val-s0-{i:05d}" for i in range(5)]
    assert validation_entry("ag-s", 3, seed=2).plan_id == "ag-s-val-s2-00003"
    assert not np.array_equal(validation_entry("ag-s", 3, seed=2).atoms.positions, short[3].atoms.positions)
    assert all(not e.needs_relaxation and e.variant == "random" for e in long)
    relaxed = validation_entry("ag-s", 3, relaxed=True)
    assert relaxed.needs_relaxation and relaxed.plan_id == "ag-s-val-relaxed-s0-00003"
    assert np.array_equal(relaxed.atoms.positions, short[3].atoms.positions), "same start, relaxed before DFT"
    with pytest.raises(ValueError, match="unknown system 'pt-s'"):
        validation_entry("pt-s", 0)


def _distance_to_nearest_site(entry, slab) -> np.ndarray:
    """In-plane minimum-image distance of each S to the nearest ontop, bridge, fcc or hcp site of ``slab``."""
    sites = np.vstack(list(surface_sites(slab).values()))
    cell2d = slab.cell.array[:2, :2]
    out = []
    for p in entry.atoms.positions[entry.atoms.numbers == 16]:
        frac = np.linalg.solve(cell2d.T, (sites - p[:2]).T).T
        frac -= np.round(frac)
        out.append(np.linalg.norm(frac @ cell2d, axis=1).min())
    return np.array(out)


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_plan_differs_from_the_training_plan(system):
    metal = system_metal(system)
    validation, training = validation_plan(system, 24), plan(system, 60)
    assert not {structure_hash(e.atoms) for e in validation} & {structure_hash(e.atoms) for e in training}
    # S are not snapped to sites: about 1 % of uniform positions lie within 0.05 Å of one; a third of training S do
    on_site_val = np.concatenate([_distance_to_nearest_site(e, make_cell_slab(metal, CELLS[e.surface_cell]))
                                  for e in validation])
    on_site_train = np.concatenate([_distance_to_nearest_site(e, make_slab(metal, e.repeat)) for e in training])
    assert (on_site_val < 0.05).mean() < 0.05 and (on_site_train < 0.05).mean() > 0.2
    assert np.median(on_site_val) > 0.3 > np.median(on_site_train)
    # heights spread beyond training's 1.3–2.5 Å
    heights = np.concatenate([e.atoms.positions[e.atoms.numbers == 16, 2]
                              - make_cell_slab(metal, CELLS[e.surface_cell]).positions[:, 2].max()
                              for e in validation])
    assert heights.max() > 2.7 and heights.min() < 1.6 and S_HEIGHT_RANGE[0] <= heights.min()
    cells = {e.surface_cell for e in validation}
    assert cells == set(CELLS) and cells - {"2x2", "3x3"}, "cell shapes the training plan has not"


@pytest.mark.parametrize("system", SYSTEMS)
def test_every_entry_is_physical_and_on_the_protocol_slab(system):
    metal = system_metal(system)
    a = LATTICE_CONSTANTS[metal]
    protocol_height = make_slab(metal, 2).cell[2, 2]
    for entry in validation_plan(system, 24):
        atoms, cell = entry.atoms, CELLS[entry.surface_cell]
        s = atoms.numbers == 16
        n_metal = 3 * cell.atoms_per_layer
        assert tuple(atoms.pbc) == PROTOCOL_V1.pbc and (~s).sum() == n_metal
        assert 1 <= s.sum() == entry.n_sulfur <= cell.max_sulfur <= 4
        assert np.isclose(atoms.cell[2, 2], protocol_height), "the protocol's vacuum and layers"
        area = np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1]))
        assert area == pytest.approx(cell.atoms_per_layer * np.sqrt(3) / 4 * a**2), "the protocol's lattice"
        d = atoms.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        assert d[np.ix_(s, s)].min(initial=np.inf) >= MIN_CONTACT["S-S"]
        assert d[np.ix_(~s, s)].min() >= MIN_CONTACT["M-S"] and d[np.ix_(~s, ~s)].min() >= MIN_CONTACT["M-M"]
        assert atoms.positions[s, 2].min() > atoms.positions[~s, 2].max(), "S above the top layer"
        (fixed,) = atoms.constraints
        z = make_cell_slab(metal, cell).positions[:, 2]
        assert sorted(fixed.index) == list(np.flatnonzero(np.isclose(z, z.min()))), "bottom layer fixed"
        assert atoms.info["motif"] == motif_of(atoms) == entry.motif
        assert np.abs(atoms.positions[~s] - make_cell_slab(metal, cell).positions).max() < 0.5, "rattled only"


def test_mostly_small_cells():
    entries = validation_plan("cu-s", 24)
    sizes = np.array([len(e.atoms) for e in entries])
    assert (sizes >= 28).mean() <= 1 / 3 and np.median(sizes) <= 20
    assert [e.surface_cell for e in entries[:12]] == list(CELL_CYCLE)
    assert {len(make_cell_slab("Cu", c)) for c in CELLS.values()} == {9, 12, 18, 21, 27}


def test_motif_is_read_off_the_geometry():
    from ase import Atoms

    slab = make_cell_slab("Cu", CELLS["3x3"])
    top = slab.positions[:, 2].max() + 2.0

    def with_s(*xy):
        return slab + Atoms("S" * len(xy), positions=[[x, y, top] for x, y in xy])

    assert motif_of(with_s((1.0, 1.0))) == "adatom"
    assert motif_of(with_s((1.0, 1.0), (5.0, 1.0))) == "dispersed"
    assert motif_of(with_s((1.0, 1.0), (3.05, 1.0), (1.0, 5.5))) == "dimer"
    assert motif_of(with_s((1.0, 1.0), (3.05, 1.0), (5.1, 1.0))) == "cluster"


# --- labelling into validation.extxyz ----------------------------------------------------------------------------

@pytest.fixture
def fake_gpaw(tmp_path) -> str:
    return make_fake_gpaw(tmp_path / "fake_python")


@pytest.fixture
def trained_root(tmp_path, labelled_structures):
    """A datasets root whose cu-s holds three training structures and their card."""
    root = tmp_path / "datasets"
    (root / "cu-s").mkdir(parents=True)
    (root / "cu-s" / STRUCTURES_FILE).write_text(to_extxyz_text(labelled_structures))
    write_card(root / "cu-s", "cu-s", labelled_structures, PROTOCOL_V1, generator_settings(0, None))
    return root


def test_labelling_writes_the_validation_file_and_its_card_section(trained_root, fake_gpaw, monkeypatch):
    directory = trained_root / "cu-s"
    training_text = (directory / STRUCTURES_FILE).read_text()
    card_before = json.loads((directory / "card.json").read_text())
    entries = validation_plan("cu-s", 4)
    monkeypatch.setenv("FAKE_GPAW_FAIL", entries[2].plan_id)
    options = dict(workers=2, python=fake_gpaw, progress=False, dataset_file=VALIDATION_FILE,
                   generator=validation_generator_settings(0))
    first = label_entries(entries, directory, "cu-s", **options)
    assert first.labelled == 3 and len(first.failed) == 1
    monkeypatch.delenv("FAKE_GPAW_FAIL")
    second = label_entries(entries, directory, "cu-s", **options)  # resumed: only the failed one
    assert second.labelled == 1 and second.skipped_existing == 3
    labelled = read_structures(directory / VALIDATION_FILE)
    assert sorted(a.info["plan_id"] for a in labelled) == [e.plan_id for e in entries]
    calls = (directory / ".labelling" / "calls.log").read_text().split()
    assert sorted(calls) == sorted(e.plan_id for e in entries), "each computed once, scratch shared with training"
    assert (directory / STRUCTURES_FILE).read_text() == training_text, "the training file is untouched"
    card = json.loads((directory / "card.json").read_text())
    assert card["counts"] == card_before["counts"] and card["generator"] == card_before["generator"]
    assert card["validation"]["counts"]["structures"] == 4
    assert card["validation"]["generator"]["module"] == "uipbench.datasets.validation"
    assert card["files"] == {"structures": STRUCTURES_FILE, "validation": VALIDATION_FILE}
    assert len(load("cu-s", trained_root)) == 3, "load() is the training data only"
    assert [a.info["plan_id"] for a in load_validation("cu-s", trained_root)] == [a.info["plan_id"] for a in labelled]
    assert load_validation("ag-s", trained_root) == [], "no validation set: an empty list"
    report = validate("cu-s", trained_root)
    assert report.ok and report.n_validation == 4, report.problems
    # the training card rewritten by a training build keeps the validation section
    training = read_structures(directory / STRUCTURES_FILE)
    write_card(directory, "cu-s", training, PROTOCOL_V1, generator_settings(0, None))
    assert json.loads((directory / "card.json").read_text())["validation"]["counts"]["structures"] == 4


def test_the_validator_refuses_a_training_structure_in_the_validation_set(trained_root):
    directory = trained_root / "cu-s"
    training = read_structures(directory / STRUCTURES_FILE)
    (directory / VALIDATION_FILE).write_text(to_extxyz_text(training[:1]))
    problems = "\n".join(validate("cu-s", trained_root).problems)
    assert "duplicate of structures.extxyz structure 0 (a validation structure must not be a training" in problems
    assert "validation.counts.structures is None, file has 1" in problems


@pytest.fixture
def fake_labelling(monkeypatch, fake_gpaw):
    """build_validation on the fake interpreter: GPAW 'available', every run through the fake one."""
    monkeypatch.setattr(label_module, "gpaw_available", lambda python=None: (True, "fake"))
    monkeypatch.setattr(label_module, "label_entries", functools.partial(label_entries, python=fake_gpaw))


def test_build_validation_checks_its_input_before_any_work(trained_root, monkeypatch, fake_labelling):
    with pytest.raises(ValueError, match="unknown system 'pt-s'"):
        build_validation("pt-s", 20, root=trained_root)
    with pytest.raises(ValueError, match="--n must be at least 1, got 0"):
        build_validation("cu-s", 0, root=trained_root)
    report = build_validation("cu-s", 2, root=trained_root, workers=1, progress=False)
    assert report.labelled == 2
    with pytest.raises(DatasetError, match=r"validation.extxyz already holds 2 structures; pass --resume"):
        build_validation("cu-s", 3, root=trained_root)
    assert build_validation("cu-s", 3, root=trained_root, resume=True, workers=1, progress=False).labelled == 1
    (trained_root / "cu-s" / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example",
                                                               "command": "uipbench dataset build cu-s"}))
    with pytest.raises(OutputLocked, match="elsewhere.example"):  # one build per folder: they share the card
        build_validation("cu-s", 4, root=trained_root, resume=True, workers=1, progress=False)
    (trained_root / "cu-s" / LOCK_FILE).unlink()
    monkeypatch.setattr(label_module, "gpaw_available", lambda python=None: (False, "GPAW is not importable"))
    with pytest.raises(LabellingError, match="GPAW is not importable"):
        build_validation("cu-s", 4, root=trained_root, resume=True)
    assert len(read_structures(trained_root / "cu-s" / VALIDATION_FILE)) == 3


def test_the_command_line(trained_root, capsys, monkeypatch, fake_labelling):
    from uipbench.cli import main

    root = ["--root", str(trained_root)]
    assert main(["dataset", "build-validation", "pt-s", "--n", "2", *root]) == 2
    assert "unknown system 'pt-s'" in capsys.readouterr().err
    assert main(["dataset", "build-validation", "cu-s", "--n", "0", *root]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
    assert main(["dataset", "info", "cu-s", *root]) == 0
    assert "validation    none" in capsys.readouterr().out
    assert main(["dataset", "build-validation", "cu-s", "--n", "2", "--workers", "1", *root]) == 0
    assert "cu-s (validation): labelled 2" in capsys.readouterr().out
    assert main(["dataset", "build-validation", "cu-s", "--n", "2", *root]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["dataset", "info", "cu-s", *root]) == 0
    assert "validation    2 structures" in capsys.readouterr().out
    monkeypatch.setattr(label_module, "gpaw_available", lambda python=None: (False, "GPAW is not importable by x"))
    assert main(["dataset", "build-validation", "cu-s", "--n", "3", "--resume", *root]) == 2
    assert "GPAW is not importable by x" in capsys.readouterr().err


# --- the sweep scores on it, never fits on it -----------------------------------------------------------------

def _root(tmp_path, name: str, validation: bool = True, poison: float = 0.0):
    """Training data as test_sweep's (cu-s and ag-s, 2x2 cells); validation sets from the validation plan."""
    root = tmp_path / name
    for system, n_val in (("cu-s", 6), ("ag-s", 5)):
        training = [_fake_reference(e.atoms) for e in plan(system, 16) if e.repeat == 2][:10]
        (root / system).mkdir(parents=True)
        (root / system / STRUCTURES_FILE).write_text(to_extxyz_text(training))
        write_card(root / system, system, training, PROTOCOL_V1, generator_settings(0, None))
        if validation:
            held_out = []
            for e in validation_plan(system, n_val):
                a = _fake_reference(e.atoms)
                held_out.append(a if not poison else _poisoned(a, poison))
            (root / system / VALIDATION_FILE).write_text(to_extxyz_text(held_out))
    return root


def _poisoned(atoms, shift: float):
    from uipbench.datasets.io import with_results

    out = with_results(atoms, atoms.get_potential_energy() + shift, atoms.get_forces() + shift)
    out.info.update(atoms.info)
    return out


@pytest.fixture
def fake_backbone(monkeypatch, tmp_path):
    backbone = FakeBackbone()
    monkeypatch.setattr(data_module, "load_backbone", lambda name, **options: backbone)
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return backbone


def _sweep(root, out, **kw):
    args = dict(backbones=["chgnet-0.3.0"], systems=["cu-s", "all"], aggregations=["global", "atomic"],
                sizes=[4], seeds=[0, 1], descriptors=["embedding"], out=out, executor=ThreadPoolExecutor(2),
                progress=False, datasets_root=root, gpr={"n_restarts": 0})
    args.update(kw)
    return sweep(**args)


def _key(table):
    return table.sort_values([c for c in ("backbone", "system", "model", "aggregation", "train_size", "seed",
                                          "metric", "structure") if c in table.columns]).reset_index(drop=True)


def test_the_sweep_scores_on_the_validation_set(tmp_path, fake_backbone):
    results = _sweep(_root(tmp_path, "datasets"), tmp_path / "run")
    val = validation_rows(results)
    cells = val[["system", "model", "aggregation", "train_size", "seed"]].drop_duplicates()
    assert len(cells) == 2 * 3  # (cu-s, all) x (raw, global, atomic): one cell each
    assert set(val.seed) == {0}
    assert dict(zip(cells.system, cells.train_size)) == {"cu-s": 10, "all": 20}, "trained on all training data"
    n_test = val[val.metric == "n_test"].groupby("system").value.first().to_dict()
    assert n_test == {"cu-s": 6, "all": 11}, "the pooled system scores on the pooled validation set"
    assert set(val[val.model == "raw"].metric) >= {"energy_mae_mev_per_atom", "force_mae_ev_per_angstrom"}
    preds = pd.read_csv(tmp_path / "run" / PREDICTIONS_FILE)
    scored = set(preds[preds[EVALUATION] == VALIDATION].structure)
    assert scored == {f"cu-s-val-s0-{i:05d}" for i in range(6)} | {f"ag-s-val-s0-{i:05d}" for i in range(5)}
    assert not scored & set(preds[preds[EVALUATION] == SPLIT].structure)
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["data"]["cu-s"]["validation"]["structures"] == 6
    # the random-split cells are those of a sweep without validation sets
    plain = _sweep(_root(tmp_path, "plain", validation=False), tmp_path / "plain-run")
    assert (plain[EVALUATION] == SPLIT).all()
    pd.testing.assert_frame_equal(_key(split_rows(results)), _key(plain), check_dtype=False)


def test_poisoned_validation_energies_change_no_fit(tmp_path, fake_backbone):
    clean = _sweep(_root(tmp_path, "clean"), tmp_path / "clean-run")
    poisoned = _sweep(_root(tmp_path, "poisoned", poison=1000.0), tmp_path / "poisoned-run")
    pd.testing.assert_frame_equal(_key(split_rows(poisoned)), _key(split_rows(clean)), check_dtype=False)
    p_clean, p_poisoned = (pd.read_csv(tmp_path / run / PREDICTIONS_FILE) for run in ("clean-run", "poisoned-run"))
    v_clean, v_poisoned = _key(validation_rows(p_clean)), _key(validation_rows(p_poisoned))
    np.testing.assert_array_equal(v_clean.energy_pred, v_poisoned.energy_pred)  # the models never saw them
    np.testing.assert_allclose(v_poisoned.energy_ref - v_clean.energy_ref, 1000.0)
    lml = "log_marginal_likelihood"
    np.testing.assert_array_equal(_key(validation_rows(clean)).query("metric == @lml").value,
                                  _key(validation_rows(poisoned)).query("metric == @lml").value)
    mae = "energy_mae_mev_per_atom"
    assert (validation_rows(poisoned).query("metric == @mae").value.to_numpy()
            > validation_rows(clean).query("metric == @mae").value.to_numpy() + 1000).all()


def test_resume_reuses_validation_cells_and_embeddings_until_the_set_changes(tmp_path, fake_backbone, monkeypatch):
    root = _root(tmp_path, "datasets")
    first = _sweep(root, tmp_path / "run")
    embedded = fake_backbone.calls
    calls = []
    original = sweep_module.run_task
    monkeypatch.setattr(sweep_module, "run_task", lambda task: calls.append(original(task)) or calls[-1])
    _sweep(root, tmp_path / "other-run")
    assert fake_backbone.calls == embedded, "validation structures' embeddings come from the cache"
    calls.clear()
    again = _sweep(root, tmp_path / "run")
    assert calls == []
    pd.testing.assert_frame_equal(_key(again), _key(first), check_dtype=False)
    grown = [_fake_reference(e.atoms) for e in validation_plan("cu-s", 7)]
    (root / "cu-s" / VALIDATION_FILE).write_text(to_extxyz_text(grown))
    with pytest.warns(UserWarning, match="validation set of cu-s changed; its validation cells are recomputed"):
        third = _sweep(root, tmp_path / "run")
    recomputed = pd.DataFrame([r for done in calls for r in done.rows])
    assert len(recomputed) and set(recomputed[EVALUATION]) == {VALIDATION}, "the validation cells alone"
    assert set(recomputed.system) == {"cu-s", "all"}
    assert validation_rows(third).query("system == 'cu-s' and metric == 'n_test'").value.unique().tolist() == [7]
    pd.testing.assert_frame_equal(_key(split_rows(third)), _key(split_rows(first)), check_dtype=False)


def test_the_report_has_the_validation_table(tmp_path, fake_backbone):
    from uipbench.report.render import VALIDATION_TITLE, write_report

    results = _sweep(_root(tmp_path, "datasets"), tmp_path / "run", descriptors=["embedding", "soap"])
    assert set(validation_rows(results).descriptor) == {"-", "embedding", "soap"}
    text = write_report(tmp_path / "run").read_text()
    assert VALIDATION_TITLE in text and "Δ global (Δ / raw)" in text and "Δ atomic (Δ / raw)" in text
    table = pd.read_csv(tmp_path / "run" / "tables" / "validation.csv")
    assert set(table.system) == {"cu-s", "all"} and set(table.n_validation) == {6, 11}
    assert np.allclose(table.ratio, table.chosen_mean / table.raw_mean)
    assert table.split_ratio.notna().all()
    head = pd.read_csv(tmp_path / "run" / "tables" / "headline.csv")
    assert set(head.train_size) == {4}, "the headline is of the random splits alone"
    line = next(t for t in text.splitlines() if t.startswith("| chgnet-0.3.0 | cu-s | 10 | 6 |"))
    assert len(line.split("|")) == 13


def test_an_older_results_file_without_evaluation_reads_as_splits(tmp_path, fake_backbone, monkeypatch):
    from uipbench.harness.results import MANIFEST_FILE
    from uipbench.report.render import write_report

    root = _root(tmp_path, "datasets", validation=False)
    first = _sweep(root, tmp_path / "run")
    for name in (RESULTS_FILE, PREDICTIONS_FILE):  # as an older uipbench wrote them: no evaluation column
        path = tmp_path / "run" / name
        pd.read_csv(path).drop(columns=[EVALUATION]).to_csv(path, index=False)
    (tmp_path / "run" / MANIFEST_FILE).unlink()
    loaded = load_run(tmp_path / "run")
    assert (loaded.results[EVALUATION] == SPLIT).all() and (loaded.predictions[EVALUATION] == SPLIT).all()
    calls = []
    original = sweep_module.run_task
    monkeypatch.setattr(sweep_module, "run_task", lambda task: calls.append(task) or original(task))
    again = _sweep(root, tmp_path / "run")
    assert calls == [], "its cells are finished cells"
    pd.testing.assert_frame_equal(_key(again), _key(first), check_dtype=False)
    assert "## Headline" in write_report(tmp_path / "run").read_text()
