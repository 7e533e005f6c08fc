"""Several seeds of a search as executor tasks (``uipbench search ... --seeds``), locally and on Dask."""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.core.test_executors import DaskProcesses, _kill_when_started
from uipbench._lock import OutputLock
from uipbench.executors import ExecutorSpec, open_executor
from uipbench.search.seeds import run_seeds, seed_tasks, write_seeds_summary

FAKE = "tests.core.fake_search_cli"


def _tasks(tmp_path: Path, seeds, budget: int = 3, **control) -> list:
    tmp_path.mkdir(parents=True, exist_ok=True)
    control_file = tmp_path / "control.json"
    control_file.write_text(json.dumps(control))
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return [replace(t, module=FAKE) for t in seed_tasks([str(control_file), "--budget", str(budget)], seeds, out)]


def _computed(tmp_path: Path) -> list[str]:
    log = tmp_path / "out" / "computed.log"
    return log.read_text().split() if log.exists() else []


def _pids(tmp_path: Path) -> list[tuple[int, int, int]]:
    log = tmp_path / "out" / "pids.log"
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("seeds, message", [([], "at least one seed"), ([1, 2, 1], "seed(s) [1] more than once"),
                                            ([-1], "non-negative")])
def test_bad_seed_lists_are_refused(tmp_path, seeds, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        seed_tasks(["p", "--budget", "1"], seeds, tmp_path)


def test_each_seed_gets_its_own_folder_and_command(tmp_path):
    tasks = seed_tasks(["cu-s3-3x3", "--backbone", "b", "--budget", "2"], [3, 0], tmp_path / "o")
    assert [t.seed for t in tasks] == [3, 0]
    assert tasks[0].out == str((tmp_path / "o" / "seed-3").resolve())
    assert tasks[0].argv[-5:] == ("--seed", "3", "--out", tasks[0].out, "--no-progress")


def test_local_seeds_run_side_by_side_and_a_failed_seed_is_reported_not_fatal(tmp_path):
    tasks = _tasks(tmp_path, [0, 1, 2], fail=[1])
    results = run_seeds(tasks, workers=2)
    assert [r.seed for r in results] == [0, 1, 2]
    assert [r.ok for r in results] == [True, False, True]
    assert "made to fail" in results[1].error
    assert results[2].best_energy == pytest.approx(-2.2) and results[2].evaluations == 3
    assert sorted(_computed(tmp_path)) == sorted(f"{s}:{i}" for s in (0, 2) for i in range(3))
    summary = json.loads(write_seeds_summary(tmp_path / "out", results, {"kind": "local"}).read_text())
    assert summary["best_seed"] == 2 and [s["returncode"] for s in summary["seeds"]] == [0, 1, 0]


def test_a_rerun_resumes_and_repeats_no_finished_evaluation(tmp_path):
    tasks = _tasks(tmp_path, [0, 1], budget=2)
    run_seeds(tasks, workers=2)
    first = _computed(tmp_path)
    longer = _tasks(tmp_path, [0, 1], budget=4)  # a larger budget extends the seeds, as a search does
    results = run_seeds(longer, workers=1)
    assert all(r.ok for r in results)
    computed = _computed(tmp_path)
    assert len(computed) == len(set(computed)) == 8 and computed[:4] == first


def _parse(argv):
    import argparse

    from uipbench.search import command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["search", *argv])


