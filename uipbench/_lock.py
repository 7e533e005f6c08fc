"""One run at a time per output folder: a lock file naming its owner.

``with OutputLock(folder, command="uipbench sweep ..."):`` creates ``folder/.uipbench.lock``
atomically (``O_CREAT | O_EXCL``) holding the owner's pid, host, command and start time, and
removes it on exit, exceptions included.  A second run on the same folder gets
:class:`OutputLocked` naming the owner.  A lock left by a process that is gone (killed) on this
host is taken over, with a warning; a lock of another host is never taken over (its process
cannot be checked from here).  The thread that holds the lock may enter it again (nested commands).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

LOCK_FILE = ".uipbench.lock"
GUARD_STALE_S = 30.0  # a take-over guard older than this was left by a killed process


class OutputLocked(ValueError):
    """The output folder is in use by another run."""


def _start_ticks(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not taken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(owner: dict[str, Any]) -> bool:
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    recorded, now = owner.get("pid_start"), _start_ticks(pid)
    return recorded is None or now is None or recorded == now


def _describe(owner: dict[str, Any]) -> str:
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, `{owner.get('command', '?')}`, "
            f"since {owner.get('started', '?')}")


class OutputLock:
    """Exclusive use of ``folder`` by one run (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, command: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command
        self._owned = False

    def _owner_record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "pid_start": _start_ticks(os.getpid()), "thread": threading.get_ident(),
                "host": socket.gethostname(), "command": self.command,
                "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(self._owner_record(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _read_owner(self) -> dict[str, Any] | None:
        """The owner named in the lock file; None when the file is gone; {} while it is being written."""
        for _ in range(20):
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                return None
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                time.sleep(0.05)  # its owner is between create and write
        return {}

    def _take_over(self, owner: dict[str, Any]) -> None:
        """Remove a dead owner's lock, under a short-lived guard so that of two runs taking it over
        at once only one removes it (and never the new lock the other one made)."""
        guard = self.path.with_name(f"{LOCK_FILE}.takeover")
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > GUARD_STALE_S:  # its taker died in between
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(0.05)
            return
        try:
            if self._read_owner() == owner:
                self.path.unlink(missing_ok=True)
                warnings.warn(f"{self.folder}: took over the lock of a run that is gone ({_describe(owner)})",
                              stacklevel=4)
        finally:
            guard.unlink(missing_ok=True)

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            if self._create():
                self._owned = True
                return
            owner = self._read_owner()
            if owner is None:
                continue  # released meanwhile: try again
            if self._mine(owner) and owner.get("thread") == threading.get_ident():
                return  # this thread holds it already (a nested command): the outer one releases it
            if owner and owner.get("host") == socket.gethostname() and not _alive(owner):
                self._take_over(owner)
                continue
            who = _describe(owner) if owner else "an owner that did not say who it is"
            raise OutputLocked(f"{self.folder} is in use by another uipbench run ({who}); wait for it to "
                               f"finish or choose another output folder. If no such run exists any more, "
                               f"remove {self.path}")
        raise OutputLocked(f"{self.folder}: could not take the lock {self.path} (it keeps changing hands)")

    def release(self) -> None:
        if not self._owned:
            return
        self._owned = False
        if self._mine(self._read_owner()):
            self.path.unlink(missing_ok=True)

    @staticmethod
    def _mine(owner: dict[str, Any] | None) -> bool:
        return bool(owner) and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
