"""Streaming split of an MPtrj JSON file into the raw text of its frames, in constant memory.

The file is read in blocks; a vectorised, string-aware bracket scan (:func:`scan_block`) finds the
brackets that open or close the top, material and frame levels, and :class:`JsonFrameSplitter` walks
those events with a small state machine, cutting out each frame's text.  Only the short gaps between
brackets (``, "key": ``) are parsed in Python; the frames themselves are decoded later, by workers.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from .records import DEFAULT_BLOCK_SIZE, MAX_FRAME_BYTES, MPtrjFormatError, RawFrame, Skip, SplitStats
from .source import open_binary

_DELTA = np.zeros(256, dtype=np.int8)
_DELTA[ord("{")] = _DELTA[ord("[")] = 1
_DELTA[ord("}")] = _DELTA[ord("]")] = -1
_WS = b" \t\r\n"
_WS_TEXT = " \t\r\n"
_BOM = b"\xef\xbb\xbf"
_OPEN_BRACE, _OPEN_BRACKET = 0x7B, 0x5B
_KEY_GAP = re.compile(rb'[ \t\r\n]*(,)?[ \t\r\n]*"((?:[^"\\]|\\.)*)"[ \t\r\n]*:[ \t\r\n]*', re.S)

Member = tuple[str, Any]


@dataclass
class ScanState:
    """What one block's scan hands to the next: depth, inside-a-string, a trailing backslash run."""

    depth: int = 0
    in_string: int = 0
    backslash_run: int = 0


def _unescaped_quotes(block: bytes, a: np.ndarray, state: ScanState) -> np.ndarray:
    """Positions of the quotes in ``block`` that are not escaped; updates ``state.backslash_run``.

    A quote is escaped when an odd run of backslashes precedes it (the run may start in an earlier
    block); backslashes are rare in MPtrj, so walk back only from quotes that follow one.
    """
    quotes = np.flatnonzero(a == 0x22)
    if not (state.backslash_run or b"\\" in block):
        return quotes

    def run_before(pos: int) -> int:
        k = pos
        while k > 0 and block[k - 1] == 0x5C:
            k -= 1
        return pos - k + (state.backslash_run if k == 0 else 0)

    backslashes = np.flatnonzero(a == 0x5C)
    candidates = quotes[np.isin(quotes - 1, backslashes)].tolist()
    if quotes.size and quotes[0] == 0 and state.backslash_run:
        candidates.insert(0, 0)
    escaped = [q for q in candidates if run_before(q) % 2 == 1]
    if escaped:
        quotes = quotes[~np.isin(quotes, escaped)]
    state.backslash_run = run_before(len(block)) if block else state.backslash_run
    return quotes