def test_seed_and_seeds_exclude_each_other():
    with pytest.raises(SystemExit):
        _parse(["cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "1", "--out", "o", "--seed", "1",
                "--seeds", "2", "3"])


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "0", "0"], "more than once"),
    (["--seeds", "0", "--cluster", "slurm"], "--cluster slurm needs --cluster-config"),
    (["--seeds", "0", "--executor", "local", "--scheduler", "tcp://h:1"], "--scheduler needs --executor dask"),
    (["--executor", "dask"], "give --seeds"),
])
def test_bad_seed_options_exit_2_before_any_search(capsys, tmp_path, extra, message):
    from uipbench.cli import main

    code = main(["search", "cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "1", "--out",
                 str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "seed-0").exists()


def test_a_second_driver_on_the_same_folder_is_refused(capsys, tmp_path):
    from uipbench.cli import main

    import threading

    out = tmp_path / "o"
    held, done = threading.Event(), threading.Event()

    def first_driver() -> None:  # another thread: the lock lets its own thread in again (nested commands)
        with OutputLock(out, command="the first driver"):
            held.set()
            done.wait(30)

    thread = threading.Thread(target=first_driver)
    thread.start()
    held.wait(10)
    try:
        code = main(["search", "cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "1", "--out", str(out),
                     "--seeds", "0", "1"])
    finally:
        done.set()
        thread.join()
    err = capsys.readouterr().err
    assert code == 2 and "the first driver" in err
    assert not (out / "seed-0").exists()


@pytest.mark.slow
def test_seeds_on_dask_workers_equal_the_local_run_and_a_killed_worker_repeats_nothing(tmp_path):
    local = run_seeds(_tasks(tmp_path / "local", [0, 1, 2], budget=4), workers=2)
    cluster = DaskProcesses(tmp_path / "dask-cluster")
    remote_root = tmp_path / "dask"
    try:
        tasks = _tasks(remote_root, [0, 1, 2], budget=4, seconds=0.5)
        survivors: list[int] = []

        def kill_worker_only(pid: int) -> None:  # not its process group: its search must die with it
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)  # the search has 1.5 s of evaluations left
            survivors.extend(p for _, p, ppid in _pids(remote_root) if ppid == pid and _alive(p))

        cluster.kill = kill_worker_only
        thread, killed = _kill_when_started(cluster, lambda: {ppid for _, _, ppid in _pids(remote_root)})
        with open_executor(ExecutorSpec("dask", scheduler=cluster.address)) as executor:
            remote = run_seeds(tasks, executor)
        thread.join()
    finally:
        cluster.close()
    assert killed, "a worker was killed mid-seed"
    assert [(r.seed, r.ok, r.best_energy, r.evaluations) for r in remote] == \
        [(r.seed, r.ok, r.best_energy, r.evaluations) for r in local]
    computed = _computed(remote_root)
    assert len(computed) == len(set(computed)) == 12, "every evaluation computed exactly once"
    assert not survivors, "the killed worker's search died with it"
    assert not list(remote_root.glob("out/seed-*/.uipbench.lock")), "the retry took over the dead search's lock"
    retried = {seed for seed, _, ppid in _pids(remote_root) if ppid in killed}
    assert retried and all(any(s == seed and p not in killed for s, _, p in _pids(remote_root)) for seed in retried)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _fake_open_executor(seen: dict):
    from contextlib import contextmanager

    @contextmanager
    def fake(spec, **kwargs):
        seen["spec"] = spec
        yield "the dask executor"
    return fake


def test_the_command_hands_every_seed_to_the_chosen_executor(tmp_path, monkeypatch, capsys):
    import uipbench.executors as executors
    import uipbench.search.seeds as seeds
    from uipbench.cli import main
    from uipbench.search.seeds import SeedResult

    seen: dict = {}
    monkeypatch.setattr(executors, "open_executor", _fake_open_executor(seen))

    def fake_run_seeds(tasks, executor=None, *, workers=1, on_result=None):
        seen.update(tasks=tasks, executor=executor)
        return [SeedResult(t.seed, t.out, 0, -1.0 * t.seed, 2, 1) for t in tasks]

    monkeypatch.setattr(seeds, "run_seeds", fake_run_seeds)
    code = main(["search", "cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "2", "--out", str(tmp_path / "o"),
                 "--seeds", "4", "5", "--scheduler", "tcp://127.0.0.1:8786"])
    assert code == 0, capsys.readouterr().err
    assert seen["executor"] == "the dask executor" and seen["spec"].scheduler == "tcp://127.0.0.1:8786"
    assert [t.seed for t in seen["tasks"]] == [4, 5]
    assert all("--budget" in t.argv and t.argv[t.argv.index("--seed") + 1] == str(t.seed) for t in seen["tasks"])
    summary = json.loads((tmp_path / "o" / "seeds.json").read_text())
    assert summary["best_seed"] == 5 and summary["executor"]["kind"] == "dask"


def test_regress_hands_its_sweep_the_chosen_executor(tmp_path, monkeypatch, capsys):
    import uipbench.executors as executors
    import uipbench.regress as regress
    from uipbench.cli import main

    seen: dict = {}
    monkeypatch.setattr(executors, "open_executor", _fake_open_executor(seen))

    def fake_run_regress(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(regress, "run_regress", fake_run_regress)
    code = main(["regress", "--baseline", "chgnet-0.2.0", "--candidate", "chgnet-0.3.0", "--executor", "dask",
                 "--workers", "3", "--out", str(tmp_path / "r")])
    assert code == 2 and "stop here" in capsys.readouterr().err
    assert seen["executor"] == "the dask executor" and seen["workers"] == 3 and seen["spec"].workers == 3


def test_local_seeds_run_side_by_side_by_default(tmp_path, monkeypatch, capsys):
    """Without --workers, one local search per seed at a time, up to this machine's cores."""
    import os

    import uipbench.search.seeds as seeds
    from uipbench.cli import main
    from uipbench.search.seeds import SeedResult

    seen: dict = {}

    def fake_run_seeds(tasks, executor=None, *, workers=1, on_result=None):
        seen["workers"] = workers
        return [SeedResult(t.seed, t.out, 0, -1.0, 2, 1) for t in tasks]

    monkeypatch.setattr(seeds, "run_seeds", fake_run_seeds)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for given, expected in (([0, 1, 2], 2), ([7], 1)):
        out = tmp_path / f"o{len(given)}"
        assert main(["search", "cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "2", "--out", str(out),
                     "--seeds", *map(str, given)]) == 0, capsys.readouterr().err
        assert seen["workers"] == expected
