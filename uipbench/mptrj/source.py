"""Opening an input file: plain or gzip-compressed, and its format."""
from __future__ import annotations

import gzip
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

GZIP_MAGIC = b"\x1f\x8b"


def check_input_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a regular file; else a clear error saying what it is."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    return path


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (after checking it is a file)."""
    with open(check_input_file(path), "rb") as probe:
        return probe.read(2) == GZIP_MAGIC


@contextmanager
def open_binary(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open ``path`` for reading bytes, decompressing gzip."""
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as fh:
        yield fh


def detect_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    """``json`` or ``extxyz``: from ``fmt`` if given, else the suffix, else the first non-blank byte."""
    if fmt in ("json", "extxyz"):
        return fmt
    if fmt != "auto":
        raise ValueError(f"unknown format {fmt!r}; use auto, json or extxyz")
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".json"):
        return "json"
    if name.endswith((".extxyz", ".xyz")):
        return "extxyz"
    with open_binary(path) as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return "json"
    if head[:1].isdigit():
        return "extxyz"
    raise ValueError(f"{path}: cannot tell the format (neither JSON nor extxyz); pass --format")
