"""Active Δ-learning (uipbench.search.active) with the toy Morse backbone and a fake "DFT" labeller.

The fake DFT is the toy energy, −0.3 eV per S, plus (``penalty`` > 0) a smooth repulsion of S–S pairs
near the dimer distance, which the toy lacks: with it the backbone's landscape is wrong and the Δ-model
has something to learn; without it the Δ is a per-species shift the model gets exactly, so the search
finds the same minimum every round and the stop rule ends the run early.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from tests.core.test_search_toy import ToyBackbone, toy_problem
from uipbench.cache import EmbeddingCache
from uipbench.datasets.io import structure_hash, with_results
from uipbench.datasets.label import LabelRecord, LabellingError
from uipbench.datasets.protocol import PROTOCOL_NAME
from uipbench.delta import load
from uipbench.harness.fit import TrainingDataError
from uipbench.search import SearchSettings, search_to_folder
from uipbench.search.active import ActiveSettings, active_learning
from uipbench.search.active_rules import converged, pick_minima, round_seed, stop_reason
from uipbench.search.active_store import ActiveFolderError
from uipbench.search.candidates import CandidateGenerator
from uipbench.search.checks import SearchInputError
from uipbench.search.engine import rng_for
from uipbench.search.minima import Minimum
from uipbench.search.store import delta_sha256

PROBLEM = toy_problem(n_sulfur=2)
N_SLAB = 12  # atoms of the 2x2, 3-layer slab


class Killed(Exception):
    """A kill simulated from inside the run (the labeller or a relaxation raises it)."""


def fake_dft(atoms: Atoms, penalty: float) -> tuple[float, np.ndarray]:
    energy, forces = ToyBackbone().energy_forces(atoms)
    d = atoms.get_all_distances(mic=True)[N_SLAB:, N_SLAB:]
    pairs = d[np.triu_indices(len(d), 1)]
    return energy - 0.3 * (len(atoms) - N_SLAB) + penalty * float(np.exp(-((pairs - 2.05) / 0.5) ** 2).sum()), forces


class FakeLabeller:
    """LabelTask -> LabelRecord like label_structure, with the fake DFT; counts the calls it finished,
    fails those in ``fail_calls`` (a failed record) and raises Killed on call ``kill_at``."""

    def __init__(self, penalty: float, fail_calls: tuple[int, ...] = (), kill_at: int | None = None):
        self.penalty, self.fail_calls, self.kill_at = penalty, fail_calls, kill_at
        self.calls, self.tasks = 0, []

    def __call__(self, task):
        if self.kill_at is not None and self.calls + 1 == self.kill_at:
            raise Killed(f"killed in labelling call {self.kill_at}")
        self.calls += 1
        self.tasks.append(task)
        if self.calls in self.fail_calls:
            return LabelRecord(task.plan_id, task.atoms, "failed", error="SCF did not converge (fake)")
        energy, forces = fake_dft(task.atoms, self.penalty)
        return LabelRecord(task.plan_id, task.atoms, "ok", energy, forces.tolist(), "fake-dft", [4, 4, 1], 0.5)


def base_structures(penalty: float, n: int = 6) -> list[Atoms]:
    generator = CandidateGenerator(PROBLEM)
    out = []
    for k in range(n):
        atoms = generator.random(rng_for(99, k, 0))
        out.append(with_results(atoms, *fake_dft(atoms, penalty)))
        out[-1].info["protocol"] = PROTOCOL_NAME
    return out


@pytest.fixture
def relaxations(monkeypatch):
    """Counts finished relaxations of every search; ``kill_at`` makes relaxation n raise Killed."""
    from uipbench.search import engine

    counter = {"done": 0, "kill_at": None}
    relax = engine.relax

    def counting(*args, **kwargs):
        if counter["kill_at"] is not None and counter["done"] + 1 == counter["kill_at"]:
            raise Killed(f"killed in relaxation {counter['kill_at']}")
        result = relax(*args, **kwargs)
        counter["done"] += 1
        return result

    monkeypatch.setattr(engine, "relax", counting)
    return counter


#: the run most tests compare against: the Δ has something to learn, three picks per round
SETTINGS = ActiveSettings(rounds=2, label_per_round=2, label_uncertain=1, budget=3, search=SearchSettings(seed=0))
PENALTY = 1.5


def run(out: Path, labeller: FakeLabeller, settings: ActiveSettings = SETTINGS, penalty: float = PENALTY, **options):
    return active_learning(PROBLEM, ToyBackbone(), base_structures(penalty), out=out, settings=settings,
                           labeller=labeller, cache=EmbeddingCache(out.parent / "cache"), figures=False, **options)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run, with its counts of relaxations and labelling calls."""
    from uipbench.search import engine

    counter = {"done": 0}
    relax = engine.relax

    def counting(*args, **kwargs):
        counter["done"] += 1
        return relax(*args, **kwargs)

    labeller = FakeLabeller(PENALTY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "relax", counting)
        summary = run(tmp_path_factory.mktemp("whole") / "run", labeller)
    return summary, counter["done"], labeller.calls


