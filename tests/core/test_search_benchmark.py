"""``uipbench search-benchmark``: a fake runner writes the run folders of synthetic searches on a small slab,
a fake labeller gives DFT energies from a known function (:mod:`tests.core.search_benchmark_fakes`), so every
score below is known in advance.

The DFT stand-in: E = −10 + 0.15 eV per S–S bond + 0.5 eV/Å × (mean S height − 2 Å).  Structures:
``dispersed`` (no S–S bond, −10.0 eV, the DFT minimum), ``near`` (dispersed lifted 0.01 Å: −9.995 eV, the
same minimum by the similarity rule), ``dimer`` (1 bond, −9.85 eV), ``chain`` (2 bonds, −9.7 eV).  The raw
backbone over-binds S–S (predicts the chain or the dimer lowest); the Δ-corrected one gets the order right.
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from ase.io import write

from tests.core.search_benchmark_fakes import (BACKBONE, BUDGET, CPU_TOTAL, PROBLEM, FakeLabeller, FakeRunner, option,
                                               structure, toy_model)
from uipbench.delta import save
from uipbench.search.benchmark import BenchmarkSettings, RunSpec, make_plan, read_labelled, run_benchmark
from uipbench.search.store import delta_sha256


def _plan(methods=("raw", "delta"), seeds=(0, 1), **settings):
    return make_plan([PROBLEM], [BACKBONE], list(methods), list(seeds), BenchmarkSettings(BUDGET, **settings))


def _quiet(line: str) -> None:
    pass


def _by_run(result) -> dict:
    return {(s.spec.method, s.spec.seed): s for s in result.scores}


def test_the_scores_of_a_constructed_case(tmp_path):
    runner, labeller = FakeRunner(), FakeLabeller()
    result = run_benchmark(_plan(), tmp_path / "b", runner=runner, labeller=labeller, log=_quiet)
    s = _by_run(result)
    # raw: the chain (2 S–S bonds, DFT rank 3) and the dimer (rank 2) are predicted lowest: both miss by > 0.1 eV
    assert [s["raw", i].success for i in (0, 1)] == [False, False]
    assert [s["raw", i].dft_rank for i in (0, 1)] == [3, 2]
    assert s["raw", 0].dft_above_minimum == pytest.approx(0.3) and s["raw", 1].dft_above_minimum == pytest.approx(0.15)
    assert [s["raw", i].bonds_predicted for i in (0, 1)] == [2, 1] and s["raw", 0].bonds_dft_lowest == 0
    assert s["raw", 0].gap_error == pytest.approx(0.1 - (-0.15)) and s["raw", 1].gap_error == pytest.approx(0.05 - 0.15)
    # Δ: the dispersed structure, and the same minimum 0.01 Å higher: not labelled again, it takes the
    # dispersed structure's DFT energy (an alias; its own single point would be 0.005 eV higher)
    assert [s["delta", i].success for i in (0, 1)] == [True, True]
    assert [s["delta", i].dft_rank for i in (0, 1)] == [1, 1]
    assert s["delta", 1].dft_above_minimum == 0.0
    assert s["delta", 0].gap_error == pytest.approx(0.2 - 0.15)
    assert s["delta", 1].gap_error == pytest.approx(0.25 - 0.3)
    assert [s["delta", i].evaluations_to_success for i in (0, 1)] == [4, 1]
    fit = s["delta", 0].cpu_delta_fit
    assert fit >= 0 and s["delta", 0].cpu_to_success == pytest.approx(1 + 2 + 3 + 4 + fit)  # evaluations/ kept
    assert s["delta", 1].cpu_to_success == pytest.approx(CPU_TOTAL * 1 / BUDGET + fit)  # estimated: mean x count
    assert s["raw", 0].cpu_to_success is None and s["raw", 0].cpu_seconds == pytest.approx(CPU_TOTAL)
    cells = {c.method: c for c in result.cells}
    assert (cells["raw"].successes, cells["raw"].n, cells["delta"].successes, cells["delta"].n) == (0, 2, 2, 2)
    assert cells["raw"].median_dft_rank == 2.5 and cells["delta"].median_dft_rank == 1
    assert cells["raw"].bonds_predicted == (2, 1) and cells["delta"].bonds_predicted == (0, 0)
    assert cells["raw"].mean_gap_error == pytest.approx(0.075)
    assert cells["delta"].mean_gap_error == pytest.approx(0.0)
    assert cells["delta"].median_evaluations_to_success == 2.5
    # one DFT single point per distinct minimum (the dimer and the chain were each found by three runs,
    # the dispersed minimum by two, once 0.01 Å higher)
    assert sorted(labeller.calls) == sorted([-10.0, -9.85, -9.7])
    labelled = read_labelled(tmp_path / "b")
    assert len(labelled) == 3 and {p.atoms.info["method"] for p in labelled.values()} <= {"raw", "delta"}
    first = min(labelled.values(), key=lambda p: p.energy).atoms.info
    assert (first["problem"], first["backbone"], first["method"], first["seed"], first["rank"]) == \
        (PROBLEM, BACKBONE, "delta", 0, 1) and first["predicted_energy"] == -10.2
    assert sum(a[:2] == ["delta", "fit"] for a in runner.calls) == 1
    delta_argv = next(a for a in runner.calls if "--delta" in a)
    assert delta_argv[delta_argv.index("--delta") + 1].endswith(f"models/{BACKBONE}")


def test_the_report_has_the_table_the_figure_and_the_pictures(tmp_path):
    out = tmp_path / "b"
    run_benchmark(_plan(), out, runner=FakeRunner(), labeller=FakeLabeller(), log=_quiet)
    md = (out / "report.md").read_text()
    assert f"| {PROBLEM} | {BACKBONE} | raw | 0/2 |" in md and f"| {PROBLEM} | {BACKBONE} | Δ | 2/2 |" in md
    assert "nothing is relaxed with DFT" in md and "Lan et al." in md
    assert (out / "figures" / "success_vs_cpu.png").stat().st_size > 1000
    assert (out / "figures" / f"minima-{PROBLEM}.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "<table>" in html and 'src="figures/success_vs_cpu.png"' in html
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 5 and runs[0].startswith("problem,backbone,method,seed,status")


def _finished(out, plan) -> set:
    from uipbench.search.benchmark import run_finished
    from uipbench.search.benchmark.run import model_hashes

    hashes = model_hashes(plan, out, {})
    return {spec for spec in plan.runs if run_finished(spec, out, plan.settings, hashes.get(spec.backbone))}


def _searched(runner: FakeRunner) -> list[tuple[str, int]]:
    return [(a[a.index("--out") + 1].split("/")[-2], int(a[a.index("--out") + 1].split("-")[-1]))
            for a in runner.calls if a[0] == "search"]


def test_a_killed_benchmark_resumes_without_repeating_a_run_or_a_dft_point(tmp_path):
    """Ctrl-C in a run, then in a DFT single point (the pool's next task may have started meanwhile: whatever
    finished is kept); each resumption does exactly what is missing."""
    out, plan = tmp_path / "b", _plan()
    killer = FakeRunner(kill_at=4)  # the fit, raw 0, raw 1, then Ctrl-C at delta 0
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(plan, out, runner=killer, labeller=FakeLabeller(), log=_quiet)
    assert not (out / ".uipbench.lock").exists()
    done = _finished(out, plan)
    assert {(s.method, s.seed) for s in done} >= {("raw", 0), ("raw", 1)} and ("delta", 0) not in \
        {(s.method, s.seed) for s in done}
    labeller_1, runner_2 = FakeLabeller(kill_at=3), FakeRunner()
    with pytest.raises(KeyboardInterrupt):  # the runs complete; Ctrl-C during the third DFT single point
        run_benchmark(plan, out, runner=runner_2, labeller=labeller_1, log=_quiet)
    assert sorted(_searched(runner_2)) == sorted((s.method, s.seed) for s in set(plan.runs) - done)
    assert len(runner_2.calls) == len(_searched(runner_2))  # no refit
    kept = {round(p.energy, 6) for p in read_labelled(out).values()}
    assert len(kept) >= 2 and labeller_1.calls[2] not in kept
    runner_3, labeller_2 = FakeRunner(), FakeLabeller()
    result = run_benchmark(plan, out, runner=runner_3, labeller=labeller_2, log=_quiet)
    assert runner_3.calls == []
    assert not kept & set(labeller_2.calls) and kept | set(labeller_2.calls) == {-10.0, -9.85, -9.7}
    assert len(labeller_2.calls) == 3 - len(kept)
    assert [c.successes for c in result.cells] == [0, 2]


def test_active_learning_runs_pool_their_own_dft_labels(tmp_path):
    labeller = FakeLabeller()
    plan = _plan(methods=("al",), seeds=(0,), rounds=3, label_per_round=2)
    result = run_benchmark(plan, tmp_path / "b", runner=FakeRunner(), labeller=labeller, log=_quiet)
    assert labeller.calls == [-9.85]  # the dispersed structure was labelled by the run: pooled, not relabelled
    score = result.scores[0]
    assert score.success and score.dft_rank == 1
    assert score.evaluations == 2 * BUDGET and score.evaluations_to_success == BUDGET + 2 + 1  # round 1's third
    assert score.cpu_search == pytest.approx(2 * CPU_TOTAL) and score.cpu_dft == pytest.approx(2 * 100.0 + 10.0)
    assert score.cpu_to_success == pytest.approx(score.cpu_seconds) == pytest.approx(2 * CPU_TOTAL + 210.0)
    sources = sorted(p.source for p in read_labelled(tmp_path / "b").values())
    assert sources == ["al", "top-k"]
    runner = FakeRunner()  # converged after 2 of 3 rounds: finished
    run_benchmark(plan, tmp_path / "b", runner=runner, labeller=labeller, log=_quiet)
    assert runner.calls == []


def test_a_finished_run_of_other_settings_is_run_again(tmp_path):
    """A run folder of other settings (a benchmark refuses such a resume, but a folder can be put there by
    hand) is not taken as finished."""
    from uipbench.search.benchmark.run import execute_runs

    out, plan = tmp_path / "b", _plan(methods=("raw",), seeds=(0,))
    run_benchmark(plan, out, runner=FakeRunner(), labeller=FakeLabeller(), log=_quiet)
    for other in (_plan(methods=("raw",), seeds=(0,), algorithm="basin"),
                  make_plan([PROBLEM], [BACKBONE], ["raw"], [0], BenchmarkSettings(BUDGET + 5))):
        runner = FakeRunner()
        assert [o.status for o in execute_runs(other, out, runner, 1, _quiet)] == ["finished"]
        assert len(runner.calls) == 1
    runner = FakeRunner()
    # the folder now holds 15 relaxations: 10 are run again (a real search reads its first 10 back)
    run_benchmark(plan, out, runner=runner, labeller=FakeLabeller(), log=_quiet)
    assert len(runner.calls) == 1


def test_a_resume_with_other_settings_is_refused_and_a_larger_plan_extends(tmp_path):
    from uipbench.search.benchmark import BenchmarkInputError

    out = tmp_path / "b"
    run_benchmark(_plan(methods=("raw",), seeds=(0,)), out, runner=FakeRunner(), labeller=FakeLabeller(), log=_quiet)
    before = (out / "benchmark.json").read_text()
    for other, named in ((_plan(methods=("raw",), seeds=(0,), algorithm="basin"), "algorithm 'random' there, 'basin'"),
                         (make_plan([PROBLEM], [BACKBONE], ["raw"], [0], BenchmarkSettings(BUDGET + 5, label_top=1)),
                          "budget 10 there, 15 now; label_top 2 there, 1 now"),
                         (_plan(methods=("delta",), seeds=(0,)), "methods raw of the earlier plan missing")):
        runner = FakeRunner()
        with pytest.raises(BenchmarkInputError, match="choose another --out") as caught:
            run_benchmark(other, out, runner=runner, labeller=FakeLabeller(), log=_quiet)
        assert named in str(caught.value) and runner.calls == []
        assert (out / "benchmark.json").read_text() == before
    runner = FakeRunner()  # more seeds, another method and active learning (its rounds were unset: no al runs)
    larger = _plan(methods=("raw", "delta", "al"), seeds=(0, 1), rounds=3, label_per_round=2)
    result = run_benchmark(larger, out, runner=runner, labeller=FakeLabeller(), log=_quiet)
    assert len(_searched(runner)) == 5 and json.loads((out / "benchmark.json").read_text())["seeds"] == [0, 1]
    assert [o.status for o in result.outcomes].count("resumed") == 1


def test_a_delta_run_of_another_model_is_refused_not_mixed(tmp_path):
    out, plan = tmp_path / "b", _plan(methods=("delta",), seeds=(0,))
    run_benchmark(plan, out, runner=FakeRunner(), labeller=FakeLabeller(), log=_quiet)
    save(toy_model(0.5), out / "models" / BACKBONE, BACKBONE, "0" * 64)  # the model refitted, its run kept
    runner, lines = FakeRunner(), []
    result = run_benchmark(plan, out, runner=runner, labeller=FakeLabeller(), log=lines.append)
    assert runner.calls == [] and [o.status for o in result.outcomes] == ["failed"]
    assert result.scores[0].status == "failed" and result.cells[0].n == 0
    message = json.loads((out / "failures.json").read_text())["runs"][0]["message"]
    assert "holds a search with another Δ-model" in message and "move the folder aside" in message
    assert delta_sha256(toy_model(0.0))[:12] in message and delta_sha256(toy_model(0.5))[:12] in message
    assert any("another Δ-model" in line for line in lines)
    assert (RunSpec(PROBLEM, BACKBONE, "delta", 0).folder(out) / "search.json").is_file()  # nothing deleted


def test_a_failed_dft_point_is_recorded_skipped_and_not_retried(tmp_path):
    out = tmp_path / "b"
    labeller = FakeLabeller(fail=(-9.7,))  # the chain's DFT fails
    result = run_benchmark(_plan(), out, runner=FakeRunner(), labeller=labeller, log=_quiet)
    s = _by_run(result)
    assert s["raw", 0].status == "unlabelled" and s["raw", 0].success is None  # its predicted minimum is the chain
    assert s["raw", 1].status == "scored" and np.isnan(s["raw", 1].gap_dft)  # its runner-up is the chain
    failures = json.loads((out / "failures.json").read_text())
    assert [f["run"] for f in failures["labels"]] == [f"{PROBLEM}/{BACKBONE}/raw/seed-0"]
    again = FakeLabeller()
    run_benchmark(_plan(), out, runner=FakeRunner(), labeller=again, log=_quiet)
    assert again.calls == []
    md = (out / "report.md").read_text()
    assert "SCF did not converge" in md
    assert f"| {PROBLEM} | {BACKBONE} | raw | 0/1 | 1 |" in md  # the unscored run beside k/n
    assert "k successes among the n runs *scored*" in md and "success_rate_all" in md


def test_the_success_rate_of_all_runs_counts_the_unscored_ones():
    from uipbench.search.benchmark.report import cell_rows, cell_table
    from uipbench.search.benchmark.score import RunScore, aggregate

    spec = RunSpec(PROBLEM, BACKBONE, "delta", 0)
    scores = [RunScore(spec, "scored", success=True, dft_rank=1),
              RunScore(RunSpec(PROBLEM, BACKBONE, "delta", 1), "scored", success=False, dft_rank=2),
              RunScore(RunSpec(PROBLEM, BACKBONE, "delta", 2), "unlabelled"),
              RunScore(RunSpec(PROBLEM, BACKBONE, "delta", 3), "failed")]
    cell = aggregate(scores)[0]
    assert (cell.successes, cell.n, cell.unscored) == (1, 2, 2)
    assert cell.success_rate == 0.5 and cell.success_rate_all == 0.25
    row = cell_rows([cell])[0]
    assert row["success_rate"] == 0.5 and row["success_rate_all"] == 0.25
    assert f"| {PROBLEM} | {BACKBONE} | Δ | 1/2 | 2 | 1.5 |" in cell_table([cell])


def test_a_structure_without_a_finite_dft_energy_is_no_dft_point(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    from uipbench.search.benchmark.collect import RunResult
    from uipbench.search.benchmark.labelling import pool_al

    good, bad = structure("dispersed"), structure("dimer")
    for atoms, energy in ((good, -10.0), (bad, float("nan"))):
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
        atoms.info.update(problem=PROBLEM)
    write(tmp_path / "labelled.extxyz", [good, bad], format="extxyz")
    assert [p.energy for p in read_labelled(tmp_path).values()] == [-10.0]  # a NaN energy would be the reference
    run = RunResult(RunSpec(PROBLEM, BACKBONE, "al", 0), (), 0, 0.0, None, al_labelled=(bad,))
    protocols = {PROBLEM: type("Protocol", (), {"name": "p"})()}
    assert pool_al([run], tmp_path / "al", {}, protocols) == 0  # an active-learning label with a NaN: not pooled


def test_the_run_commands():
    from uipbench.search.benchmark.plan import search_argv

    settings = BenchmarkSettings(7, "basin", rounds=3, label_per_round=2)
    al = search_argv(RunSpec(PROBLEM, BACKBONE, "al", 2), settings, "/o")
    assert al[:9] == ["search", PROBLEM, "--backbone", BACKBONE, "--active-learning", "--rounds", "3",
                      "--label-per-round", "2"]
    assert option(al, "--budget") == "7" and option(al, "--seed") == "2" and option(al, "--algorithm") == "basin"
    assert option(al, "--out") == f"/o/runs/{PROBLEM}/{BACKBONE}/al/seed-2"
    raw = search_argv(RunSpec(PROBLEM, BACKBONE, "raw", 0), settings, "/o")
    assert "--delta" not in raw and "--active-learning" not in raw


@pytest.mark.parametrize("change, message", [
    (dict(problems=["nope"]), "unknown search problem 'nope'"),
    (dict(backbones=["nonet"]), "unknown backbone 'nonet'"),
    (dict(methods=["raw", "magic"]), "unknown method(s) 'magic'"),
    (dict(seeds=[0, 1, 0]), "seeds given twice: 0"),
    (dict(methods=["raw", "al"]), "method al needs --rounds and --label-per-round"),
    (dict(settings=BenchmarkSettings(0)), "--budget must be at least 1"),
    (dict(settings=BenchmarkSettings(5, label_top=0)), "--label-top must be at least 1"),
    (dict(seeds=[0, -1]), "seeds must be non-negative integers"),
    (dict(settings=BenchmarkSettings(5, rounds=2)), "only apply with method al"),
])
def test_bad_input_is_refused_before_any_work(change, message):
    args = dict(problems=[PROBLEM], backbones=[BACKBONE], methods=["raw"], seeds=[0], settings=BenchmarkSettings(5))
    args.update(change)
    with pytest.raises(ValueError) as caught:
        make_plan(**args)
    assert message in str(caught.value)


def test_the_command_refuses_bad_input_with_one_line(tmp_path, capsys):
    from uipbench.cli import main

    out = tmp_path / "b"
    base = ["search-benchmark", "--problems", PROBLEM, "--backbones", BACKBONE, "--budget", "3", "--out", str(out)]
    assert main([*base, "--seeds", "1", "1"]) == 2
    assert "seeds given twice: 1" in capsys.readouterr().err
    assert main([*base, "--methods", "raw", "al"]) == 2
    assert "method al needs --rounds" in capsys.readouterr().err
    assert main([*base[:2], "cu-s9-1x1", *base[3:]]) == 2
    assert "unknown search problem 'cu-s9-1x1'" in capsys.readouterr().err
    assert not out.exists()


def test_a_command_this_uipbench_lacks_is_one_error_before_work(tmp_path, monkeypatch):
    import argparse

    from uipbench.cli import search, search_benchmark
    from uipbench.search.benchmark import plan as plan_module

    subparsers = argparse.ArgumentParser().add_subparsers()
    search.register(subparsers)
    search_benchmark._check_commands(_plan(methods=("raw",)), tmp_path, subparsers.choices)  # `search` parses
    with pytest.raises(ValueError, match=r"cannot run `uipbench delta fit ...` \(no command 'delta'\)"):
        search_benchmark._check_commands(_plan(), tmp_path, subparsers.choices)
    monkeypatch.setattr(plan_module, "search_argv", lambda spec, settings, out: ["search", "--no-such-option"])
    with pytest.raises(ValueError, match="cannot run `uipbench search --no-such-option ...`.*required"):
        search_benchmark._check_commands(_plan(methods=("raw",)), tmp_path, subparsers.choices)


def test_the_cli_runner_runs_uipbench_in_a_subprocess_with_a_log(tmp_path):
    from uipbench.search.benchmark import CliRunner

    runner = CliRunner(tmp_path / "logs")
    assert runner(["backbones", "--format", "json"]) == 0
    log = (tmp_path / "logs" / "backbones.log").read_text()
    assert log.startswith("$ uipbench backbones --format json") and '"chgnet-0.3.0"' in log
    bad = ["search", "nope", "--backbone", BACKBONE, "--budget", "1", "--out", str(tmp_path / "runs" / "x")]
    assert runner(bad) == 2
    assert "unknown search problem 'nope'" in (tmp_path / "logs" / "search-x.log").read_text()
    argv = ["search", PROBLEM, "--out", f"/o/runs/{PROBLEM}/{BACKBONE}/raw/seed-0"]
    assert runner.log_path(argv).name == f"search-{PROBLEM}-{BACKBONE}-raw-seed-0.log"


def test_a_torn_model_is_fitted_again_with_force(tmp_path):
    out = tmp_path / "b"
    (out / "models").mkdir(parents=True)
    (out / "models" / f"{BACKBONE}.json").write_text("{}")  # the .npz never written: a fit killed while saving
    runner = FakeRunner()
    run_benchmark(_plan(methods=("delta",), seeds=(0,)), out, runner=runner, labeller=FakeLabeller(), log=_quiet)
    assert runner.calls[0][:2] == ["delta", "fit"] and runner.calls[0][-1] == "--force"
    assert json.loads((out / "models" / f"{BACKBONE}.fit.json").read_text())["cpu_seconds"] >= 0


def test_a_model_fitted_on_other_training_data_is_refused_one_put_there_by_hand_is_used(tmp_path, monkeypatch):
    from uipbench.datasets import io as datasets_io
    from uipbench.search.benchmark import BenchmarkInputError

    data = tmp_path / "datasets"
    (data / "cu-s").mkdir(parents=True)
    (data / "cu-s" / "structures.extxyz").write_text("the training data\n")
    monkeypatch.setattr(datasets_io, "default_root", lambda: data)
    out, plan = tmp_path / "b", _plan(methods=("delta",), seeds=(0,))
    run_benchmark(plan, out, runner=FakeRunner(), labeller=FakeLabeller(), log=_quiet)
    record = json.loads((out / "models" / f"{BACKBONE}.fit.json").read_text())
    assert list(record["training_data_sha256"]) == ["cu-s"]
    (data / "cu-s" / "structures.extxyz").write_text("the training data, relabelled\n")
    runner = FakeRunner()
    with pytest.raises(BenchmarkInputError, match=r"fitted on other training data than the datasets hold now: "
                                                  r"cu-s \(changed\).*Choose another --out, or delete .*\.\*"):
        run_benchmark(plan, out, runner=runner, labeller=FakeLabeller(), log=_quiet)
    assert runner.calls == []
    by_hand = tmp_path / "c"  # a model put there by hand: no record, used as it is, said once
    save(toy_model(), by_hand / "models" / BACKBONE, BACKBONE, "0" * 64)
    runner, lines = FakeRunner(), []
    result = run_benchmark(plan, by_hand, runner=runner, labeller=FakeLabeller(), log=lines.append)
    assert _searched(runner) == [("delta", 0)] and not any(a[:2] == ["delta", "fit"] for a in runner.calls)
    assert [o.status for o in result.outcomes] == ["finished"]
    assert sum("no record of its training data" in line for line in lines) == 1


def test_the_fit_embeds_through_a_cache_of_its_own_and_the_report_says_so(tmp_path, monkeypatch):
    import os
    import subprocess

    from uipbench.search.benchmark import CliRunner
    from uipbench.search.benchmark import run as run_module

    plan = _plan(methods=("delta",), seeds=(0,))
    for name, warm in (("b", False), ("c", True)):
        out, runner = tmp_path / name, FakeRunner()
        cache = out.absolute() / "models" / ".cache" / BACKBONE
        if warm:  # a fit retried after a kill: its cache holds some embeddings
            (cache / "x").mkdir(parents=True)
            (cache / "x" / "0.npz").write_bytes(b"")
        run_benchmark(plan, out, runner=runner, labeller=FakeLabeller(), log=_quiet)
        assert runner.calls[0][:2] == ["delta", "fit"] and runner.envs[0] == {"UIPBENCH_CACHE_DIR": str(cache)}
        assert runner.envs[1] is None  # the search: the shared cache
        record = json.loads((out / "models" / f"{BACKBONE}.fit.json").read_text())
        assert record["embedding_cache"] == str(cache) and record["embedding_cache_empty_before"] is (not warm)
        md = (out / "report.md").read_text()
        assert "embedding cache of its own" in md
        assert (f"Δ-fit of {BACKBONE}: its own cache held embeddings already" if warm else
                f"Δ-fit of {BACKBONE}: embedded every training structure") in md
    seen = {}

    def child(args, **kwargs):
        seen.update(kwargs)
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(run_module, "run_child", child)
    runner = CliRunner(tmp_path / "logs")
    assert runner(["delta", "fit", "--out", str(tmp_path / "m")], env={"UIPBENCH_CACHE_DIR": "/c"}) == 0
    assert seen["env"]["UIPBENCH_CACHE_DIR"] == "/c" and seen["env"]["PATH"] == os.environ["PATH"]
    assert (tmp_path / "logs" / "delta-m.log").read_text().startswith("$ UIPBENCH_CACHE_DIR=/c uipbench delta fit")


def test_the_cpu_time_of_a_child_is_measured():
    import sys

    from uipbench._interrupt import children_cpu_seconds, run_child

    before = children_cpu_seconds()
    run_child([sys.executable, "-c", "sum(i * i for i in range(2_000_000))"])
    assert children_cpu_seconds() - before > 0.05  # the loop alone takes ~0.1 s of CPU


def test_sigint_ends_the_running_children_and_cancels_the_rest(tmp_path):
    import os
    import signal
    import time

    from uipbench._interrupt import Interrupted, handle_signals, run_child
    from uipbench.search.benchmark.run import execute_runs

    started = []

    def runner(argv: list[str]) -> int:  # a run that would take 60 s
        started.append(argv)
        return run_child(["sleep", "60"]).returncode

    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    with handle_signals(), pytest.raises(Interrupted):
        timer.start()
        execute_runs(_plan(seeds=(0, 1, 2)), tmp_path, runner, 2, _quiet)
    assert time.perf_counter() - start < 10
    assert len(started) == 2  # two at a time; the other four were cancelled


def test_report_only_scores_what_is_there_and_starts_nothing(tmp_path):
    out = tmp_path / "b"
    plan = _plan()
    with pytest.raises(KeyboardInterrupt):  # the runs finish; Ctrl-C during the second DFT single point
        run_benchmark(plan, out, runner=FakeRunner(), labeller=FakeLabeller(kill_at=2), log=_quiet)
    labelled = read_labelled(out)
    assert 1 <= len(labelled) < 3, "some but not all DFT points (the pool may have finished one more)"

    def nothing(*args, **kwargs):
        raise AssertionError("--report-only started work")

    result = run_benchmark(plan, out, runner=nothing, labeller=nothing, log=_quiet, report_only=True)
    assert result.labelled == 0 and read_labelled(out).keys() == labelled.keys()
    statuses = {(s.spec.method, s.spec.seed): s.status for s in result.scores}
    assert statuses["delta", 0] == "scored", "the first DFT point labelled is delta seed 0's predicted minimum"
    assert "unlabelled" in statuses.values(), "runs whose predicted minimum has no DFT energy yet are listed"
    assert (out / "report.md").is_file()
    fresh = run_benchmark(plan, tmp_path / "empty", runner=nothing, labeller=nothing, log=_quiet, report_only=True)
    assert {o.status for o in fresh.outcomes} == {"skipped"} and not any(s.status == "scored" for s in fresh.scores)
