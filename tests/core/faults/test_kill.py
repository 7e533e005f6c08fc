"""Kills, command by command: SIGTERM or SIGINT at a point of the run ends it through normal unwinding
(exit 143 / 130, one line, no traceback), with the output lock released, no temporary file left, no
child process alive; the resumed run then equals an uninterrupted one (nothing finished is lost).

The first part sends the signal from inside this process at chosen points (fast); the ``slow`` part
starts the fake command as a real process, kills it at random moments (SIGKILL too) and resumes it.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import random
import signal
import stat
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from uipbench._lock import LOCK_FILE

from .common import Run, assert_same_results, error_line, sweep_args
from .conftest import regress_args

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def signal_at(monkeypatch, owner, name: str, signum: int, nth: int = 1, before: bool = False) -> list:
    """Send ``signum`` to this process at the ``nth`` call of ``owner.name`` (before or after it runs)."""
    original = getattr(owner, name)
    calls: list = []

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls.append(1)
        if before and len(calls) == nth:
            os.kill(os.getpid(), signum)
        out = original(*args, **kwargs)
        if not before and len(calls) == nth:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def own_children() -> list[int]:
    """pids of the live (not zombie) child processes of this process (Linux /proc)."""
    me, found = str(os.getpid()), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def assert_stopped(code: int, err: str, signum: int, *folders: Path, hint: str | None = "run the same command") -> None:
    """The run ended by ``signum`` cleanly: its code, one line, no lock, no temp file, no child."""
    name = signal.Signals(signum).name
    assert code == 128 + signum, err
    line = error_line(err)
    assert line.startswith(f"uipbench: interrupted ({name})") and (hint is None or hint in line), line
    assert [x for x in err.splitlines() if x.startswith("uipbench")] == [line], err
    for folder in folders:
        assert not (folder / LOCK_FILE).exists(), f"{folder}: lock left behind"
        assert not list(folder.glob(".*.tmp")), f"{folder}: temporary files left behind"
    assert multiprocessing.active_children() == [] and own_children() == [], "child processes left alive"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the command's signal handler stayed installed"


# --- sweep, signalled from inside this process ------------------------------------------------------------

def _at_load(mp, s):
    import uipbench.harness.sweep as m
    return signal_at(mp, m, "load_systems", s)


def _at_embedding(mp, s):
    import uipbench.harness.sweep as m
    return signal_at(mp, m, "embed_systems", s, before=True)


def _at_metadata(mp, s):
    import uipbench.harness.sweep as m
    return signal_at(mp, m, "write_json_atomic", s)


def _at_result(nth):
    def at(mp, s):
        import uipbench.harness.sweep as m
        return signal_at(mp, m, "write_results", s, nth)
    return at


def _inside_a_write(mp, s):
    """Between an atomic write's temporary file and its rename (the temp file must go)."""
    import uipbench._atomic as m
    return signal_at(mp, m.os, "replace", s, nth=2, before=True)


#: how long each sweep task of ``_while_tasks_run`` takes at least: far longer than the signal's delay, so the
#: signal lands while the workers fit however fast the machine is (a fast sweep used to end first, and the
#: late signal then hit the next test, or pytest itself)
SLOW_TASK_S = 2.0


def _slow_run_task(task):
    """The sweep's task, slowed (module level: the pool pickles it by name; forked workers see the patch)."""
    import uipbench.harness.tasks as tasks

    time.sleep(SLOW_TASK_S)
    return tasks.run_task(task)


def _while_tasks_run(mp, s):
    """From another thread while the pool's workers fit (the main thread waits in as_completed)."""
    import uipbench.harness.sweep as m
    original = m._local_pool
    timers: list[threading.Timer] = []

    def pool(workers):
        timers.append(threading.Timer(0.3, os.kill, (os.getpid(), s)))
        timers[-1].start()
        return original(workers)
    mp.setattr(m, "_local_pool", pool)
    mp.setattr(m, "run_task", _slow_run_task)
    return timers


