"""Tasks that the Dask tests send to worker processes.

A worker imports the module of each function it runs; this one imports only the standard
library, so a fresh worker does not spend seconds importing the test modules and their fixtures.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path


def square(x: int) -> tuple[int, int]:
    """``x * x`` and the pid of the process that computed it."""
    time.sleep(0.02)
    return x * x, os.getpid()


def slow_call(folder: str, name: str, seconds: float, fn, *args, **kwargs):
    """Leave a marker ``<name>.<pid>.<random>`` in ``folder``, wait ``seconds``, then run ``fn``."""
    Path(folder, f"{name}.{os.getpid()}.{uuid.uuid4().hex[:6]}").touch()
    time.sleep(seconds)
    return fn(*args, **kwargs)
