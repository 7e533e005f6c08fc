"""One run at a time per output folder: a lock file naming its owner.

``with OutputLock(folder, command="uipbench sweep ..."):`` creates ``folder/.uipbench.lock``
atomically and exclusively (a hard link to its complete record) holding the owner's pid, host,
command and start time, and removes it on exit, exceptions included (Ctrl-C and SIGTERM too).
A second run on the same folder gets :class:`OutputLocked` naming the owner.  A lock left by a
process that is gone (killed) on this host is taken over, with a warning, and the temporary files
of its unfinished atomic writes are removed; a lock of another host is never taken over (its
process cannot be checked from here).  The thread that holds the lock may enter it again (nested
commands).  A folder the lock had to create is removed on release when the run left it empty.

A run that writes only some files of a folder others write into too (``uipbench embed --output``)
locks just those: ``OutputLock(folder, part="name", files=(...))`` is ``folder/.name.uipbench.lock``,
and taking it over removes the temporary files of ``files`` only.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from ._interrupt import pid_alive

LOCK_FILE = ".uipbench.lock"
#: the temporary file of a lock record being created: ``<lock name>.<pid>.<thread>.tmp``
_LOCK_RECORD = re.compile(rf"{re.escape(LOCK_FILE)}\.(\d+)\.\d+\.tmp$")
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
    if pid <= 0 or not pid_alive(pid):
        return False
    recorded, now = owner.get("pid_start"), _start_ticks(pid)  # a live pid: the owner's, or reused since?
    return recorded is None or now is None or recorded == now


def _write_synced(fd: int, text: str) -> None:
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _remove_leftovers(folder: Path, files: Sequence[str] = ()) -> int:
    """Remove the temporary files of atomic writes (``uipbench._atomic``: ``.<name>.<random>.tmp``) and
    of lock creation in ``folder`` (only those of ``files`` and of lock records, when given): called only
    when the lock of a dead owner is taken over, whose writes they were (no other run writes them)."""
    removed = 0
    for path in folder.glob(".*.tmp"):
        record = _LOCK_RECORD.search(path.name)
        if files and not record and not any(path.name.startswith(f".{name}.") for name in files):
            continue  # another run's file in a folder shared by part locks
        if record and pid_alive(int(record.group(1))):
            continue  # the lock record of a run taking a lock right now
        try:
            if path.is_file():
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def _describe(owner: dict[str, Any]) -> str:
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, `{owner.get('command', '?')}`, "
            f"since {owner.get('started', '?')}")


class OutputLock:
    """Exclusive use of ``folder`` by one run, or of the ``files`` of ``folder`` that ``part`` names
    (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, command: str = "", *, part: str | None = None,
                 files: Sequence[str] = ()) -> None:
        self.folder = Path(folder)
        self.path = self.folder / (LOCK_FILE if part is None else f".{part}{LOCK_FILE}")
        self.files = tuple(files) if part is not None else ()
        self.command = command
        self._owned = False
        self._created = False

    def _owner_record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "pid_start": _start_ticks(os.getpid()), "thread": threading.get_ident(),
                "host": socket.gethostname(), "command": self.command,
                "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}

    def _create(self) -> bool:
        """Make the lock file, complete with its owner record, or return False if it exists.

        The record is written to a temporary file first and hard-linked to the lock's name (atomic and
        exclusive), so no other run ever reads a lock file without an owner, even if this one is killed
        in between; where the filesystem has no hard links, the file is created exclusively and written.
        """
        record = json.dumps(self._owner_record())
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            _write_synced(os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644), record)
            try:
                os.link(tmp, self.path)
                return True
            except (FileExistsError, FileNotFoundError):  # taken, or our record removed by a taker: retry
                return False
            except OSError:  # no hard links here
                pass
        finally:
            tmp.unlink(missing_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        _write_synced(fd, record)
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
        guard = self.path.with_name(f"{self.path.name}.takeover")
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
                left = _remove_leftovers(self.folder, self.files)
                note = f"; removed {left} temporary file(s) of its unfinished writes" if left else ""
                who = _describe(owner) if owner else "its lock file names no owner"
                warnings.warn(f"{self.folder}: took over the lock of a run that is gone ({who}){note}",
                              stacklevel=4)
        finally:
            guard.unlink(missing_ok=True)

    def acquire(self) -> None:
        self._created = not self.folder.exists()  # removed again on release if nothing was written
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
            if self._stale(owner):
                self._take_over(owner)
                continue
            who = _describe(owner) if owner else "an owner that did not say who it is"
            other = "another output" if self.files else "another output folder"
            raise OutputLocked(f"{self._subject()} in use by another uipbench run ({who}); wait for it to "
                               f"finish or choose {other}. If no such run exists any more, remove {self.path}")
        raise OutputLocked(f"{self.folder}: could not take the lock {self.path} (it keeps changing hands)")

    def _subject(self) -> str:
        if not self.files:
            return f"{self.folder} is"
        return f"{', '.join(str(self.folder / name) for name in self.files)} (the files this run writes) are"

    def release(self) -> None:
        if not self._owned:
            return
        self._owned = False
        if self._mine(self._read_owner()):
            self.path.unlink(missing_ok=True)
        if self._created:
            try:
                self.folder.rmdir()  # a folder made for a run that wrote nothing (refused input, interrupted)
            except OSError:
                pass

    def _stale(self, owner: dict[str, Any]) -> bool:
        """A dead owner on this host, or a lock file without an owner record left long ago (by a killed
        run of an older uipbench, or on a filesystem without hard links)."""
        if not owner:
            try:
                return time.time() - self.path.stat().st_mtime > GUARD_STALE_S
            except FileNotFoundError:
                return False
        return owner.get("host") == socket.gethostname() and not _alive(owner)

    @staticmethod
    def _mine(owner: dict[str, Any] | None) -> bool:
        return bool(owner) and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname()

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