#: where the signal lands, and which signal (both signals take the same path; each point gets one)
SWEEP_POINTS = {
    "loading the data (before the lock)": (_at_load, "SIGINT"),
    "embedding": (_at_embedding, "SIGTERM"),
    "after metadata.json": (_at_metadata, "SIGINT"),
    "after the first task's results": (_at_result(1), "SIGTERM"),
    "after the second task's results": (_at_result(2), "SIGINT"),
    "inside an atomic write": (_inside_a_write, "SIGTERM"),
    "while the pool's workers fit (SIGTERM)": (_while_tasks_run, "SIGTERM"),
    "while the pool's workers fit (SIGINT)": (_while_tasks_run, "SIGINT"),
}


@pytest.mark.parametrize("point", SWEEP_POINTS)
def test_sweep_stopped_at_a_point_resumes_to_the_same_results(point, fake, call, monkeypatch, tmp_path, datasets,
                                                              reference):
    at, signame = SWEEP_POINTS[point]
    signum = SIGNALS[signame]
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        timers = at(mp, signum)
        code, _, err = call(sweep_args(datasets, out))
    for timer in [t for t in (timers or []) if isinstance(t, threading.Timer)]:
        timer.cancel()  # never a signal after the run it was meant for
        timer.join()
    assert_stopped(code, err, signum, *([out] if out.exists() else []))
    code, _, err = call(sweep_args(datasets, out))
    assert code == 0, err
    assert assert_same_results(out, reference) > 0


def test_a_second_signal_quits_at_once(tmp_path):
    """During the cleanup a second signal does not wait for it: one line, exit 128 + signal."""
    code = textwrap.dedent("""
        import os, signal, sys, time
        from uipbench._interrupt import Interrupted, handle_signals
        with handle_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except Interrupted:
                os.kill(os.getpid(), signal.SIGINT)  # arrives during the cleanup
                time.sleep(5)
        sys.exit(0)
    """)
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130 and proc.stderr == "uipbench: interrupted again (SIGINT); quitting without cleanup\n"


