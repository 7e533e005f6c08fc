"""Two runs at once: every command that writes a run folder refuses a folder another live run holds
(exit 2, one line naming it, nothing written), takes over the lock of a run that is gone (a warning),
and of many runs racing for one folder exactly one gets it."""
from __future__ import annotations

import functools
import json
import re
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from uipbench._lock import GUARD_STALE_S, LOCK_FILE, OutputLock, OutputLocked

from .common import Run, assert_same_results, error_line, sweep_args
from .conftest import regress_args
from .test_kill import FAKE_GPAW


def _gpaw(monkeypatch, tmp_path) -> None:
    """dataset build with a fake GPAW that answers at once."""
    import uipbench.datasets.label as label

    gpaw = tmp_path / "fake_gpaw"
    gpaw.write_text(FAKE_GPAW.format(python=sys.executable))
    gpaw.chmod(gpaw.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_GPAW_FAST", "1")
    monkeypatch.setattr(label, "gpaw_available", lambda *a: (True, "fake"))
    monkeypatch.setattr(label, "label_entries", functools.partial(label.label_entries, python=str(gpaw)))


def _commands(c_tmp: Path, datasets: Path, run: Path) -> dict[str, tuple[list, Path]]:
    """argv of each command that writes a run folder, and the folder it locks."""
    mptrj_out = c_tmp / "envs"
    return {
        "sweep": (sweep_args(datasets, c_tmp / "run"), c_tmp / "run"),
        "regress": (regress_args(datasets, c_tmp / "regress"), c_tmp / "regress"),
        "report (into the run folder)": (["report", run], run),
        "report --out": (["report", run, "--out", c_tmp / "report"], c_tmp / "report"),
        "mptrj-envs --output": (["mptrj-envs", datasets / "cu-s" / "structures.extxyz", "--workers", "1",
                                 "--no-progress", "--output", mptrj_out], mptrj_out),
        "dataset build": (["dataset", "build", "cu-s", "--n", "2", "--root", c_tmp / "datasets", "--relax-with",
                           "none", "--workers", "1"], c_tmp / "datasets" / "cu-s"),
        "demo": (["demo", "--out", c_tmp / "demo"], c_tmp / "demo"),
    }


COMMANDS = list(_commands(Path("x"), Path("x"), Path("x")))


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_held_by_a_live_run_is_refused(command, fake, call, held, run_copy, tmp_path, datasets, monkeypatch):
    import uipbench.harness.sweep as sweep_module

    _gpaw(monkeypatch, tmp_path)
    sweeps = []
    monkeypatch.setattr(sweep_module, "embed_systems", lambda *a, **k: sweeps.append(a))  # no work may start
    argv, folder = _commands(tmp_path, datasets, run_copy)[command]
    pid = held(folder)
    before = _files(folder)
    code, _, err = call(argv)
    assert code == 2, err
    line = error_line(err)
    assert re.match(rf"uipbench: error: {re.escape(str(folder))} is in use by another uipbench run \(pid {pid} on "
                    rf"{re.escape(socket.gethostname())}, `uipbench sweep --seeds 7`", line), line
    assert _files(folder) == before and sweeps == [], "the refused run wrote or computed something"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


STALE = ["regress", "report --out", "mptrj-envs --output", "dataset build"]


@pytest.mark.parametrize("command", STALE)
def test_the_lock_of_a_killed_run_is_taken_over(command, fake, call, run_copy, tmp_path, datasets, monkeypatch):
    _gpaw(monkeypatch, tmp_path)
    argv, folder = _commands(tmp_path, datasets, run_copy)[command]
    folder.mkdir(parents=True)
    dead = {"pid": _dead_pid(), "host": socket.gethostname(), "command": "uipbench killed", "started": "earlier"}
    (folder / LOCK_FILE).write_text(json.dumps(dead))
    (folder / ".results.csv.abc123.tmp").write_text("half a write of the killed run")
    code, _, err = call(argv)
    assert code == 0, err
    assert f"took over the lock of a run that is gone (pid {dead['pid']}" in err, err
    assert "removed 1 temporary file(s)" in err
    assert not (folder / LOCK_FILE).exists() and not list(folder.glob(".*.tmp"))


def test_an_ownerless_lock_file_is_stale_only_when_old(tmp_path):
    """A lock file without an owner record (a crash of an older uipbench between creating and writing it)
    blocks while it may still be written, and is taken over once it is old."""
    import os

    (tmp_path / LOCK_FILE).write_text("")
    with pytest.raises(OutputLocked, match="an owner that did not say who it is"):
        OutputLock(tmp_path).acquire()
    old = time.time() - GUARD_STALE_S - 5
    os.utime(tmp_path / LOCK_FILE, (old, old))
    with pytest.warns(UserWarning, match="its lock file names no owner"):
        with OutputLock(tmp_path):
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


RACE = textwrap.dedent("""
    import sys, time
    from uipbench._lock import OutputLock, OutputLocked
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    try:
        with OutputLock(sys.argv[1], command="racer"):
            print("won", flush=True)
            time.sleep(2)
    except OutputLocked:
        print("refused", flush=True)
""")


@pytest.mark.parametrize("stale", [False, True], ids=["free folder", "stale lock"])
def test_of_many_runs_racing_for_one_folder_exactly_one_gets_it(stale, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    if stale:
        (folder / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-W", "ignore", "-c", RACE, str(folder), str(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    answers = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert answers == ["refused"] * 5 + ["won"], answers
    assert not (folder / LOCK_FILE).exists() and not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_two_sweeps_started_at_once_on_one_folder(tmp_path, datasets, reference):
    """Both real processes start together: one runs, the other refuses naming it; nothing is mixed."""
    out = tmp_path / "run"
    runs = [Run(tmp_path / f"r{i}", FAKE_WORKER="1", FAKE_WORKER_DELAY="5") for i in range(2)]
    try:
        procs = [r.start(sweep_args(datasets, out)) for r in runs]
        done = [p.communicate(timeout=300) for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 2], done
        loser = [i for i, p in enumerate(procs) if p.returncode == 2][0]
        winner = procs[1 - loser]
        assert f"is in use by another uipbench run (pid {winner.pid} " in error_line(done[loser][1])
        assert assert_same_results(out, reference) > 0
        for r in runs:
            assert r.leftovers() == ({}, [])
    finally:
        for r in runs:
            r.reap()


@pytest.mark.slow
def test_a_report_while_the_sweep_runs_in_its_folder_is_refused(tmp_path, datasets, reference):
    out = tmp_path / "run"
    sweep = Run(tmp_path / "s", FAKE_WORKER="1", FAKE_WORKER_DELAY="8")
    try:
        proc = sweep.start(sweep_args(datasets, out))
        assert sweep.wait_for_child(lambda cmd: "fake_worker" in cmd)
        report = Run(tmp_path / "r").run(["report", str(reference), "--out", str(out)])  # into the sweep's folder
        assert report.returncode == 2 and f"pid {proc.pid}" in error_line(report.stderr), report.stderr
        proc.communicate(timeout=300)
        assert proc.returncode == 0
    finally:
        sweep.reap()


def _embed_args(structures: Path, output: Path) -> list[str]:
    return ["embed", "--backbone", "chgnet-0.3.0", "--input", str(structures), "--output", str(output), "--no-cache"]


def test_an_embed_of_an_output_another_embed_is_writing_is_refused(fake, call, tmp_path, datasets):
    """`uipbench embed` locks its npz and metadata JSON (not their folder): a second embed of the same npz, or of
    another file whose metadata is the same JSON, is refused naming the first; one of another file runs beside it."""
    import os
    import signal

    structures = datasets / "cu-s" / "structures.extxyz"
    first = Run(tmp_path / "first", FAKE_WORKER="1", FAKE_WORKER_DELAY="30")
    try:
        proc = first.start(_embed_args(structures, tmp_path / "a.npz"))
        assert first.wait_for_child(lambda cmd: "fake_worker" in cmd), "the first embed never reached its worker"
        for output in (tmp_path / "a.npz", tmp_path / "a.extxyz"):  # the same npz; the same a.json
            code, _, err = call(_embed_args(structures, output))
            assert code == 2, err
            assert re.match(rf"uipbench: error: {re.escape(str(output))}, .*a\.json \(the files this run writes\) are "
                            rf"in use by another uipbench run \(pid {proc.pid} on ", error_line(err)), err
            assert not output.exists() and not (tmp_path / "a.json").exists()
        code, _, err = call(_embed_args(structures, tmp_path / "b.npz"))
        assert code == 0 and (tmp_path / "b.npz").is_file() and (tmp_path / "b.json").is_file(), err
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 143
        assert not list(tmp_path.glob(f".*{LOCK_FILE}*")), "a lock file was left"
    finally:
        first.reap()


def test_taking_over_a_dead_embeds_lock_removes_only_its_own_temporary_files(tmp_path):
    dead = {"pid": _dead_pid(), "host": socket.gethostname(), "command": "uipbench embed", "started": "earlier"}
    (tmp_path / f".a{LOCK_FILE}").write_text(json.dumps(dead))
    mine, others = tmp_path / ".a.npz.x1y2.tmp", tmp_path / ".b.npz.x3y4.tmp"  # b.npz: another embed's, running
    for path in (mine, others):
        path.write_text("half a write")
    with pytest.warns(UserWarning, match=rf"took over .*pid {dead['pid']}.*removed 1 temporary file"):
        with OutputLock(tmp_path, part="a", files=("a.npz", "a.json")):
            assert json.loads((tmp_path / f".a{LOCK_FILE}").read_text())["command"] == ""
    assert not mine.exists() and others.exists()
    assert not (tmp_path / f".a{LOCK_FILE}").exists()
