"""Fixtures of the fault suite: the fake backbone in this process, tiny datasets, a reference run."""
from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from .common import sweep_args, tiny_datasets
from .fake_cli import install

HOLD = ("import sys, time; from uipbench._lock import OutputLock\n"
        "with OutputLock(sys.argv[1], command='uipbench sweep --seeds 7'):\n"
        "    print('held', flush=True); time.sleep(120)\n")


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The fake backbone for every backbone name, and an embedding cache of this test's own."""
    install(monkeypatch.setattr)
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def datasets(tmp_path_factory) -> Path:
    """Two tiny labelled systems (read only: a test that corrupts one copies it first)."""
    return tiny_datasets(tmp_path_factory.mktemp("faults") / "datasets")


def regress_args(datasets: Path, out: Path, *extra: str) -> list[str]:
    return ["regress", "--baseline", "chgnet-0.2.0", "--candidate", "chgnet-0.3.0", "--systems", "cu-s",
            "--datasets-root", str(datasets), "--sizes", "4", "7", "--seeds", "0", "1", "--aggregations", "global",
            "--no-progress", "--out", str(out), *extra]


def _uninterrupted(out: Path, argv: list[str]) -> Path:
    """Run the command with the fake backbone (and a cache beside ``out``) to completion."""
    from uipbench.cli import main

    with pytest.MonkeyPatch.context() as mp:
        install(mp.setattr)
        mp.setenv("UIPBENCH_CACHE_DIR", str(out.parent / "cache"))
        assert main(argv) == 0
    return out


@pytest.fixture(scope="session")
def reference(tmp_path_factory, datasets) -> Path:
    """An uninterrupted sweep of ``datasets`` with the fake backbone (read only)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return _uninterrupted(out, sweep_args(datasets, out))


@pytest.fixture(scope="session")
def regress_reference(tmp_path_factory, datasets) -> Path:
    """An uninterrupted ``regress`` (both backbones the fake, so it passes) of ``datasets`` (read only)."""
    out = tmp_path_factory.mktemp("regress") / "out"
    return _uninterrupted(out, regress_args(datasets, out))


@pytest.fixture
def run_copy(reference, tmp_path) -> Path:
    """A copy of the reference run folder to damage."""
    return Path(shutil.copytree(reference, tmp_path / "run"))


@pytest.fixture
def call(capsys):
    """``call(argv) -> (exit code, stdout, stderr)`` of the command run in this process."""
    from uipbench.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        """stderr as a user sees it: the warnings raised come first, one line each."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                code = main([str(a) for a in argv])
            except SystemExit as stop:  # argparse
                code = stop.code
        captured = capsys.readouterr()
        shown = "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
        return code, captured.out, shown + captured.err

    return run


@pytest.fixture
def held(tmp_path):
    """``held(folder)``: another live process holds the output lock of ``folder``; returns its pid."""
    procs = []

    def hold(folder: Path) -> int:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc.pid

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()
