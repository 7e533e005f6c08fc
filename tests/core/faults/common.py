"""What the fault tests share: tiny datasets, the fake command in a subprocess, and checks for leftovers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from uipbench.datasets.generate import plan
from uipbench.datasets.io import to_extxyz_text
from uipbench.datasets.label import generator_settings, write_card
from uipbench.datasets.protocol import PROTOCOL_V1
from uipbench.paths import repo_root

from ..test_sweep import _fake_reference
from .fake_cli import WORKER_PREFIX

#: environment variable carried by every process a test run starts (found in /proc after the run)
TAG = "UIPBENCH_FAULT_TAG"
SYSTEMS = (("cu-s", 10), ("ag-s", 10))


def tiny_datasets(root: Path, systems: tuple[tuple[str, int], ...] = SYSTEMS) -> Path:
    """Labelled (fake-DFT) datasets of ``systems`` (name, structures) under ``root``."""
    for system, n in systems:
        structures = [_fake_reference(e.atoms) for e in plan(system, 2 * n) if e.repeat == 2][:n]
        (root / system).mkdir(parents=True)
        (root / system / "structures.extxyz").write_text(to_extxyz_text(structures))
        write_card(root / system, system, structures, PROTOCOL_V1, generator_settings(0, None))
    return root


def sweep_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--backbones", "chgnet-0.3.0", "--systems", "cu-s", "ag-s", "all", "--datasets-root", str(root),
            "--sizes", "4", "7", "--seeds", "0", "1", "--aggregations", "global", "atomic", "--descriptors",
            "embedding", "--workers", "2", "--out", str(out), *extra]


class Run:
    """The fake ``uipbench`` command in a child process, with its own tag, temp folder and cache."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.tag = uuid.uuid4().hex
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        root = str(repo_root())
        self.env = {**os.environ, TAG: self.tag, "TMPDIR": str(self.tmp),
                    "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
                    "UIPBENCH_CACHE_DIR": str(workdir / "cache"), **env}
        self.proc: subprocess.Popen | None = None

    def start(self, args: list[str]) -> subprocess.Popen:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.core.faults.fake_cli", *args], cwd=repo_root(),
                                     env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self.proc

    def run(self, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        proc = self.start(args)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def kill_after(self, args: list[str], delay: float, signum: int, timeout: float = 300
                   ) -> tuple[subprocess.CompletedProcess, bool]:
        """Start, send ``signum`` after ``delay`` s; (the finished run, whether it was still running then)."""
        proc = self.start(args)
        try:
            proc.wait(delay)
            alive = False
        except subprocess.TimeoutExpired:
            alive = True
            os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), alive

    def wait_for_child(self, predicate, timeout: float = 120) -> bool:
        """Wait until a process of this run matching ``predicate(cmdline)`` exists."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(predicate(cmd) for cmd in tagged_processes(self.tag).values()):
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def leftovers(self, settle: float = 5.0) -> tuple[dict[int, str], list[str]]:
        """Processes of this run still alive (after up to ``settle`` s) and temporary worker folders left."""
        end = time.monotonic() + settle
        alive = tagged_processes(self.tag)
        while alive and time.monotonic() < end:
            time.sleep(0.1)
            alive = tagged_processes(self.tag)
        return alive, sorted(p.name for p in self.tmp.glob(f"{WORKER_PREFIX}*"))

    def reap(self) -> None:
        """Kill whatever this run left alive (so one failing test does not leave processes to others)."""
        for pid in tagged_processes(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def tagged_processes(tag: str) -> dict[int, str]:
    """pid → command line of every live process whose environment holds ``TAG=tag`` (Linux /proc)."""
    needle = f"{TAG}={tag}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            if needle in environ.split(b"\0") and (entry / "stat").read_text().split(") ", 1)[1][0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def error_line(stderr: str) -> str:
    """The last line of stderr, after checking there is no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def sorted_results(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """results and predictions of a run folder (the harness's reader), in a fixed order."""
    from uipbench.harness.results import KEY_COLUMNS, read_results

    results, predictions, _ = read_results(out)
    results = results.sort_values([*KEY_COLUMNS, "metric"]).reset_index(drop=True)
    predictions = predictions.sort_values([*KEY_COLUMNS, "structure"]).reset_index(drop=True)
    return results, predictions


def assert_same_results(a: Path, b: Path) -> int:
    """Every value of both tables equal (NaN = NaN); returns the number of result rows."""
    (ra, pa), (rb, pb) = sorted_results(a), sorted_results(b)
    for x, y in ((ra, rb), (pa, pb)):
        assert list(x.columns) == list(y.columns) and len(x) == len(y)
        for column in x.columns:
            u, v = x[column].to_numpy(), y[column].to_numpy()
            if u.dtype.kind == "f" or v.dtype.kind == "f":
                assert np.array_equal(u.astype(float), v.astype(float), equal_nan=True), column
            else:
                assert (u.astype(str) == v.astype(str)).all(), column
    return len(ra)
