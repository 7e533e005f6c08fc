"""Where work runs: the executor spec, and real Dask schedulers and workers on 127.0.0.1.

The multi-process tests start a ``distributed`` scheduler and two worker processes as
separate subprocesses (``python -m distributed.cli.dask_scheduler`` / ``dask_worker``, no
nanny, so a killed worker stays dead and its tasks must go elsewhere), and compare what a
labelling run and a sweep give there with the local run, value for value.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed", reason="the dask extra is not installed (pip install 'uipbench[dask]')")

from uipbench.datasets.io import STRUCTURES_FILE, read_structures  # noqa: E402
from uipbench.datasets.label import label_entries  # noqa: E402
from uipbench.executors import (ExecutorError, ExecutorSpec, SlurmConfig, add_arguments,  # noqa: E402
                                open_executor, slurm_cluster)
from uipbench.harness.sweep import KEY_COLUMNS  # noqa: E402
from uipbench.paths import repo_root  # noqa: E402

from .dask_tasks import slow_call, square  # noqa: E402
from .test_labelling import make_fake_gpaw, plan_entries  # noqa: E402
from .test_sweep import _run as run_sweep, datasets_root, fake_backbone  # noqa: E402,F401

EXAMPLE_CONFIG = repo_root() / "docs" / "slurm.example.toml"


# ---------------------------------------------------------------- the spec and its errors

def _parse(argv: list[str]) -> ExecutorSpec:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return ExecutorSpec.from_args(parser.parse_args(argv))


def test_default_is_local_processes_and_scheduler_or_cluster_imply_dask():
    assert _parse([]) == ExecutorSpec("local", 2)
    assert _parse(["--workers", "3"]).workers == 3
    assert _parse(["--scheduler", "tcp://10.0.0.1:8786"]) == ExecutorSpec("dask", 2, "tcp://10.0.0.1:8786")
    spec = _parse(["--cluster", "slurm", "--cluster-config", str(EXAMPLE_CONFIG), "--workers", "4"])
    assert (spec.kind, spec.cluster, spec.workers) == ("dask", "slurm", 4)
    assert spec.describe()["cluster_config"] == str(EXAMPLE_CONFIG)


@pytest.mark.parametrize("argv, message", [
    (["--executor", "local", "--scheduler", "tcp://h:1"], "--scheduler needs --executor dask"),
    (["--executor", "local", "--cluster", "slurm", "--cluster-config", "x.toml"], "--cluster needs --executor dask"),
    (["--executor", "dask", "--cluster", "slurm"], "--cluster slurm needs --cluster-config FILE"),
    (["--executor", "dask", "--cluster-config", "x.toml"], "--cluster-config needs --cluster slurm"),
    (["--scheduler", "tcp://h:1", "--cluster", "slurm", "--cluster-config", "x.toml"], "not both"),
    (["--scheduler", "nowhere"], "an address such as tcp://host:8786"),
])
def test_inconsistent_options_are_clear_errors(argv, message):
    with pytest.raises(ExecutorError, match=message):
        _parse(argv)


def test_a_worker_count_below_one_is_refused_by_the_parser_and_the_spec(capsys):
    for value in ("0", "-2"):
        with pytest.raises(SystemExit) as stop:
            _parse(["--workers", value])
        assert stop.value.code == 2
        assert f"argument --workers: must be a positive integer (1 or more), got {value}" in capsys.readouterr().err
    with pytest.raises(ExecutorError, match="--workers must be a positive integer"):
        ExecutorSpec("local", 0)


@pytest.mark.parametrize("body, message", [
    ("[slurm]\nqueue = 'q'\ncores = 4\nmemory = '8GB'\n", r"needs the field\(s\) \['walltime'\]"),
    ("[slurm]\nqueue = 'q'\ncores = 'eight'\nmemory = '8GB'\nwalltime = '01:00:00'\n",
     "field 'cores' must be a positive integer, got 'eight'"),
    ("[slurm]\nqueue = 'q'\ncores = 4\nmemory = 'lots'\nwalltime = '01:00:00'\n", "field 'memory' must be a size"),
    ("[slurm]\nqueue = 'q'\ncores = 4\nmemory = '8GB'\nwalltime = 'soon'\n", "field 'walltime' must be a SLURM time"),
    ("[slurm]\nqueue = 'q'\ncores = 4\nmemory = '8GB'\nwalltime = '1:00:00'\nprologue = 'module load x'\n",
     "field 'prologue' must be a list of strings"),
    ("[slurm]\nqueue = 'q'\ncores = 4\nmemory = '8GB'\nwalltime = '1:00:00'\nqueues = 'x'\n",
     r"unknown field\(s\) \['queues'\]"),
    ("[slurm]\nqueue = 'q'\ncores = 6\nprocesses = 4\nmemory = '8GB'\nwalltime = '1:00:00'\n",
     "'cores' \\(6\\) must be a multiple of 'processes' \\(4\\)"),
    ("[pbs]\nqueue = 'q'\n", r"no \[slurm\] table"),
    ("[slurm\nqueue = ", "not a valid TOML file"),
])
def test_a_bad_cluster_config_names_the_file_and_the_field(tmp_path, body, message):
    path = tmp_path / "slurm.toml"
    path.write_text(body)
    with pytest.raises(ExecutorError, match=message) as info:
        _parse(["--cluster", "slurm", "--cluster-config", str(path)])
    assert str(path) in str(info.value)


def test_an_unreadable_cluster_config_is_a_clear_error(tmp_path):
    with pytest.raises(ExecutorError, match=f"cannot read the cluster config {tmp_path / 'absent.toml'}"):
        _parse(["--cluster", "slurm", "--cluster-config", str(tmp_path / "absent.toml")])


def test_slurm_job_script_carries_queue_cores_memory_walltime_and_prologue():
    """No SLURM here: the job script dask-jobqueue would submit, generated from the example config."""
    config = SlurmConfig.from_file(EXAMPLE_CONFIG)
    config = SlurmConfig.from_dict({**_as_table(config), "scheduler_host": "127.0.0.1"})
    cluster = slurm_cluster(config)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    for line in ("#SBATCH -p compute", "#SBATCH -A chem-surfaces", "#SBATCH --cpus-per-task=8",
                 "#SBATCH -t 04:00:00", *config.prologue):
        assert line in lines, (line, script)
    assert any(line.startswith("#SBATCH --mem=") for line in lines)
    worker = next(line for line in lines if "dask_worker" in line)
    assert worker.startswith("/shared/uipbench/.venv/bin/python -m distributed.cli.dask_worker tcp://127.0.0.1:")
    assert "--resources cores=8" in worker and "--nthreads 8" in worker
    with pytest.raises(ExecutorError, match="a task needs 16 cores but a worker .* has 8"):
        slurm_cluster(config, task_cores=16)


def _as_table(config: SlurmConfig) -> dict:
    table = {k: v for k, v in config.__dict__.items() if v is not None and k != "path"}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in table.items()}


def test_local_executor_is_a_process_pool():
    with open_executor(ExecutorSpec("local", 2)) as pool:
        pids = set(pool.map(_pid_of, range(8)))
    assert os.getpid() not in pids


def _pid_of(_: int) -> int:
    return os.getpid()


# ---------------------------------------------------------------- real Dask processes

class DaskProcesses:
    """A scheduler and ``n`` single-threaded workers (no nanny) as subprocesses on 127.0.0.1."""

    def __init__(self, folder: Path, n: int = 2, cores: int = 1) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.file = folder / "scheduler.json"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(repo_root()), os.environ.get("PYTHONPATH")) if p)}
        self.scheduler = self._start("dask_scheduler", "--port", "0")
        self.workers = [self._start("dask_worker", "--nthreads", "1", "--no-nanny", "--resources",
                                    f"cores={cores}", "--death-timeout", "20") for _ in range(n)]
        from distributed import Client

        deadline = time.monotonic() + 60
        while not self.file.exists():
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                self.close()
                raise RuntimeError("the Dask scheduler did not start")
            time.sleep(0.05)
        self.client = Client(scheduler_file=str(self.file), timeout="30s")
        self.client.wait_for_workers(n, timeout=60)
        self.address = self.client.scheduler.address
        by_pid = {pid: addr for addr, pid in self.client.run(os.getpid).items()}
        assert set(by_pid) == {w.pid for w in self.workers}, "each worker is its own process"

    def _start(self, program: str, *args: str) -> subprocess.Popen:
        command = [sys.executable, "-m", f"distributed.cli.{program}", "--host", "127.0.0.1", "--no-dashboard",
                   "--scheduler-file", str(self.file), *args]
        return subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    @property
    def worker_pids(self) -> set[int]:
        return {w.pid for w in self.workers}

    def kill(self, pid: int) -> None:
        """SIGKILL a worker and everything it started (as when its node dies)."""
        os.killpg(pid, signal.SIGKILL)

    def close(self) -> None:
        """Shut the scheduler and its workers down; SIGKILL whatever is left after a few seconds."""
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.shutdown()
            except Exception:  # noqa: BLE001 - the processes are ended below in any case
                client.close()
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    cluster = DaskProcesses(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def fresh_cluster(tmp_path):
    """A cluster of its own, for a test that kills one of its workers."""
    cluster = DaskProcesses(tmp_path / "dask-kill")
    try:
        yield cluster
    finally:
        cluster.close()


def test_a_function_map_on_dask_workers_equals_the_local_map(dask_cluster):
    with open_executor(ExecutorSpec("local", 2)) as pool:
        local = [v for v, _ in pool.map(square, range(30))]
    with open_executor(ExecutorSpec("dask", scheduler=dask_cluster.address)) as executor:
        remote = list(executor.map(square, range(30)))
    assert [v for v, _ in remote] == local
    assert {pid for _, pid in remote} <= dask_cluster.worker_pids


def test_a_scheduler_without_enough_cores_is_refused(dask_cluster):
    with pytest.raises(ExecutorError, match="no worker of .* offers 2 'cores'.*--resources cores=K"):
        with open_executor(ExecutorSpec("dask", scheduler=dask_cluster.address), task_cores=2):
            pass


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch):
    import uipbench.executors as executors

    monkeypatch.setattr(executors, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ExecutorError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with open_executor(ExecutorSpec("dask", scheduler="tcp://127.0.0.1:9")):
            pass


def _structures(folder: Path) -> dict[str, tuple]:
    out = {}
    for a in read_structures(folder / STRUCTURES_FILE):
        info = {k: str(v) for k, v in a.info.items()}
        out[a.info["plan_id"]] = (a.numbers.tolist(), a.positions.tolist(), a.get_potential_energy(),
                                  a.get_forces().tolist(), info)
    return out


def _starts(folder: Path) -> list[tuple[str, int]]:
    """(plan id, parent pid) of every fake-GPAW start."""
    lines = (folder / ".labelling" / "starts.log").read_text().split("\n")
    return [(name, int(ppid)) for name, _, ppid in (line.split() for line in lines if line)]


@pytest.mark.slow
def test_labelling_on_dask_workers_equals_the_local_run(tmp_path, dask_cluster):
    fake = make_fake_gpaw(tmp_path / "fake_python")
    entries = plan_entries(6)
    local = label_entries(entries, tmp_path / "local", "cu-s", workers=2, python=fake, progress=False)
    with open_executor(ExecutorSpec("dask", scheduler=dask_cluster.address), task_cores=1) as executor:
        remote = label_entries(entries, tmp_path / "dask", "cu-s", python=fake, progress=False, executor=executor)
    assert local.labelled == remote.labelled == 6 and not remote.failed and not remote.duplicates
    assert _structures(tmp_path / "dask") == _structures(tmp_path / "local")
    assert {ppid for _, ppid in _starts(tmp_path / "dask")} <= dask_cluster.worker_pids, "GPAW ran on the workers"


@pytest.mark.slow
def test_labelling_on_a_local_dask_cluster_asks_for_cores(tmp_path):
    """``--executor dask`` alone: a LocalCluster whose workers offer the cores the tasks ask for."""
    fake = make_fake_gpaw(tmp_path / "fake_python")
    entries = plan_entries(3)
    local = label_entries(entries, tmp_path / "local", "cu-s", workers=2, python=fake, progress=False)
    with open_executor(ExecutorSpec("dask", 2), task_cores=1) as executor:
        remote = label_entries(entries, tmp_path / "dask", "cu-s", python=fake, progress=False, executor=executor)
    assert local.labelled == remote.labelled == 3
    assert _structures(tmp_path / "dask") == _structures(tmp_path / "local")
    assert os.getpid() not in {ppid for _, ppid in _starts(tmp_path / "dask")}


def _kill_when_started(cluster: DaskProcesses, started: Callable[[], set[int]]) -> tuple[threading.Thread, list]:
    """A thread that SIGKILLs the first worker seen running a task (``started()`` gives the pids)."""
    killed: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = started() & cluster.worker_pids
            if running:
                victim = min(running)
                cluster.kill(victim)
                killed.append(victim)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, killed


@pytest.mark.slow
def test_a_worker_killed_mid_labelling_loses_and_repeats_nothing(tmp_path, fresh_cluster):
    fake = make_fake_gpaw(tmp_path / "fake_python", seconds=0.6)
    entries = plan_entries(6)
    expected = label_entries(entries, tmp_path / "local", "cu-s", workers=2, python=fake, progress=False)
    out = tmp_path / "dask"

    def started() -> set[int]:
        log = out / ".labelling" / "starts.log"
        return {ppid for _, ppid in _starts(out)} if log.exists() else set()

    thread, killed = _kill_when_started(fresh_cluster, started)
    with open_executor(ExecutorSpec("dask", scheduler=fresh_cluster.address), task_cores=1) as executor:
        report = label_entries(entries, out, "cu-s", python=fake, progress=False, executor=executor)
    thread.join()
    assert killed, "a worker was killed mid-task"
    assert report.labelled == expected.labelled == 6 and not report.failed and not report.duplicates
    assert _structures(out) == _structures(tmp_path / "local")
    ids = [a.info["plan_id"] for a in read_structures(out / STRUCTURES_FILE)]
    assert len(ids) == len(set(ids)) == 6, "each structure written once"
    starts = _starts(out)
    on_victim = {name for name, ppid in starts if ppid == killed[0]}
    survivor = fresh_cluster.worker_pids - set(killed)
    assert on_victim and all((name, pid) in starts for name in on_victim for pid in survivor), \
        "the killed worker's task was retried on the other worker"
    finished = (out / ".labelling" / "calls.log").read_text().split()
    assert sorted(finished) == sorted(ids), "each DFT finished once"


# ---------------------------------------------------------------- the sweep on Dask

def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


def _assert_same_sweep(a: Path, b: Path) -> None:
    """Every value of results.csv and predictions.csv equal (exactly), whatever the order of rows."""
    for name, keys in (("results.csv", [*KEY_COLUMNS, "metric"]), ("predictions.csv", [*KEY_COLUMNS, "structure"])):
        left, right = pd.read_csv(a / name), pd.read_csv(b / name)
        assert not left.duplicated(keys).any() and not right.duplicated(keys).any(), f"{name}: a cell counted twice"
        pd.testing.assert_frame_equal(_sorted(left, keys), _sorted(right, keys), check_exact=True)


SWEEP = dict(descriptors=["embedding", "soap"], progress=False)


@pytest.mark.slow
def test_sweep_on_dask_workers_equals_the_local_process_run(datasets_root, fake_backbone, tmp_path, monkeypatch,
                                                            dask_cluster):
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    local = run_sweep(datasets_root, tmp_path / "local", executor=None, workers=2, **SWEEP)
    with open_executor(ExecutorSpec("dask", scheduler=dask_cluster.address)) as executor:
        remote = run_sweep(datasets_root, tmp_path / "dask", executor=executor, **SWEEP)
    assert len(local) == len(remote) > 0 and np.isfinite(remote.value).any()
    _assert_same_sweep(tmp_path / "local" / "run", tmp_path / "dask" / "run")


class Slowed(Executor):
    """Submits every task through :func:`dask_tasks.slow_call`, so that a test can kill a worker mid-task."""

    def __init__(self, inner: Executor, folder: Path, seconds: float) -> None:
        self.inner, self.folder, self.seconds = inner, folder, seconds

    def submit(self, fn, /, *args, **kwargs):
        task = args[0]
        name = f"{task.descriptor}-{task.system}"  # no dots: the marker file is name.pid.random
        return self.inner.submit(slow_call, str(self.folder), name, self.seconds, fn, *args, **kwargs)


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_gives_the_results_of_a_run_without_the_fault(
        datasets_root, fake_backbone, tmp_path, monkeypatch, fresh_cluster):
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    run_sweep(datasets_root, tmp_path / "local", executor=None, workers=2, **SWEEP)
    markers = tmp_path / "markers"
    markers.mkdir()

    def started() -> set[int]:
        return {int(p.name.split(".")[-2]) for p in markers.iterdir()}

    thread, killed = _kill_when_started(fresh_cluster, started)
    with open_executor(ExecutorSpec("dask", scheduler=fresh_cluster.address)) as executor:
        run_sweep(datasets_root, tmp_path / "dask", executor=Slowed(executor, markers, 1.0), **SWEEP)
    thread.join()
    assert killed, "a worker was killed mid-task"
    _assert_same_sweep(tmp_path / "local" / "run", tmp_path / "dask" / "run")
    starts = [p.name.rsplit(".", 2) for p in markers.iterdir()]
    retried = {name for name, pid, _ in starts if int(pid) == killed[0]}
    assert retried and all(sum(n == name for n, _, _ in starts) == 2 for name in retried), \
        "the killed worker's task ran again elsewhere"
