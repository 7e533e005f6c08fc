"""The sweep: tidy results, resumable without recomputation, clear errors for bad input."""
from __future__ import annotations

import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

import uipbench.harness.data as data_module
from uipbench.datasets.generate import plan
from uipbench.datasets.io import to_extxyz_text, with_results
from uipbench.datasets.label import generator_settings, write_card
from uipbench.datasets.protocol import PROTOCOL_V1
from uipbench.harness import sweep as sweep_module
from uipbench.harness.sweep import RESULTS_FILE, sweep

from .fake_backbone import FakeBackbone


def _fake_reference(atoms):
    """A 'DFT' energy the fake backbone misses by a smooth function of its own embedding."""
    emb = FakeBackbone().embed([atoms])[0]
    energy = emb.energy + 0.3 * np.tanh(emb.embedding[:, 1]).sum() - 0.2 * (atoms.numbers == 16).sum()
    out = with_results(atoms, energy, np.zeros((len(atoms), 3)))
    out.info.update(protocol=PROTOCOL_V1.name, gpaw_version="fake")
    return out


@pytest.fixture
def datasets_root(tmp_path):
    root = tmp_path / "datasets"
    for system, n in (("cu-s", 16), ("ag-s", 12)):
        structures = [_fake_reference(e.atoms) for e in plan(system, n) if e.repeat == 2][:10]
        (root / system).mkdir(parents=True)
        (root / system / "structures.extxyz").write_text(to_extxyz_text(structures))
        write_card(root / system, system, structures, PROTOCOL_V1, generator_settings(0, None))
    return root


@pytest.fixture
def fake_backbone(monkeypatch):
    backbone = FakeBackbone()
    monkeypatch.setattr(data_module, "load_backbone", lambda name, **options: backbone)
    return backbone


def _run(root, tmp_path, **kw):
    args = dict(backbones=["chgnet-0.3.0"], systems=["cu-s", "all"], aggregations=["global", "atomic"],
                sizes=[4, 7], seeds=[0, 1], descriptors=["embedding"], out=tmp_path / "run",
                executor=ThreadPoolExecutor(2), progress=False, datasets_root=root,
                cache=None, gpr={"n_restarts": 0})
    args.update(kw)
    return sweep(**args)


