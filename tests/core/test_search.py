"""A tiny search end to end (toy Morse backbone, 2x2 Cu(111) + 2 S), determinism, resume after a kill."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from ase.io import read

from tests.core.test_search_toy import StopSearch, ToyBackbone, toy_problem
from uipbench.search import SearchFolderError, SearchSettings, search, search_to_folder
from uipbench.search.candidates import CandidateGenerator
from uipbench.search.engine import rng_for


def _same(a, b) -> None:
    """Two lists of evaluations are the same search: identical energies and positions."""
    assert [e.index for e in a] == [e.index for e in b]
    for x, y in zip(a, b):
        assert x.energy == y.energy and x.move == y.move and x.accepted == y.accepted and x.parent == y.parent
        np.testing.assert_array_equal(x.atoms.positions, y.atoms.positions)


def test_candidates_respect_the_constraints():
    problem = toy_problem(n_sulfur=2)
    generator = CandidateGenerator(problem)
    top = generator.z_top
    for k in range(20):
        atoms = generator.random(rng_for(0, k, 0))
        assert generator.is_valid(atoms)
        heights = atoms.positions[12:, 2] - top
        assert np.all((heights >= 1.2) & (heights <= 3.2))
        d = atoms.get_all_distances(mic=True)
        assert d[12, 13] >= 1.8 and d[12:, :12].min() >= 1.8
        assert [c.get_indices().tolist() for c in atoms.constraints] == [[0, 1, 2, 3]]
        moved = generator.perturb(atoms, rng_for(0, k, 1), step=1.5)
        assert moved is not None and generator.is_valid(moved)
        np.testing.assert_array_equal(moved.positions[:12], atoms.positions[:12])  # only adsorbates move
    again = generator.random(rng_for(0, 3, 0))
    np.testing.assert_array_equal(again.positions, generator.random(rng_for(0, 3, 0)).positions)


@pytest.mark.parametrize("algorithm", ["random", "basin"])
def test_tiny_search_end_to_end(tmp_path, algorithm):
    backbone = ToyBackbone()
    summary = search_to_folder(toy_problem(), backbone, budget=3, settings=SearchSettings(algorithm, seed=3),
                               out=tmp_path / "run", progress=False)
    out = summary.out
    assert len(summary.evaluations) == 3 and summary.resumed == 0
    assert all(e.converged and e.max_force < 0.05 for e in summary.evaluations)
    energies = [e.energy for e in summary.evaluations]
    assert summary.best.energy == min(energies)
    assert sorted(i for m in summary.minima for i in m.hits) == list(range(3))
    minima = read(out / "minima.extxyz", index=":")
    assert len(minima) == len(summary.minima)
    info = minima[0].info
    assert info["problem"] == "toy-cu-s2-2x2" and info["backbone"] == "toy-morse" and info["algorithm"] == algorithm
    assert info["weights_sha256"] == ToyBackbone().card.weights_sha256 and info["seed"] == 3 and info["rank"] == 1
    assert info["predicted_energy"] == pytest.approx(summary.best.energy)
    assert "delta_sha256" not in info and "predicted_energy_std" not in info
    table = pd.read_csv(out / "minima.csv")
    assert list(table["rank"]) == list(range(1, len(minima) + 1))
    assert table["energy"].is_monotonic_increasing and table["hits"].sum() == 3
    for picture in ("best_vs_evaluations.png", "best_minima.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "search.json").read_text())
    assert record["status"] == "finished" and record["budget"] == 3 and record["distinct_minima"] == len(minima)
    assert record["identity"]["settings"]["algorithm"] == algorithm
    timing = record["timing"]
    assert timing["relaxed_this_run"] == 3 and timing["cpu_seconds_per_relaxation"]["mean"] > 0
    assert timing["steps_per_relaxation"]["mean"] == pytest.approx(np.mean([e.steps for e in summary.evaluations]))
    if algorithm == "basin":
        assert [e.move for e in summary.evaluations][1:] == ["perturb"] * 2
        assert all(e.parent is not None for e in summary.evaluations[1:])


def test_search_is_a_function_of_its_seed():
    problem = toy_problem()
    a = search(problem, ToyBackbone(), budget=2, settings=SearchSettings("basin", seed=1))
    b = search(problem, ToyBackbone(), budget=2, settings=SearchSettings("basin", seed=1))
    c = search(problem, ToyBackbone(), budget=1, settings=SearchSettings("basin", seed=2))
    _same(a, b)
    assert not np.array_equal(a[0].atoms.positions, c[0].atoms.positions)


@pytest.mark.parametrize("algorithm", ["random", "basin"])
def test_resume_after_kill_gives_the_uninterrupted_search(tmp_path, algorithm):
    problem, settings, budget = toy_problem(), SearchSettings(algorithm, seed=5), 4
    counter = ToyBackbone()
    whole = search_to_folder(problem, counter, budget=budget, settings=settings, out=tmp_path / "whole",
                             progress=False, figures=False)
    first_two = ToyBackbone()
    search(problem, first_two, budget=2, settings=settings)
    # the calculator raises in the middle of evaluation 2: a kill after two finished relaxations
    killed = ToyBackbone(fail_after=first_two.calls + 5)
    with pytest.raises(StopSearch):
        search_to_folder(problem, killed, budget=budget, settings=settings, out=tmp_path / "resumed", progress=False,
                         figures=False)
    kept = sorted(p.name for p in (tmp_path / "resumed" / "evaluations").iterdir())
    assert kept == ["000000.json", "000001.json"]
    again = ToyBackbone()
    resumed = search_to_folder(problem, again, budget=budget, settings=settings, out=tmp_path / "resumed",
                               progress=False, figures=False)
    assert resumed.resumed == 2
    assert again.calls == counter.calls - first_two.calls  # nothing finished is relaxed again
    _same(whole.evaluations, resumed.evaluations)
    assert [(m.energy, m.hits) for m in whole.minima] == [(m.energy, m.hits) for m in resumed.minima]
    for name in ("minima.csv", "minima.extxyz"):
        assert (tmp_path / "whole" / name).read_text() == (tmp_path / "resumed" / name).read_text()


def test_larger_budget_extends_and_other_settings_are_refused(tmp_path):
    problem, out = toy_problem(), tmp_path / "run"
    search_to_folder(problem, ToyBackbone(), budget=1, settings=SearchSettings("random", seed=0), out=out,
                     progress=False, figures=False)
    reworded = dataclasses.replace(problem, description="the same problem, described otherwise")
    extended = search_to_folder(reworded, ToyBackbone(), budget=2, settings=SearchSettings("random", seed=0), out=out,
                                progress=False, figures=False)
    assert extended.resumed == 1 and len(extended.evaluations) == 2
    with pytest.raises(SearchFolderError, match=r"holds another search.*settings\.seed \(0 there, 1 here\)"):
        search_to_folder(problem, ToyBackbone(), budget=3, settings=SearchSettings("random", seed=1), out=out,
                         progress=False)
    with pytest.raises(SearchFolderError, match="problem.adsorbates.composition.S"):
        search_to_folder(toy_problem(n_sulfur=1), ToyBackbone(), budget=1, settings=SearchSettings("random", seed=0),
                         out=out, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SearchFolderError, match="not empty and holds no search.json"):
        search_to_folder(problem, ToyBackbone(), budget=1, out=tmp_path / "other", progress=False)


def test_a_second_search_on_a_busy_folder_is_refused_and_a_dead_owner_is_taken_over(tmp_path):
    import socket
    import subprocess
    import sys

    from uipbench._lock import LOCK_FILE, OutputLocked

    out = tmp_path / "busy"
    out.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_FILE).write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname(), "thread": 0,
                                                 "command": "uipbench search (another run)"}))
        with pytest.raises(OutputLocked, match="another run"):
            search_to_folder(toy_problem(), ToyBackbone(), budget=1, out=out, progress=False, figures=False)
        assert not (out / "search.json").exists()          # refused before anything was written
    finally:
        owner.kill()
        owner.wait()
    with pytest.warns(UserWarning):                         # its owner is dead now: the lock is taken over
        summary = search_to_folder(toy_problem(), ToyBackbone(), budget=1, out=out, progress=False, figures=False)
    assert len(summary.evaluations) == 1 and not (out / LOCK_FILE).exists()
