"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

The new contents go to a temporary file beside the target, ``.<name>.uipbench-<host>-<pid>-<random>.tmp``
(``<host>``: 8 hex digits of a hash of the host name), which is renamed over the target.  A writer killed
with SIGKILL leaves that file behind; its name says whose it was, so :func:`remove_stale_temporaries` can
tell a leftover (its writer is gone, or it is older than any write takes) from a write in progress.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, IO

from ._interrupt import pid_alive

#: a temporary file older than this (seconds) is a leftover whoever wrote it, on whatever host
STALE_TEMPORARY_S = 600.0
#: ``.<name>.uipbench-<host>-<pid>-<random>.tmp``
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.uipbench-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")


def host_tag() -> str:
    """This host, as temporary file names carry it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temporary_owner(path: str | os.PathLike) -> tuple[str, int] | None:
    """(host tag, pid) of the writer of a temporary file of :func:`write_atomic`; None for other names."""
    found = _TEMPORARY.match(Path(path).name)
    return (found["host"], int(found["pid"])) if found else None


def write_atomic(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "w") -> None:
    """Write ``path`` through ``write(fh)`` on a temporary file, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.uipbench-{host_tag()}-{os.getpid()}-",
                               suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: str | os.PathLike, max_age_s: float = STALE_TEMPORARY_S) -> int:
    """Remove the temporary files in ``folder`` that no write will finish; returns how many.

    For a folder no one but uipbench writes (the embedding cache): a temporary file (``.*.tmp``) is a
    leftover when its writer is a process of this host that is gone, or when it is older than
    ``max_age_s`` (a writer of another host, or a file named before writers were recorded).
    """
    removed, now, here = 0, time.time(), host_tag()
    for path in Path(folder).glob(".*.tmp"):
        owner = temporary_owner(path)
        try:
            stale = (owner is not None and owner[0] == here and not pid_alive(owner[1])) \
                or now - path.stat().st_mtime > max_age_s
            if stale and path.is_file():
                path.unlink()
                removed += 1
        except OSError:  # renamed by its writer or removed by another cleaner meanwhile, or not ours to remove
            continue
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda fh: fh.write(text))


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
