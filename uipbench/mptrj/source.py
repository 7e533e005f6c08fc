"""Opening an input file: plain or gzip-compressed, its format, and clear errors for broken files."""
from __future__ import annotations

import gzip
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .records import MPtrjFormatError

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def check_input_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a readable, non-empty regular file; else a clear error saying what it is."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise MPtrjFormatError(f"{path}: empty file (0 bytes), expected MPtrj JSON or extxyz")
    return path


def is_gzip(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (after checking it is a file)."""
    with open(check_input_file(path), "rb") as probe:
        return probe.read(2) == GZIP_MAGIC


@contextmanager
def open_binary(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open ``path`` for reading bytes, decompressing gzip; a broken gzip stream raises MPtrjFormatError.

    A file named ``.gz`` that is not gzip-compressed, a compressed stream cut short and corrupt
    compressed data all end in an error naming the file and what is wrong with it.
    """
    path = check_input_file(path)
    with open(path, "rb") as probe:
        head = probe.read(16)
    if not head.startswith(GZIP_MAGIC):
        if path.name.lower().endswith(".gz"):
            raise MPtrjFormatError(f"{path}: named .gz but not gzip-compressed (it starts with {head!r}); "
                                   f"decompress it properly or give the uncompressed file")
        with open(path, "rb") as fh:
            yield fh
        return
    with gzip.open(path, "rb") as fh:
        try:
            yield fh
        except _GZIP_ERRORS as exc:
            raise MPtrjFormatError(_gzip_failure(path, fh, exc)) from None


def _gzip_failure(path: Path, fh: gzip.GzipFile, exc: Exception) -> str:
    try:
        where = f"after {fh.tell()} uncompressed bytes"
    except (OSError, ValueError, EOFError):
        where = "while reading"
    if isinstance(exc, EOFError):
        return (f"{path}: truncated gzip file: the compressed stream ends {where}, before its end marker "
                f"(an interrupted download or copy?)")
    return f"{path}: corrupt gzip data {where}: {exc}"


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