def _without_timing(path: Path) -> dict:
    data = json.loads((path / "active.json").read_text())
    for record in data["rounds"]:
        record.pop("timing")
    return data


def _same_results(a: Path, b: Path) -> None:
    assert _without_timing(a) == _without_timing(b)
    for name in ("labelled.extxyz", "minima.extxyz", "minima.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    for r in range(2):
        assert (a / f"round-{r:02d}" / "delta.npz").read_bytes() == (b / f"round-{r:02d}" / "delta.npz").read_bytes()


# --- the loop ----------------------------------------------------------------------------------------------------

def test_rounds_run_and_labelled_structures_carry_provenance(whole):
    summary, relaxed, calls = whole
    out = summary.out
    assert len(summary.rounds) == 2 and relaxed == 2 * SETTINGS.budget
    assert summary.stopped_because == "rounds" and summary.rounds[-1]["stop_reason"] == "rounds"
    labelled = read(out / "labelled.extxyz", index=":")
    assert len(labelled) == len(summary.labelled) == calls >= 3
    assert len({a.info["structure_hash"] for a in labelled}) == len(labelled)  # nothing labelled twice
    for r, record in enumerate(summary.rounds):
        search = out / f"round-{r:02d}" / "search"
        minima = {structure_hash(m): m for m in read(search / "minima.extxyz", index=":")}
        assert record["search_seed"] == round_seed(0, r) == json.loads((search / "search.json").read_text())[
            "identity"]["settings"]["seed"]
        assert record["delta_sha256"] == delta_sha256(load(out / f"round-{r:02d}" / "delta"))
        mine = [a for a in labelled if a.info["round"] == r]
        assert [x["structure_hash"] for x in record["labelled"]] == [a.info["structure_hash"] for a in mine]
        for atoms in mine:
            info = atoms.info
            assert info["problem"] == PROBLEM.name and info["backbone"] == "toy-morse"
            assert info["weights_sha256"] == ToyBackbone().card.weights_sha256 and info["protocol"] == PROTOCOL_NAME
            assert info["search_seed"] == round_seed(0, r) and info["gpaw_version"] == "fake-dft"
            minimum = minima[info["structure_hash"]]  # the labelled structure is that round's minimum
            assert info["evaluation"] == minimum.info["evaluation"]
            assert info["predicted_energy"] == pytest.approx(minimum.info["predicted_energy"], abs=1e-9)
            assert info["predicted_energy_std"] == pytest.approx(minimum.info["predicted_energy_std"], abs=1e-9)
            assert atoms.get_potential_energy() == pytest.approx(fake_dft(atoms, PENALTY)[0], abs=1e-5)
    # round 1 fitted on the base and everything round 0 labelled
    assert summary.rounds[1]["training_structures"] == 6 + len(summary.rounds[0]["labelled"])
    assert summary.rounds[0]["labelled"][0]["pick"] == "lowest"
    assert (out / "minima.csv").read_text() == (out / "round-01" / "search" / "minima.csv").read_text()
    assert summary.best.energy == summary.rounds[-1]["best"]["predicted_energy"]
    assert json.loads((out / "active.json").read_text())["status"] == "finished"


def test_stop_rule_stops_before_the_last_round(tmp_path):
    summary = run(tmp_path / "run", FakeLabeller(0.0), ActiveSettings(rounds=4, label_per_round=2, budget=2),
                  penalty=0.0)
    assert summary.stopped_because == "converged" and len(summary.rounds) == 2
    last = summary.rounds[-1]
    assert last["stop_reason"] == "converged" and last["best_is_lowest"] and summary.rounds[0]["best_is_lowest"]
    assert summary.best_dft_energy == last["best"]["dft_energy"] == last["lowest_dft_so_far"]
    assert not (tmp_path / "run" / "round-02").exists()


def test_the_whole_run_did_not_meet_the_stop_rule(whole):
    summary = whole[0]
    by_hash = {a.info["structure_hash"]: a for a in summary.labelled}
    assert not converged(summary.rounds, by_hash, N_SLAB)


def _record(key: str, dft: float, lowest: float) -> dict:
    return {"best": {"structure_hash": key, "dft_energy": dft}, "best_is_lowest": dft <= lowest}


def test_stop_rule_as_a_function():
    slab = PROBLEM.template()
    a = slab + Atoms("S2", positions=[[1.0, 1.0, 12.5], [3.5, 1.0, 12.5]])
    moved = a.copy()
    moved.positions[-1, 0] += 0.5
    nudged = a.copy()
    nudged.positions[-1, 0] += 0.01
    labelled = {"a": a, "nudged": nudged, "moved": moved}
    assert converged([_record("a", -1.0, -1.0), _record("nudged", -1.005, -1.005)], labelled, N_SLAB)
    assert not converged([_record("a", -1.0, -1.0), _record("moved", -1.005, -1.005)], labelled, N_SLAB)
    assert not converged([_record("a", -1.0, -1.0), _record("nudged", -1.0, -1.2)], labelled, N_SLAB)  # not lowest
    assert not converged([_record("a", -1.0, -1.0), _record("nudged", -1.1, -1.1)], labelled, N_SLAB)  # ΔE 0.1 eV
    assert not converged([_record("a", -1.0, -1.0)], labelled, N_SLAB)
    assert stop_reason([_record("a", -1.0, -1.0)], labelled, N_SLAB, max_rounds=1) == "rounds"
    assert stop_reason([_record("a", -1.0, -1.0)], labelled, N_SLAB, max_rounds=2) is None


def test_picks_lowest_new_minima_then_most_uncertain():
    minima = [Minimum(Atoms(), e, s, i) for i, (e, s) in enumerate([(-3, 0.1), (-2, 0.5), (-1, 0.2), (0, 0.9),
                                                                     (1, None), (2, 0.3)])]
    hashes = ["h0", "h1", "h2", "h3", "h4", "h5"]
    assert pick_minima(minima, hashes, {"h0"}, k=2, m=2) == [(1, "lowest"), (2, "lowest"), (3, "uncertain"),
                                                            (5, "uncertain")]
    assert pick_minima(minima, hashes, set(), k=1) == [(0, "lowest")]
    assert pick_minima(minima, hashes, set(hashes), k=3, m=3) == []
    assert round_seed(0, 0) != round_seed(0, 1) != round_seed(1, 1) and round_seed(0, 1) == round_seed(0, 1)


def test_a_failed_label_is_recorded_and_skipped(tmp_path, relaxations):
    out = tmp_path / "run"
    labeller = FakeLabeller(0.0, fail_calls=(1,))
    summary = run(out, labeller, ActiveSettings(rounds=2, label_per_round=2, budget=2), penalty=0.0)
    failures = json.loads((out / "failures.json").read_text())
    failed = labeller.tasks[0]
    assert [f["plan_id"] for f in failures] == [failed.plan_id] and "SCF did not converge" in failures[0]["error"]
    assert failures[0]["round"] == 0 and summary.rounds[0]["failed"] == [failed.plan_id]
    assert summary.rounds[0]["best"]["dft_energy"] is None and not summary.rounds[0]["best_is_lowest"]
    assert failed.plan_id not in {a.info["plan_id"] for a in summary.labelled}
    assert len(summary.labelled) == labeller.calls - 1 and summary.stopped_because == "rounds"
    again = FakeLabeller(0.0)
    relaxations["done"] = 0
    rerun = run(out, again, ActiveSettings(rounds=2, label_per_round=2, budget=2), penalty=0.0)
    assert again.calls == 0 and relaxations["done"] == 0  # a finished run: nothing labelled or relaxed again
    assert rerun.rounds == summary.rounds


@pytest.mark.parametrize("where", ["labeller", "relaxation"])
def test_kill_mid_round_then_resume_repeats_and_loses_nothing(tmp_path, whole, relaxations, where):
    summary, relaxed, calls = whole
    out = tmp_path / "run"
    killer = FakeLabeller(PENALTY, kill_at=3 if where == "labeller" else None)
    if where == "relaxation":
        relaxations["kill_at"] = SETTINGS.budget + 2  # the second relaxation of round 1
    with pytest.raises(Killed):
        run(out, killer)
    state = json.loads((out / "active.json").read_text())
    assert len(state["rounds"]) == 1  # killed in round 1, round 0 finished
    if where == "labeller":  # in the middle of round 1's labels
        assert 0 < len([a for a in read(out / "labelled.extxyz", index=":") if a.info["round"] == 1]) < len(
            summary.rounds[1]["labelled"])
    first_relaxed, first_calls = relaxations["done"], killer.calls
    relaxations.update(done=0, kill_at=None)
    resumer = FakeLabeller(PENALTY)
    resumed = run(out, resumer)
    assert first_relaxed + relaxations["done"] == relaxed  # no relaxation repeated, none lost
    assert first_calls + resumer.calls == calls  # no DFT calculation repeated, none lost
    _same_results(summary.out, out)
    assert resumed.stopped_because == summary.stopped_because and resumed.best.energy == summary.best.energy


def test_a_larger_rounds_continues_a_finished_run(tmp_path, whole, relaxations):
    summary = whole[0]
    out = tmp_path / "run"
    shutil.copytree(summary.out, out, ignore=shutil.ignore_patterns(".uipbench.lock*"))
    more = run(out, FakeLabeller(PENALTY), ActiveSettings(**{**SETTINGS.__dict__, "rounds": 3}))
    assert len(more.rounds) == 3 and relaxations["done"] == SETTINGS.budget
    assert more.rounds[:2] == summary.rounds and more.rounds[2]["training_structures"] == 6 + len(summary.labelled)


# --- refused input -----------------------------------------------------------------------------------------------

def test_a_folder_holding_another_run_is_refused(tmp_path, whole, relaxations):
    summary = whole[0]
    labeller = FakeLabeller(PENALTY)
    with pytest.raises(ActiveFolderError, match="holds another active-learning run.*settings.label_per_round"):
        run(summary.out, labeller, ActiveSettings(**{**SETTINGS.__dict__, "label_per_round": 1}))
    with pytest.raises(ActiveFolderError, match="base.sha256"):
        run(summary.out, labeller, penalty=0.0)
    search = tmp_path / "a-search"
    search_to_folder(PROBLEM, ToyBackbone(), budget=1, out=search, progress=False, figures=False)
    relaxations["done"] = 0
    with pytest.raises(ActiveFolderError, match="holds no active.json"):
        run(search, labeller)
    assert labeller.calls == 0 and relaxations["done"] == 0


@pytest.mark.parametrize("options, message", [
    (dict(rounds=0, label_per_round=1), "rounds must be an integer >= 1"),
    (dict(rounds=1, label_per_round=0), "label_per_round must be an integer >= 1"),
    (dict(rounds=1, label_per_round=1, label_uncertain=-1), "label_uncertain must be an integer >= 0"),
    (dict(rounds=1, label_per_round=1, budget=0), "budget must be an integer >= 1"),
    (dict(rounds=1, label_per_round=1, aggregation="nope"), "unknown aggregation 'nope'"),
    (dict(rounds=1, label_per_round=1, search=SearchSettings(seed=-1)), "non-negative"),
])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ActiveSettings(**options)


def test_bad_base_structures_and_missing_gpaw_are_refused_before_any_work(tmp_path, monkeypatch):
    base = base_structures(PENALTY)
    mixed = [with_results(a, a.get_potential_energy(), np.zeros((len(a), 3))) for a in base]
    mixed[0].info["protocol"] = "vasp-somewhere"
    other = [with_results(a, a.get_potential_energy(), np.zeros((len(a), 3))) for a in base]
    for atoms in other:
        atoms.info["protocol"] = "vasp-somewhere"
    silver = [with_results(a, a.get_potential_energy(), np.zeros((len(a), 3))) for a in base]
    for atoms in silver:
        atoms.numbers[atoms.numbers == 29] = 47
    cases = [([a.copy() for a in base], TrainingDataError, "without a finite DFT energy"),
             (base[:1], TrainingDataError, "needs at least 2"),
             (mixed, TrainingDataError, "mixes reference protocols"),
             (other, SearchInputError, "labelled under protocol 'vasp-somewhere'"),
             (silver, SearchInputError, "hold no Cu")]
    for structures, error, message in cases:
        with pytest.raises(error, match=message):
            active_learning(PROBLEM, ToyBackbone(), structures, out=tmp_path / "run", settings=SETTINGS,
                            labeller=FakeLabeller(0.0))
    monkeypatch.setattr("uipbench.datasets.label.gpaw_available", lambda *a: (False, "no GPAW here (test)"))
    with pytest.raises(LabellingError, match="no GPAW here"):
        active_learning(PROBLEM, ToyBackbone(), base, out=tmp_path / "run", settings=SETTINGS)
    assert not (tmp_path / "run").exists()


def test_a_starting_model_is_round_zeros_model(tmp_path):
    from uipbench.harness.fit import fit_delta

    start = fit_delta(ToyBackbone(), base_structures(0.0)[:3], sparse=False, cache=EmbeddingCache(tmp_path / "c"))
    summary = run(tmp_path / "run", FakeLabeller(0.0), ActiveSettings(rounds=1, label_per_round=1, budget=1),
                  penalty=0.0, start_delta=start)
    assert summary.rounds[0]["delta_sha256"] == delta_sha256(start)
    identity = json.loads((tmp_path / "run" / "active.json").read_text())["identity"]
    assert identity["start_delta_sha256"] == delta_sha256(start) and identity["base"]["structures"] == 6


# --- the real labeller --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_one_round_with_the_gpaw_labeller(tmp_path):
    """One round, one relaxation, one GPAW calculation (2x2 Cu(111) + S, protocol v1) on the real pipeline."""
    from uipbench.datasets.label import gpaw_available
    from uipbench.harness.fit import shipped_structures

    ok, why = gpaw_available()
    if not ok:
        pytest.skip(why)
    problem = toy_problem(n_sulfur=1)
    base = [a for a in shipped_structures(["cu-s"]) if len(a) <= 16]  # the 2x2 slabs: a quick fit
    out = tmp_path / "run"
    summary = active_learning(problem, ToyBackbone(), base, out=out, figures=False,
                              settings=ActiveSettings(rounds=1, label_per_round=1, budget=1),
                              cache=EmbeddingCache(tmp_path / "cache"))
    (atoms,) = read(out / "labelled.extxyz", index=":")
    assert atoms.info["protocol"] == PROTOCOL_NAME and atoms.info["gpaw_version"] != "fake-dft"
    assert list(atoms.info["kpts"]) == [4, 4, 1] and np.isfinite(atoms.get_potential_energy())
    assert summary.best_dft_energy == pytest.approx(atoms.get_potential_energy())
    assert list((out / ".labelling").glob("*.result.json"))  # kept: a re-run after a kill reuses it