def test_a_uipbench_child_gets_the_signal_and_ends_cleanly(tmp_path):
    """run_forwarding (a command re-run in a backbone's environment): SIGTERM to the parent reaches the
    child as SIGTERM, so the child unwinds (here: writes a marker) instead of being killed."""
    import subprocess

    child = textwrap.dedent("""
        import sys, time
        from uipbench._interrupt import Interrupted, handle_signals
        with handle_signals():
            try:
                print("ready", flush=True)
                time.sleep(60)
            except Interrupted as exc:
                open(sys.argv[1], "w").write(exc.signal_name)
                sys.exit(exc.exit_code)
    """)
    parent = textwrap.dedent(f"""
        import os, signal, subprocess, sys, threading, time
        from uipbench._interrupt import Interrupted, handle_signals, run_forwarding
        threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        with handle_signals():
            try:
                run_forwarding([sys.executable, "-c", {child!r}, sys.argv[1]])
            except Interrupted as exc:
                sys.exit(exc.exit_code)
    """)
    marker = tmp_path / "child-stopped"
    proc = subprocess.run([sys.executable, "-c", parent, str(marker)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143, proc.stderr
    assert marker.read_text() == "SIGTERM", "the child was killed, not signalled"


# --- other commands, signalled from inside this process -------------------------------------------------------

def test_regress_stopped_in_its_sweep_resumes_to_the_same_comparison(fake, call, monkeypatch, tmp_path, datasets,
                                                                     regress_reference):
    import uipbench.harness.sweep as m

    out = tmp_path / "out"
    with monkeypatch.context() as mp:
        signal_at(mp, m, "write_results", signal.SIGTERM)
        code, _, err = call(regress_args(datasets, out))
    assert_stopped(code, err, signal.SIGTERM, out, out / "sweep")
    code, stdout, err = call(regress_args(datasets, out))
    assert code == 0 and "PASS" in stdout, err
    assert assert_same_results(out / "sweep", regress_reference / "sweep") > 0


def test_report_stopped_while_drawing_leaves_no_report_and_no_lock(fake, call, monkeypatch, run_copy, tmp_path):
    import uipbench.report.figures as figures

    out = tmp_path / "report"
    with monkeypatch.context() as mp:
        signal_at(mp, figures, "heatmap", signal.SIGINT)
        code, _, err = call(["report", run_copy, "--out", out])
    assert_stopped(code, err, signal.SIGINT, out, hint=None)
    assert not (out / "report.md").exists() and not (out / "report.html").exists()
    assert call(["report", run_copy, "--out", out])[0] == 0 and (out / "report.md").exists()


def test_embed_stopped_while_embedding_writes_nothing(fake, call, monkeypatch, tmp_path, datasets):
    from ..fake_backbone import FakeBackbone

    with monkeypatch.context() as mp:
        signal_at(mp, FakeBackbone, "_embed_batch", signal.SIGTERM, before=True)
        code, _, err = call(["embed", "--backbone", "chgnet-0.3.0", "--input", datasets / "cu-s" / "structures.extxyz",
                             "--output", tmp_path / "out.npz", "--cache-dir", tmp_path / "cache"])
    assert_stopped(code, err, signal.SIGTERM, tmp_path, hint=None)
    assert not (tmp_path / "out.npz").exists() and not (tmp_path / "out.json").exists()


def test_mptrj_envs_stopped_while_counting_leaves_no_output(call, monkeypatch, tmp_path, datasets):
    import uipbench.mptrj.counting as counting

    out = tmp_path / "out"
    with monkeypatch.context() as mp:
        signal_at(mp, counting, "count_chunk", signal.SIGTERM)
        code, _, err = call(["mptrj-envs", datasets / "cu-s" / "structures.extxyz", "--workers", "1", "--no-progress",
                             "--chunk-size", "2", "--output", out])
    assert_stopped(code, err, signal.SIGTERM, hint=None)
    assert not out.exists(), "the folder made for the run is removed when nothing was written"


def test_demo_stopped_releases_its_lock(call, monkeypatch, tmp_path):
    import uipbench.harness.sweep as m

    def interrupted_sweep(**kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(m, "sweep", interrupted_sweep)
    code, _, err = call(["demo", "--out", tmp_path / "demo"])
    assert_stopped(code, err, signal.SIGTERM, tmp_path / "demo")


FAKE_GPAW = textwrap.dedent("""\
    #!{python}
    # stands in for Debian's python running gpaw_runner.py: the first job is fast, later ones hang
    # (unless FAKE_GPAW_FAST is set); each job writes its pid to <scratch>/<name>.pid
    import json, os, sys, time
    job_path, result_path = sys.argv[2], sys.argv[3]
    scratch, name = os.path.dirname(result_path), os.path.basename(job_path).split(".")[0]
    open(os.path.join(scratch, name + ".pid"), "w").write(str(os.getpid()))
    if any(f.endswith(".result.json") for f in os.listdir(scratch)) and not os.environ.get("FAKE_GPAW_FAST"):
        time.sleep(120)
    job = json.load(open(job_path))
    json.dump({{"energy": -1.0 * len(job["numbers"]), "forces": [[0.0, 0.0, 0.1]] * len(job["numbers"]),
               "gpaw_version": "fake", "kpts": [1, 1, 1], "wall_seconds": 0.01}}, open(result_path, "w"))
""")


def test_dataset_build_stopped_ends_its_gpaw_jobs_and_resumes(call, monkeypatch, tmp_path):
    import uipbench.datasets.label as label
    from uipbench.datasets.io import read_structures

    gpaw = tmp_path / "fake_gpaw"
    gpaw.write_text(FAKE_GPAW.format(python=sys.executable))
    gpaw.chmod(gpaw.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(label, "gpaw_available", lambda *a: (True, "fake"))
    monkeypatch.setattr(label, "label_entries", functools.partial(label.label_entries, python=str(gpaw)))
    root = tmp_path / "datasets"
    scratch = root / "cu-s" / ".labelling"

    def kill_when_a_job_hangs():
        end = time.monotonic() + 60
        while time.monotonic() < end and len(list(scratch.glob("*.pid"))) < 2:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_when_a_job_hangs, daemon=True).start()
    argv = ["dataset", "build", "cu-s", "--n", "5", "--root", root, "--relax-with", "none", "--workers", "1"]
    start = time.monotonic()
    code, _, err = call(argv)
    assert time.monotonic() - start < 60, "the hanging GPAW job was waited for"
    assert_stopped(code, err, signal.SIGTERM, root / "cu-s", hint="--resume")
    for pid_file in scratch.glob("*.pid"):
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
    assert len(read_structures(root / "cu-s" / "structures.extxyz")) == 1, "the finished structure is kept"
    monkeypatch.setenv("FAKE_GPAW_FAST", "1")
    code, out, err = call([*argv, "--resume"])
    assert code == 0, err
    assert len(read_structures(root / "cu-s" / "structures.extxyz")) == 4  # 5 planned, 1 needs a relaxation


# --- real processes, killed at random moments (slow) ----------------------------------------------------------

@pytest.fixture
def proc_run(tmp_path):
    runs: list[Run] = []

    def make(**env: str) -> Run:
        runs.append(Run(tmp_path, **env))
        return runs[-1]

    yield make
    for run in runs:
        run.reap()


def _is_worker(cmd: str) -> bool:
    return "tests.core.faults.fake_worker" in cmd


def _assert_nothing_left(run: Run, *folders: Path) -> None:
    alive, dirs = run.leftovers()
    assert alive == {}, f"processes left alive: {alive}"
    assert dirs == [], f"worker folders left: {dirs}"
    for folder in folders:
        assert not (folder / LOCK_FILE).exists() and not list(folder.glob(".*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("signame", SIGNALS)
def test_a_signal_during_the_backbone_worker_ends_it_and_removes_its_folder(signame, proc_run, tmp_path, datasets,
                                                                            reference):
    run = proc_run(FAKE_WORKER="1", FAKE_WORKER_DELAY="30")
    out = tmp_path / "run"
    run.start(sweep_args(datasets, out))
    assert run.wait_for_child(_is_worker), "the worker never started"
    assert list(run.tmp.glob("uipbench-worker-*")), "the worker's folder exists while it runs"
    os.kill(run.proc.pid, SIGNALS[signame])
    _, err = run.proc.communicate(timeout=60)
    assert run.proc.returncode == 128 + SIGNALS[signame], err
    assert error_line(err) == (f"uipbench: interrupted ({signame}); finished work is kept; run the same command "
                               f"to resume")
    _assert_nothing_left(run, out)
    done = proc_run(FAKE_WORKER="1").run(sweep_args(datasets, out))
    assert done.returncode == 0, done.stderr
    assert assert_same_results(out, reference) > 0


@pytest.mark.slow
def test_sigterm_while_the_pool_fits_ends_its_workers(proc_run, tmp_path, datasets, reference):
    run = proc_run()
    out = tmp_path / "run"
    run.start(sweep_args(datasets, out))
    end = time.monotonic() + 120
    while not (out / "metadata.json").exists() and time.monotonic() < end:  # the tasks start after it
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(run.proc.pid, signal.SIGTERM)
    _, err = run.proc.communicate(timeout=60)
    assert run.proc.returncode in (143, 0), err  # 0: it finished before the signal (a fast machine)
    _assert_nothing_left(run, out)
    assert proc_run().run(sweep_args(datasets, out)).returncode == 0
    assert assert_same_results(out, reference) > 0


@pytest.mark.slow
def test_random_kills_then_resume_give_the_same_results(proc_run, tmp_path, datasets, reference):
    """SIGTERM and SIGKILL at random moments, each followed by a resume; after a SIGKILL the next run takes
    the stale lock over with a warning.  (benchmarks/soak_kill.py does the same 20+ times.)"""
    rng = random.Random(13)
    out = tmp_path / "run"
    kills = 0
    stale = False
    for signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM):
        run = proc_run(FAKE_WORKER="1", FAKE_WORKER_DELAY="1")
        done, alive = run.kill_after(sweep_args(datasets, out), rng.uniform(2.0, 9.0), signum)
        if stale:
            assert "took over the lock of a run that is gone" in done.stderr or not (out / LOCK_FILE).exists()
        kills += alive
        if alive and signum == signal.SIGTERM:
            assert done.returncode in (143, -15), done.stderr  # -15: before the handler was installed
            assert "Traceback" not in done.stderr
        stale = alive and signum == signal.SIGKILL and (out / LOCK_FILE).exists()
        alive_procs, _ = run.leftovers()
        assert alive_procs == {}, alive_procs
    final = proc_run(FAKE_WORKER="1")
    done = final.run(sweep_args(datasets, out))
    assert done.returncode == 0, done.stderr
    if stale:
        assert "took over the lock of a run that is gone" in done.stderr
    _assert_nothing_left(final, out)
    assert assert_same_results(out, reference) > 0
    assert kills >= 1


@pytest.mark.slow
def test_mptrj_envs_sigterm_ends_its_spawned_workers(proc_run, tmp_path, datasets):
    big = tmp_path / "big.extxyz"
    text = (datasets / "cu-s" / "structures.extxyz").read_text()
    big.write_text(text * 400)
    run = proc_run()
    out = tmp_path / "envs"
    run.start(["mptrj-envs", str(big), "--workers", "2", "--chunk-size", "4", "--no-progress", "--output", str(out)])
    assert run.wait_for_child(lambda cmd: "multiprocessing" in cmd), "no worker started"
    time.sleep(0.5)
    os.kill(run.proc.pid, signal.SIGTERM)
    _, err = run.proc.communicate(timeout=60)
    assert run.proc.returncode in (143, 0), err
    if run.proc.returncode == 143:
        assert error_line(err) == "uipbench: interrupted (SIGTERM)"
        assert not out.exists() or not (out / LOCK_FILE).exists()
    _assert_nothing_left(run)


REAL_WORKER = Path(os.environ.get("UIPBENCH_ENVS_DIR", Path(__file__).parents[3] / ".venvs")) / "chgnet" / "bin"


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_WORKER / "python").exists(), reason="the chgnet environment is not created")
def test_sigterm_during_the_real_chgnet_worker_ends_it(tmp_path, datasets):
    """The real RemoteBackbone: `uipbench embed` with CHGNet in its own environment, SIGTERM while the worker
    runs: the worker is gone, its temporary folders too, exit 143."""
    import subprocess

    from uipbench.paths import repo_root

    run = Run(tmp_path)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "uipbench.cli", "embed", "--backbone", "chgnet-0.3.0",
                                 "--input", str(datasets / "cu-s" / "structures.extxyz"), "--output",
                                 str(tmp_path / "o.npz"), "--no-cache"], cwd=repo_root(), env=run.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run.proc = proc
        assert run.wait_for_child(lambda cmd: "uipbench.adapters.worker" in cmd, timeout=300), "no worker"
        time.sleep(2)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        assert error_line(err) == "uipbench: interrupted (SIGTERM)"
        alive, dirs = run.leftovers()
        assert alive == {} and dirs == [] and not list(run.tmp.iterdir()), (alive, list(run.tmp.iterdir()))
        assert not (tmp_path / "o.npz").exists()
    finally:
        run.reap()