def scan_block(block: bytes, state: ScanState, base: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Structural brackets of ``block`` that open/close the top, material or frame level.

    Returns absolute positions and the depth after each bracket; ``state`` carries the nesting depth,
    whether the block ends inside a string, and a trailing backslash run, to the next block.
    """
    a = np.frombuffer(block, dtype=np.uint8)
    quotes = _unescaped_quotes(block, a, state)
    brackets = np.flatnonzero(_DELTA[a])
    if brackets.size:
        n_before = np.searchsorted(quotes, brackets)
        brackets = brackets[((n_before + state.in_string) & 1) == 0]
    state.in_string = (state.in_string + quotes.size) & 1
    if not brackets.size:
        return brackets, brackets
    delta = _DELTA[a[brackets]].astype(np.int64)
    depth_after = state.depth + np.cumsum(delta)
    if depth_after.min() < 0:
        bad = int(brackets[np.argmax(depth_after < 0)])
        raise MPtrjFormatError(f"{path}: malformed JSON: unbalanced closing bracket at byte {base + bad}")
    state.depth = int(depth_after[-1])
    keep = ((delta > 0) & (depth_after <= 3)) | ((delta < 0) & (depth_after <= 2))
    return brackets[keep] + base, depth_after[keep]


def _decode_key(raw: bytes, path: str, offset: int) -> str:
    try:
        return json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode("utf-8")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MPtrjFormatError(f"{path}: malformed JSON key near byte {offset}: {exc}") from None


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS_TEXT:
        i += 1
    return i


class _GapParser:
    """Parses the text between two structural brackets: ``[,] "key": [scalar, "key": ...]``."""

    def __init__(self, path: str, where: Callable[[], str]) -> None:
        self.path = path
        self.where = where
        self.decoder = json.JSONDecoder()

    def parse(self, gap: bytes, offset: int, n_before: int) -> tuple[str | None, list[Member]]:
        """A key still waiting for its (bracketed) value, and the members with scalar values before it."""
        if not gap.strip(_WS):
            return None, []
        m = _KEY_GAP.fullmatch(gap)
        if m is None:  # slow path: members with scalar values, e.g. "frame": null
            return self._members(self._text(gap, offset), offset, n_before)
        if bool(m.group(1)) != (n_before > 0):
            raise MPtrjFormatError(f"{self.path}: malformed JSON: "
                                   f"{'missing' if n_before else 'unexpected'} comma near byte {offset}")
        return _decode_key(m.group(2), self.path, offset), []

    def _text(self, gap: bytes, offset: int) -> str:
        try:
            return gap.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MPtrjFormatError(f"{self.path}: invalid UTF-8 near byte {offset + exc.start}") from None

    def _members(self, text: str, offset: int, count: int) -> tuple[str | None, list[Member]]:
        i, members = 0, []
        while (i := _skip_ws(text, i)) < len(text):
            if count > 0:
                if text[i] != ",":
                    raise MPtrjFormatError(f"{self.path}: malformed JSON near byte {offset + i} ({self.where()})")
                i = _skip_ws(text, i + 1)
            name, i = self._key(text, i, offset)
            if i >= len(text):
                return name, members
            try:
                value, i = self.decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise MPtrjFormatError(f"{self.path}: malformed JSON value of {name!r} near byte "
                                       f"{offset + exc.pos}: {exc.msg}") from None
            members.append((name, value))
            count += 1
        return None, members

    def _key(self, text: str, i: int, offset: int) -> tuple[str, int]:
        """Read ``"key" :`` at ``i``; return the key and the position of its value (after blanks)."""
        if i >= len(text) or text[i] != '"':
            raise MPtrjFormatError(f"{self.path}: malformed JSON: expected a key near byte {offset + i} "
                                   f"({self.where()})")
        try:
            name, i = json.decoder.scanstring(text, i + 1)
        except json.JSONDecodeError as exc:
            raise MPtrjFormatError(f"{self.path}: malformed JSON key near byte {offset + i}: {exc.msg}") from None
        i = _skip_ws(text, i)
        if i >= len(text) or text[i] != ":":
            raise MPtrjFormatError(f"{self.path}: malformed JSON: expected ':' after key {name!r} near byte "
                                   f"{offset + i}")
        return name, _skip_ws(text, i + 1)


class JsonFrameSplitter:
    """The state machine that cuts frames out of an MPtrj document fed to it block by block.

    Levels: ``start`` (before the top-level ``{``), ``top`` (between materials), ``material``
    (between the frames of one material), ``frame`` (inside a frame) and ``end`` (after the top-level
    ``}``).  :meth:`feed` yields the frames (and scalar-frame skips) completed by a block;
    :meth:`finish` checks that the document was closed.  The buffer holds at most the unparsed gap and
    the one unfinished frame.
    """

    def __init__(self, path: str, stats: SplitStats | None = None) -> None:
        self.path = path
        self.stats = stats if stats is not None else SplitStats()
        self.scan = ScanState()
        self.gaps = _GapParser(path, self.where)
        self.buf = bytearray()
        self.buf_start = 0         # absolute offset of buf[0]
        self.cursor = 0            # absolute offset where the unparsed gap begins
        self.level = "start"
        self.material: str | None = None
        self.frame_key: str | None = None
        self.frame_start = -1
        self.n_in_top = 0
        self.n_in_material = 0
        self.index = 0

    def where(self) -> str:
        """Where the parser is, for error messages."""
        if self.material is None:
            return f"{self.index} complete frame(s) before it"
        frame = f", frame {self.frame_key!r}" if self.level == "frame" else ""
        return f"in material {self.material!r}{frame}; {self.index} frame(s) read before it"

    def first_block(self, block: bytes) -> bytes:
        """Check the first block and strip a UTF-8 byte-order mark from it."""
        if not block:
            raise MPtrjFormatError(f"{self.path}: empty file, expected a JSON object")
        if block.startswith(_BOM):
            self.buf_start = self.cursor = len(_BOM)
            return block[len(_BOM):]
        return block

    def feed(self, block: bytes) -> Iterator[RawFrame | Skip]:
        """Take the next block of the file; yield what it completed, in file order."""
        base = self.buf_start + len(self.buf)
        positions, depths = scan_block(block, self.scan, base, self.path)
        self.buf += block
        self.stats.bytes_read = base + len(block)
        for pos, depth in zip(positions.tolist(), depths.tolist()):
            if self.level == "frame":  # the only bracket event inside a frame is its own closing bracket
                yield self._close_frame(pos)
                continue
            char = self.buf[pos - self.buf_start]
            opening = char == _OPEN_BRACE or char == _OPEN_BRACKET
            gap = bytes(self.buf[self.cursor - self.buf_start:pos - self.buf_start])
            if self.level == "material":
                yield from self._in_material(gap, pos, opening)
            elif self.level == "top":
                self._in_top(gap, pos, opening, char, depth)
            elif self.level == "start":
                self._at_start(gap, pos, opening, char, depth)
            else:
                raise MPtrjFormatError(f"{self.path}: trailing data after the JSON object at byte {pos}")
        self._trim()

    def _close_frame(self, pos: int) -> RawFrame:
        data = bytes(self.buf[self.frame_start - self.buf_start:pos + 1 - self.buf_start])
        frame = RawFrame("json", self.index, self.frame_start, data, self.material, self.frame_key)
        self._count_frame()
        self.level, self.cursor = "material", pos + 1
        return frame

    def _count_frame(self) -> None:
        self.stats.frames_emitted += 1
        self.index += 1
        self.n_in_material += 1

    def _at_start(self, gap: bytes, pos: int, opening: bool, char: int, depth: int) -> None:
        if gap.strip(_WS) or not (opening and char == _OPEN_BRACE and depth == 1):
            raise MPtrjFormatError(f"{self.path}: not an MPtrj JSON file: expected '{{' at byte {self.cursor}")
        self.level, self.cursor = "top", pos + 1

    def _in_top(self, gap: bytes, pos: int, opening: bool, char: int, depth: int) -> None:
        key, members = self.gaps.parse(gap, self.cursor, self.n_in_top)
        if members:
            raise MPtrjFormatError(f"{self.path}: material {members[0][0]!r} is not a JSON object "
                                   f"(near byte {self.cursor})")
        if not opening:
            if key is not None or depth != 0:
                raise MPtrjFormatError(f"{self.path}: malformed JSON at byte {pos}")
            self.level, self.cursor = "end", pos + 1
            return
        if key is None or char != _OPEN_BRACE:
            raise MPtrjFormatError(f"{self.path}: malformed MPtrj JSON at byte {pos}: expected "
                                   f"'\"material_id\": {{'")
        self.material, self.n_in_material = key, 0
        self.n_in_top += 1
        self.stats.materials_read += 1
        self.level, self.cursor = "material", pos + 1

    def _in_material(self, gap: bytes, pos: int, opening: bool) -> list[Skip]:
        """Frames with a scalar value before this bracket become skips; then a frame opens or the material closes."""
        key, members = self.gaps.parse(gap, self.cursor, self.n_in_material)
        skips = []
        for name, value in members:
            skips.append(Skip(self.index, self.material or "", name,
                              f"frame is not a JSON object (got {type(value).__name__})", self.cursor))
            self._count_frame()
        if opening:
            if key is None:
                raise MPtrjFormatError(f"{self.path}: malformed JSON at byte {pos}: a frame needs a key "
                                       f"({self.where()})")
            self.frame_key, self.frame_start, self.level = key, pos, "frame"
            return skips
        if key is not None:
            raise MPtrjFormatError(f"{self.path}: malformed JSON at byte {pos}: key {key!r} has no value "
                                   f"({self.where()})")
        self.level, self.cursor, self.material = "top", pos + 1, None
        return skips

    def _trim(self) -> None:
        """Drop what is no longer needed; keep an unfinished frame and the unparsed gap."""
        in_frame = self.level == "frame"
        if in_frame and self.stats.bytes_read - self.frame_start > MAX_FRAME_BYTES:
            raise MPtrjFormatError(f"{self.path}: frame {self.frame_key!r} starting at byte {self.frame_start} is "
                                   f"over {MAX_FRAME_BYTES} bytes; the file is probably corrupt")
        keep_from = self.frame_start if in_frame else self.cursor
        if keep_from > self.buf_start:
            del self.buf[:keep_from - self.buf_start]
            self.buf_start = keep_from

    def finish(self) -> None:
        """After the last block: raise MPtrjFormatError unless the document was closed, with nothing after it."""
        end = self.buf_start + len(self.buf)
        if self.level == "start":
            raise MPtrjFormatError(f"{self.path}: not an MPtrj JSON file: no top-level object in its {end} bytes")
        if self.level == "frame":
            raise MPtrjFormatError(
                f"{self.path}: truncated JSON: the file ends at byte {end} inside frame {self.frame_key!r} of "
                f"material {self.material!r}, which starts at byte {self.frame_start} (frame #{self.index}; "
                f"{self.index} complete frame(s) read before it)")
        if self.level != "end":
            raise MPtrjFormatError(f"{self.path}: truncated JSON: the file ends at byte {end} before the document "
                                   f"is closed ({self.where()})")
        if bytes(self.buf[self.cursor - self.buf_start:]).strip(_WS):
            raise MPtrjFormatError(f"{self.path}: trailing data after the JSON object at byte {self.cursor}")


def iter_json_raw_frames(path: str | os.PathLike, *, block_size: int = DEFAULT_BLOCK_SIZE,
                         stats: SplitStats | None = None) -> Iterator[RawFrame | Skip]:
    """Stream the frames of an MPtrj-format JSON file as undecoded text, never holding the whole file.

    Yields :class:`RawFrame` for every frame whose value is an object or array (the worker decodes it)
    and :class:`Skip` for a frame whose value is a scalar.  Raises :class:`MPtrjFormatError` for a
    truncated or malformed document, naming the file, the byte offset and the frame.
    """
    splitter = JsonFrameSplitter(str(path), stats)
    with open_binary(path) as fh:
        block = splitter.first_block(fh.read(max(block_size, len(_BOM))))
        while block:
            yield from splitter.feed(block)
            block = fh.read(block_size)
    splitter.finish()
