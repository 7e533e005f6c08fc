"""Stopping a run on SIGINT or SIGTERM through normal unwinding, and ending the processes it started.

``with handle_signals():`` (the ``uipbench`` entry point) turns both signals into :class:`Interrupted`,
a ``KeyboardInterrupt`` that names the signal, raised in the main thread.  So ``with`` blocks release
their output locks and remove their temporary folders, ``subprocess.run`` kills its child (the
backbone worker), and code that handles Ctrl-C handles SIGTERM the same way.  A second signal during
that cleanup quits at once (exit 128 + signal, one line, no cleanup).

Child processes started from threads other than the main one (the GPAW jobs of ``dataset build``)
are started with :func:`run_child`, which records them until they end, so :func:`end_children` can
end them from the main thread; it also ends the ``multiprocessing`` children still alive.  Pool
workers call :func:`worker_process_init` first: they leave SIGINT to their parent, die of SIGTERM
without a traceback and, on Linux, die with their parent even when it is SIGKILLed; the backbone
worker calls :func:`child_process_init` (either signal ends it at once, and so does its parent's death).
Spawned workers are started inside :func:`sigint_held`, so a Ctrl-C that reaches the whole process group
while they start up (before their initializer runs) is held back in them too, and never a traceback.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from concurrent.futures import Future

#: the signals that end a run through :class:`Interrupted`
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: seconds a child is given to exit after SIGTERM before it is killed
GRACE_S = 5.0
#: environment variable naming the parent of a child started with :func:`child_env`
PARENT_VARIABLE = "UIPBENCH_PARENT_PID"
#: name prefix of the temporary folders of backbone worker calls (:func:`worker_tempdir`)
WORKER_PREFIX = "uipbench-worker-"

#: registry of the live child processes started by :func:`run_child` (guarded by ``_LIVE_LOCK``)
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


class Interrupted(KeyboardInterrupt):
    """The run was stopped by ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + self.signum


def _raise(signum: int, frame: Any) -> None:
    for s in SIGNALS:
        signal.signal(s, _quit_now)
    raise Interrupted(signum)


def _quit_now(signum: int, frame: Any) -> None:
    os.write(2, f"uipbench: interrupted again ({signal.Signals(signum).name}); quitting without "
                f"cleanup\n".encode())
    os._exit(128 + signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread while this is entered
    (elsewhere than in the main thread it does nothing: Python delivers signals there only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def sigint_held() -> Iterator[None]:
    """SIGINT is held back (blocked) in this thread inside the block and delivered when it ends.

    A process started inside inherits the blocked SIGINT (``spawn`` and ``forkserver`` workers, which are
    new interpreters: a Ctrl-C during their start-up would otherwise end it with a traceback); a pool
    worker then ignores it for good in :func:`worker_process_init`.  So wrap whatever may start a
    worker: creating the pool and each ``submit`` (where ``ProcessPoolExecutor`` starts them).
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to hold
        yield
        return
    # The mask is this thread's: a SIGINT can still reach another thread of this process (a pool's
    # management thread), and Python then runs its handler in the main thread inside the block, e.g. while
    # a worker is being started, which leaves that worker reading a closed pipe (a traceback). So in the
    # main thread the handler itself is held too: the signal is recorded, and raised again after the block.
    pending: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum)) if main else None
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        if pending:
            signal.raise_signal(signal.SIGINT)  # to the handler of before the block, now


def children_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's children that have ended and been waited for, and of
    their own children (``RUSAGE_CHILDREN``): the difference around a child's run is that child's CPU time
    when no other child ends meanwhile."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(args: Sequence[str], *, capture_output: bool = False, **popen: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=..., **popen)`` whose process :func:`end_children` ends.

    Use it for a child started by a thread other than the main one: an :class:`Interrupted` reaches the
    main thread only, which then ends this child with :func:`end_children` instead of waiting for it.
    """
    if capture_output:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with subprocess.Popen(args, **popen) as proc:
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            out, err = proc.communicate()
        except BaseException:
            proc.kill()
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_forwarding(args: Sequence[str], **popen: Any) -> subprocess.CompletedProcess:
    """``subprocess.run(args, **popen)`` for a child that is itself a ``uipbench`` command (one that
    re-runs itself in a backbone's environment): on Ctrl-C or SIGTERM here the same signal is sent to
    the child, which then ends cleanly (its lock released, its temporary folders removed); it is
    killed only if it has not exited after :data:`GRACE_S` seconds."""
    with subprocess.Popen(args, **popen) as proc:
        try:
            out, err = proc.communicate()
        except Interrupted as exc:
            proc.send_signal(exc.signum)
            try:
                proc.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        except BaseException:
            proc.kill()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def end_children(grace: float = GRACE_S, wait_for: Iterable[Future] = ()) -> int:
    """End every child started by :func:`run_child` and every ``multiprocessing`` child still alive:
    SIGTERM, then SIGKILL after ``grace`` seconds.  With ``wait_for`` (the futures of jobs that start
    such children, the pending ones cancelled), keep ending children until those jobs are done, so a
    job that starts its child just after the first round is not waited for.  Returns how many it ended."""
    ended = _end_once(grace)
    futures = list(wait_for)
    while not all(f.done() for f in futures):
        time.sleep(0.1)
        ended += _end_once(grace)
    return ended


def _end_once(grace: float) -> int:
    import multiprocessing

    with _LIVE_LOCK:
        popens = [p for p in _LIVE if p.poll() is None]
    processes = [p for p in multiprocessing.active_children() if p.is_alive()]
    for child in [*popens, *processes]:
        child.terminate()
    for popen in popens:
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    for process in processes:
        process.join(grace)
        if process.is_alive():
            process.kill()
            process.join()
    return len(popens) + len(processes)


@contextmanager
def worker_tempdir(prefix: str = WORKER_PREFIX) -> Iterator[Path]:
    """A temporary folder ``<tmp>/<prefix><pid>-<random>``, removed on exit (Ctrl-C and SIGTERM included).

    A process killed with SIGKILL cannot remove its folder, so the folders of this prefix whose
    process is gone are removed here first: each is left behind at most until the next call.
    """
    import shutil
    import tempfile

    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-") as tmp:
        yield Path(tmp)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(parent: int | None = None) -> None:
    """Linux: this process gets SIGKILL when its parent dies (even of SIGKILL); elsewhere nothing.

    ``parent``: the pid the parent had when it started this process; if the parent is already gone
    (this process was adopted meanwhile), it exits at once.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _exit_now(signum: int, frame: Any) -> None:
    os._exit(128 + signum)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment (default: this one) for a child that calls :func:`child_process_init`: it names
    this process, so a child whose parent died while it started exits at once."""
    return {**(os.environ if env is None else env), PARENT_VARIABLE: str(os.getpid())}


def child_process_init() -> None:
    """First call of a child process its parent waits on (the backbone worker): SIGINT and SIGTERM
    end it at once without a traceback (it writes its outputs atomically into its parent's temporary
    folder, which the parent removes), and on Linux it dies with its parent (named by :func:`child_env`)."""
    for s in SIGNALS:
        signal.signal(s, _exit_now)
    parent = os.environ.get(PARENT_VARIABLE, "")
    die_with_parent(int(parent) if parent.isdigit() else None)


def worker_process_init(parent: int | None = None) -> None:
    """First call of a worker process (a pool's ``initializer``, the backbone worker): Ctrl-C is its
    parent's to handle (the parent ends it), SIGTERM ends it silently, its parent's death ends it.
    ``parent``: the parent's pid (``os.getpid()`` there, e.g. in the pool's ``initargs``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent)
