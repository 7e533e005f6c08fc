"""One run per output folder: a second run refuses naming the owner, a dead owner's lock is taken over."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

from uipbench._lock import LOCK_FILE, OutputLock, OutputLocked
from uipbench.harness import sweep as sweep_module

from .test_sweep import _run, datasets_root, fake_backbone  # noqa: F401  (fixtures)

HOLD = "import sys, time; from uipbench._lock import OutputLock\n" \
       "with OutputLock(sys.argv[1], command='uipbench sweep --seeds 7'):\n" \
       "    print('held', flush=True); time.sleep(60)\n"


@pytest.fixture
def held(tmp_path):
    """Another process holding the lock of tmp_path/run, as a sweep running there would."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_sweep_on_one_folder_refuses_naming_the_owner(datasets_root, fake_backbone, tmp_path, held):  # noqa: F811,E501
    with pytest.raises(OutputLocked, match=rf"in use by another uipbench run \(pid {held.pid} on "
                                           rf"{socket.gethostname()}, `uipbench sweep --seeds 7`"):
        _run(datasets_root, tmp_path)
    assert fake_backbone.calls == 0, "refused before any work"
    assert not (tmp_path / "run" / "results.csv").exists()


def test_the_cli_exits_2_on_a_locked_folder(datasets_root, tmp_path, held):  # noqa: F811
    main = "import sys; from uipbench.cli import main; sys.exit(main(sys.argv[1:]))"  # the `uipbench` script
    out = subprocess.run([sys.executable, "-c", main, "sweep", "--backbones", "chgnet-0.3.0",
                          "--systems", "cu-s", "--datasets-root", str(datasets_root), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert f"pid {held.pid}" in out.stderr and "Traceback" not in out.stderr


def test_a_dead_owners_lock_is_taken_over(datasets_root, fake_backbone, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "run").mkdir()
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "command": "uipbench sweep", "started": "earlier"}
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps(stale))
    with pytest.warns(UserWarning, match=f"took over the lock of a run that is gone \\(pid {stale['pid']}"):
        results = _run(datasets_root, tmp_path)
    assert len(results) > 0 and not (tmp_path / "run" / LOCK_FILE).exists()


def test_another_hosts_lock_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere.example", "command": "x"}))
    with pytest.raises(OutputLocked, match="on elsewhere.example"):
        with OutputLock(tmp_path):
            pass


def test_the_lock_is_released_on_an_exception(datasets_root, fake_backbone, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))

    def boom(task):
        raise RuntimeError("fit exploded")

    monkeypatch.setattr(sweep_module, "run_task", boom)
    with pytest.raises(RuntimeError, match="fit exploded"):
        _run(datasets_root, tmp_path)
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_nested_in_one_thread_but_exclusive_across_threads(tmp_path):
    errors = []
    with OutputLock(tmp_path, command="outer"):
        with OutputLock(tmp_path, command="inner"):  # a command that runs another (demo → sweep)
            pass
        assert (tmp_path / LOCK_FILE).exists(), "the inner exit leaves the outer lock"

        def other():
            try:
                OutputLock(tmp_path).acquire()
            except OutputLocked as exc:
                errors.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "`outer`" in str(errors[0])
    assert not (tmp_path / LOCK_FILE).exists()