def test_sweep_writes_a_tidy_table(datasets_root, fake_backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    results = _run(datasets_root, tmp_path)
    on_disk = pd.read_csv(tmp_path / "run" / RESULTS_FILE)
    assert len(on_disk) == len(results) > 0
    cells = results[["system", "model", "aggregation", "train_size", "seed"]].drop_duplicates()
    # 2 systems x 2 sizes x 2 seeds x (raw + 2 aggregations)
    assert len(cells) == 2 * 2 * 2 * 3
    mae = results[results.metric == "energy_mae_mev_per_atom"]
    assert np.all(np.isfinite(mae.value)) and np.all(mae.value >= 0)
    assert set(results.metric) >= {"energy_mae_mev_per_atom", "relative_energy_mae_mev", "spearman_within_composition",
                                   "lowest_found_fraction", "force_mae_ev_per_angstrom"}
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert {"n_ss_pairs", "energy_ref", "energy_pred", "std"} <= set(preds.columns)


def test_resumed_sweep_recomputes_nothing(datasets_root, fake_backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    first = _run(datasets_root, tmp_path)
    calls = []
    original = sweep_module.run_task
    monkeypatch.setattr(sweep_module, "run_task", lambda task: calls.append(task) or original(task))
    second = _run(datasets_root, tmp_path)
    assert calls == [], "no task re-run"
    pd.testing.assert_frame_equal(first.reset_index(drop=True), second.reset_index(drop=True), check_dtype=False)
    # extending the sweep by one seed computes only the new cells
    third = _run(datasets_root, tmp_path, seeds=[0, 1, 2])
    assert calls and all(set(t.splits) == {0, 1, 2} for t in calls)
    new = third[~third.index.isin(range(len(first)))]
    assert set(new.seed) == {2}


def test_bad_input_is_a_clear_error(datasets_root, fake_backbone, tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'nonet'"):
        _run(datasets_root, tmp_path, backbones=["nonet"])
    with pytest.raises(ValueError, match="unknown system.*pt-s"):
        _run(datasets_root, tmp_path, systems=["pt-s"])
    with pytest.raises(ValueError, match="training size 50 is larger than the 8 training structures of cu-s"):
        _run(datasets_root, tmp_path, sizes=[50])
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / RESULTS_FILE).write_text("")
    with pytest.raises(ValueError, match="corrupt results file"):
        _run(datasets_root, tmp_path)


def test_report_writes_markdown_html_tables_and_figures(datasets_root, fake_backbone, tmp_path, monkeypatch):
    from uipbench.report.render import write_report

    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    _run(datasets_root, tmp_path, descriptors=["embedding", "soap"])
    path = write_report(tmp_path / "run")
    text = path.read_text()
    assert "## Headline" in text and "| chgnet-0.3.0 | cu-s |" in text
    for name in ("learning_curves", "heatmap", "parity", "s_s_diagnosis"):
        for ext in ("png", "svg"):
            assert (tmp_path / "run" / "figures" / f"{name}.{ext}").stat().st_size > 1000
    assert (tmp_path / "run" / "tables" / "headline.csv").exists()
    assert "<table>" in (tmp_path / "run" / "report.html").read_text()


def test_report_of_empty_results_is_a_clear_error(tmp_path):
    from uipbench.report.render import ReportError, write_report

    (tmp_path / "results.csv").write_text("")
    with pytest.raises(ReportError, match="results file is empty"):
        write_report(tmp_path)
    with pytest.raises(ReportError, match="no results file"):
        write_report(tmp_path / "nothing")


def test_results_on_other_data_are_recomputed_not_reused(datasets_root, fake_backbone, tmp_path, monkeypatch):
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    _run(datasets_root, tmp_path)
    structures = (datasets_root / "cu-s" / "structures.extxyz").read_text()
    from uipbench.datasets.io import read_structures

    grown = read_structures(datasets_root / "cu-s" / "structures.extxyz")
    extra = _fake_reference(plan("cu-s", 40)[39].atoms)
    (datasets_root / "cu-s" / "structures.extxyz").write_text(to_extxyz_text(grown + [extra]))
    write_card(datasets_root / "cu-s", "cu-s", grown + [extra], PROTOCOL_V1, generator_settings(0, None))
    calls = []
    original = sweep_module.run_task
    monkeypatch.setattr(sweep_module, "run_task", lambda task: calls.append(task) or original(task))
    with pytest.warns(UserWarning, match="cu-s changed"):
        _run(datasets_root, tmp_path)
    assert calls, "stale cells recomputed"
    assert structures != (datasets_root / "cu-s" / "structures.extxyz").read_text()


def test_delta_cells_record_evidence_and_older_results_are_recomputed(datasets_root, fake_backbone, tmp_path,
                                                                        monkeypatch):
    import json

    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    results = _run(datasets_root, tmp_path)
    lml = results[results.metric == sweep_module.LML]
    mae = results[results.metric == "energy_mae_mev_per_atom"]
    assert set(lml.model) == {"delta"} and len(lml) == (mae.model == "delta").sum()
    assert np.all(np.isfinite(lml.value))
    meta_path = tmp_path / "run" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    assert meta["results_schema"] == sweep_module.RESULTS_SCHEMA
    meta["results_schema"] = 1
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="older uipbench"):
        again = _run(datasets_root, tmp_path)
    assert len(again) == len(results)


def _plain_copy(atoms, protocol):
    """What a user brings from elsewhere: energy and forces only, none of the generator's info."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.calc = SinglePointCalculator(out, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    if protocol:
        out.info["protocol"] = protocol
    return out


@pytest.mark.parametrize("protocol", [PROTOCOL_V1.name, "vasp-pbe-other"])
def test_a_users_own_dataset_folder_is_a_system(datasets_root, fake_backbone, tmp_path, monkeypatch, protocol):
    """Any folder with a structures.extxyz under the datasets root is swept by default; 'all' pools
    only data of one reference protocol."""
    from ase.io import read, write

    from uipbench.datasets.io import available_systems

    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    source = read(datasets_root / "cu-s" / "structures.extxyz", index=":")
    (datasets_root / "my-cu-s").mkdir()
    write(datasets_root / "my-cu-s" / "structures.extxyz", [_plain_copy(a, protocol) for a in source])
    assert available_systems(datasets_root) == ["cu-s", "ag-s", "my-cu-s"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        results = _run(datasets_root, tmp_path, systems=None, sizes=[4], seeds=[0], aggregations=["global"])
    swept = set(results.system)
    messages = " ".join(str(w.message) for w in record)
    if protocol == PROTOCOL_V1.name:
        assert swept == {"cu-s", "ag-s", "my-cu-s", "all"}
        mine = results[(results.system == "my-cu-s") & (results.metric == "energy_mae_mev_per_atom")]
        theirs = results[(results.system == "cu-s") & (results.metric == "energy_mae_mev_per_atom")]
        # the same structures and labels give the same errors whatever the folder is called
        np.testing.assert_allclose(np.sort(mine.value), np.sort(theirs.value), rtol=1e-10)
    else:
        assert swept == {"cu-s", "ag-s", "my-cu-s"}
        assert "different reference protocols" in messages
    with pytest.raises(ValueError, match="unknown system.*my-cu-s"):
        _run(datasets_root, tmp_path, systems=["nope"], out=None)


def test_mixed_protocols_in_one_system_are_refused_before_any_work(datasets_root, fake_backbone, tmp_path):
    """A folder whose structures carry two protocols is an error naming the system, the file and the
    counts, alone or as a member of 'all' (which never pools it)."""
    from ase.io import read, write

    source = read(datasets_root / "cu-s" / "structures.extxyz", index=":")
    mixed = [_plain_copy(a, PROTOCOL_V1.name if i < 7 else "vasp-pbe-other") for i, a in enumerate(source)]
    (datasets_root / "my-cu-s").mkdir()
    write(datasets_root / "my-cu-s" / "structures.extxyz", mixed)
    path = datasets_root / "my-cu-s" / "structures.extxyz"
    for systems in (["my-cu-s"], ["all"], None):
        with pytest.raises(ValueError, match=rf"{path}: system my-cu-s mixes reference protocols "
                                             rf"\('{PROTOCOL_V1.name}': 7 structures, 'vasp-pbe-other': 3 structures\)"):
            _run(datasets_root, tmp_path, systems=systems)
    assert fake_backbone.calls == 0 and not (tmp_path / "run").exists()


class InlineExecutor(Executor):
    """Runs each task at once in the calling (main) thread, as a process-pool worker runs it."""

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_warnings_of_the_fits_are_reported_once_per_task_not_hidden(datasets_root, fake_backbone, tmp_path,
                                                                   monkeypatch):
    from sklearn.exceptions import ConvergenceWarning

    from uipbench.delta import DeltaGPR

    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    original = DeltaGPR.fit

    def fit(self, X, y):
        warnings.warn("lbfgs failed to converge", ConvergenceWarning, stacklevel=2)
        return original(self, X, y)

    monkeypatch.setattr(DeltaGPR, "fit", fit)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _run(datasets_root, tmp_path, executor=InlineExecutor(), systems=["cu-s"])
    fit_warnings = [str(w.message) for w in record if issubclass(w.category, sweep_module.FitWarning)]
    # one task (chgnet · embedding · cu-s): 2 aggregations x 2 sizes x 2 seeds = 8 fits
    assert fit_warnings == ["chgnet-0.3.0 · embedding · cu-s: 8 warning(s) from the Δ-fits: "
                            "ConvergenceWarning: lbfgs failed to converge (×8)"]
    assert not [w for w in record if w.category is ConvergenceWarning], "recorded, then reported by the driver"
