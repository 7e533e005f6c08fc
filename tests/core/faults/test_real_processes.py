"""Real processes killed or interrupted at chosen moments (fast and deterministic; the random moments are in
test_kill.py): what a SIGKILL leaves behind is harmless and cleaned up, and Ctrl-C to a command with worker
processes ends it with its one line."""
from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .common import Run, tagged_processes
from .test_kill import _assert_nothing_left


#: a cache write that stops halfway through its temporary file (then the test kills it)
KILLED_CACHE_WRITE = textwrap.dedent("""
    import sys, time
    import numpy as np
    from ase.io import read
    from uipbench.cache import EmbeddingCache, cached_embed
    from tests.core.fake_backbone import FakeBackbone

    def half_a_write(fh, **arrays):
        fh.write(b"PK\\x03\\x04 half an npz")
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)

    np.savez = half_a_write
    cached_embed(FakeBackbone(), read(sys.argv[2], index=":1"), EmbeddingCache(sys.argv[1]))
""")


def test_the_temporary_file_of_a_cache_write_killed_midway_is_ignored_and_then_removed(tmp_path, datasets):
    """SIGKILL during a cache write leaves its temporary file: it is never read (no warning, the entry is a
    miss) and the next write into its folder removes it, its writer being gone."""
    import subprocess
    import warnings

    from ase.io import read

    from uipbench.cache import EmbeddingCache, cached_embed
    from uipbench.paths import repo_root

    from ..fake_backbone import FakeBackbone

    cache, structures = tmp_path / "cache", datasets / "cu-s" / "structures.extxyz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CACHE_WRITE, str(cache), str(structures)], cwd=repo_root(),
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    (leftover,) = cache.rglob(".*.tmp")
    backbone = FakeBackbone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leftover read as an entry would warn (corrupt cache file)
        batch = cached_embed(backbone, read(structures, index=":2"), EmbeddingCache(cache))
    assert backbone.calls == 1 and len(batch) == 2
    assert not leftover.exists(), "the killed write's temporary file is still there"
    assert sorted(p.parent == leftover.parent for p in cache.rglob("*.npz")) == [True, True]
    assert list(cache.rglob(".*.tmp")) == []
    from uipbench._atomic import host_tag, temporary_owner

    assert temporary_owner(leftover) == (host_tag(), proc.pid), f"{leftover.name} does not name its writer"


def _spawned_workers(run: Run) -> dict[int, str]:
    """pid -> state (R running, S sleeping, ...) of the spawned workers of ``run``."""
    states = {}
    for pid, cmd in tagged_processes(run.tag).items():
        if "spawn_main" in cmd:
            try:
                states[pid] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
    return states


def _wait_until_idle(run: Run, workers: int, timeout: float = 60) -> None:
    """Until ``workers`` spawned workers have slept (waited for work) for 0.3 s on end."""
    end, since = time.monotonic() + timeout, None
    while time.monotonic() < end:
        states = _spawned_workers(run)
        if len(states) == workers and set(states.values()) == {"S"}:
            since = since or time.monotonic()
            if time.monotonic() - since > 0.3:
                return
        else:
            since = None
        time.sleep(0.02)
    raise AssertionError(f"the workers never waited for work: {_spawned_workers(run)}")


@pytest.mark.parametrize("moment", ["while its workers start", "while they wait for work"])
def test_mptrj_envs_ctrl_c_with_workers_is_one_line_and_exit_130(moment, tmp_path, datasets):
    """Ctrl-C reaches the whole foreground process group, the spawned workers too: the command still ends with
    its one line and exit 130, no worker traceback (nor a worker killed in its start-up), nothing left.

    Workers waiting for work are those of a main process busy reading a large file (MPtrj is 12 GB); here the
    main process is stopped for a moment (SIGSTOP) so that its workers run out of work for sure."""
    import subprocess

    from uipbench.paths import repo_root

    big, out = tmp_path / "big.extxyz", tmp_path / "envs"
    big.write_text((datasets / "cu-s" / "structures.extxyz").read_text() * 400)
    run = Run(tmp_path)
    run.proc = subprocess.Popen([sys.executable, "-m", "uipbench.cli", "mptrj-envs", str(big), "--workers", "2",
                                 "--chunk-size", "4", "--no-progress", "--output", str(out)], cwd=repo_root(),
                                env=run.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own process group, as a terminal's foreground job
    try:
        assert run.wait_for_child(lambda cmd: "spawn_main" in cmd), "no worker started"
        if moment == "while they wait for work":
            end = time.monotonic() + 60
            while len(_spawned_workers(run)) < 2 and time.monotonic() < end:  # both started (by two submits)
                time.sleep(0.02)
            os.kill(run.proc.pid, signal.SIGSTOP)
            _wait_until_idle(run, 2)  # they finish the chunks they were given and wait for more
        assert run.proc.poll() is None, "it finished before the signal"
        os.killpg(run.proc.pid, signal.SIGINT)
        os.kill(run.proc.pid, signal.SIGCONT)
        _, err = run.proc.communicate(timeout=60)
        assert run.proc.returncode == 130, err
        assert [line for line in err.splitlines() if line.strip()] == ["uipbench: interrupted (SIGINT)"], err
        _assert_nothing_left(run)
        assert not out.exists(), "the folder made for the run is removed when nothing was written"
    finally:
        run.reap()
