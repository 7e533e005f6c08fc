"""Count how often a training set (MPtrj, or any extxyz file) shows the atomic environments we benchmark.

Why: Christiansen & Hammer (arXiv:2502.21179) trace the errors of universal potentials on S adatoms
on coinage-metal surfaces to what the training set, MPtrj, contains: few S atoms bonded to Cu/Ag/Au
and many S–S environments.  This module counts such environments in a training file so that the
claim can be checked on the file itself and put next to each backbone's raw error on our systems.

Pointing it at MPtrj
--------------------
The file is not shipped with uipbench.  The CHGNet authors publish it on figshare as
``MPtrj_2022.9_full.json`` ("Materials Project Trajectory (MPtrj) Dataset",
https://figshare.com/articles/dataset/Materials_Project_Trjectory_MPtrj_Dataset/23713842).
Download it once, anywhere with room for it (several GB), and pass its path::

    uipbench mptrj-envs /data/MPtrj_2022.9_full.json --center S --neighbors Cu Ag Au S \
        --cutoff 3.0 --workers 2 --output reports/mptrj-envs/mptrj

A gzipped copy (``MPtrj_2022.9_full.json.gz``) is read as it is.  The same command counts our own
datasets or an extxyz export of MPtrj (``--format extxyz``, or a ``.extxyz``/``.xyz`` suffix)::

    uipbench mptrj-envs datasets/cu-s/structures.extxyz --output reports/mptrj-envs/cu-s

No literature counts are built in: every number this module reports is counted from the file it is
given.  (For orientation only, Matbench Discovery's MPtrj page lists 1,580,395 structures in the file;
the metadata's ``frames_read`` is what this file actually held.)

Input formats
-------------
* MPtrj JSON: ``{mp_id: {frame_id: {"structure": <pymatgen Structure.as_dict()>, ...}}}``.  The file
  is never loaded whole: the main process reads blocks of bytes, finds frame boundaries with a
  vectorised, string-aware bracket scan, and hands the raw text of each frame to the workers, which
  decode it.  Memory is bounded by the block size, the largest single frame and the bounded queue of
  chunks in flight, not by the file size.  The material id is the top-level key.
* extxyz: split into frames by their atom-count lines in the main process, parsed by ASE in the
  workers.  The material id comes from the first of ``material_keys`` (default ``mp_id``,
  ``material_id``, ``mpid``) present in the frame's info; frames with none get the id
  ``<formula>#<frame index>`` (so per-material counts treat each such frame as its own material);
  how many frames fell back is reported in the metadata and the summary.

What is counted
---------------
For every atom of a centre element (``--center``, e.g. S) the neighbours are all atoms within
``cutoff`` (distance strictly below it, as in ``ase.neighborlist.neighbor_list``), periodic images
included; an atom's own periodic image counts as a neighbour, the atom itself does not.  "Metals" are
the ``--neighbors`` elements other than the centre.  Each centre atom gets exactly one *exclusive*
category:

=====================  ==========  ============================================================
category               neighbor    the centre atom's neighbours within the cutoff
=====================  ==========  ============================================================
``isolated``           ``-``       none
``metal_only``         M           only atoms of one metal M (e.g. S bonded to Cu only)
``metal_and_center``   M           atoms of one metal M and at least one centre atom, nothing else
``center_only``        centre      only centre atoms (e.g. S–S in S8 or polysulfides)
``other``              ``-``       anything else (other elements, several metals, ...)
=====================  ==========  ============================================================

and any number of *inclusive* categories: ``any_metal``/M (at least one M neighbour, whatever else)
and ``any_center``/centre (at least one centre neighbour).  ``all``/``-`` counts every centre atom.
The exclusive categories add up to ``all``.

Every (centre, category, neighbour) is counted in three units: ``atoms`` (centre atoms, summed over
frames), ``frames`` (frames with at least one such atom) and ``materials`` (distinct material ids with
at least one such atom in any frame).

Memory and parallelism
----------------------
The main process splits the file; ``workers`` spawned processes decode and count chunks of
``chunk_size`` frames, with at most ``2 * workers`` chunks in flight, so memory does not grow with the
number of frames.  What does grow is the per-material dedup record: one entry (id and a shared key
set, ~100 bytes) per material that contains a centre atom – for an extxyz input also one id per
material seen, to report how many materials the file holds.

Bad input
---------
A truncated or malformed file raises :class:`MPtrjFormatError` naming the file, the byte offset and
the frame.  A frame that cannot be counted (missing or malformed fields, an unknown element, a
disordered site, a degenerate cell, a field from ``require`` missing) is skipped, counted by reason,
warned about (:class:`MPtrjSkipWarning`, once per reason) and listed in the metadata – never counted
silently wrong.  Unknown element symbols in ``centers``/``neighbors`` raise ``ValueError``.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import multiprocessing
import os
import re
import time
import warnings
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from . import __version__ as UIPBENCH_VERSION

__all__ = [
    "COUNTER_VERSION", "DEFAULT_CUTOFF", "DEFAULT_MATERIAL_KEYS", "EXCLUSIVE_CATEGORIES",
    "INCLUSIVE_CATEGORIES", "UNITS", "NO_NEIGHBOR", "CountSpec", "Frame", "RawFrame", "Skip", "Tally",
    "RunMetadata", "CountResult", "MPtrjFormatError", "MPtrjSkipWarning", "validate_element",
    "detect_format", "iter_json_raw_frames", "iter_extxyz_raw_frames", "frame_from_mptrj_dict",
    "frame_from_atoms", "decode_raw_frame", "center_neighbor_elements", "classify_environment",
    "count_frame", "count_frames", "count_chunk", "tally_to_table", "count_environments",
    "write_outputs", "plot_counts", "relate_to_errors", "plot_relation", "format_summary",
]

COUNTER_VERSION = "1"
DEFAULT_CUTOFF = 3.0
DEFAULT_MATERIAL_KEYS: tuple[str, ...] = ("mp_id", "material_id", "mpid")
DEFAULT_FRAME_KEYS: tuple[str, ...] = ("frame_id", "structure_id", "plan_id")
EXCLUSIVE_CATEGORIES: tuple[str, ...] = ("isolated", "metal_only", "metal_and_center", "center_only", "other")
INCLUSIVE_CATEGORIES: tuple[str, ...] = ("any_metal", "any_center", "all")
UNITS: tuple[str, ...] = ("atoms", "frames", "materials")
NO_NEIGHBOR = "-"
SKIP_EXAMPLES_PER_REASON = 5
DEFAULT_BLOCK_SIZE = 1 << 22          # bytes read per step by the JSON splitter
DEFAULT_CHUNK_SIZE = 256              # frames per task handed to a worker
MAX_FRAME_BYTES = 1 << 28             # a single frame larger than this is treated as corruption

Key = tuple[str, str, str]            # (centre, category, neighbour)


class MPtrjFormatError(ValueError):
    """The input file is truncated or malformed; the message names the file, byte offset and frame."""


class MPtrjSkipWarning(UserWarning):
    """A frame was skipped (and counted as skipped) because it could not be counted."""


# --------------------------------------------------------------------------- records


def validate_element(symbol: str, what: str = "element") -> str:
    """Return ``symbol`` if it is a chemical element symbol, else raise ``ValueError`` saying so."""
    if isinstance(symbol, str) and symbol in atomic_numbers and symbol != "X":
        return symbol
    hint = ""
    if isinstance(symbol, str) and symbol.capitalize() in atomic_numbers and symbol.capitalize() != "X":
        hint = f" (did you mean {symbol.capitalize()!r}?)"
    raise ValueError(f"unknown element symbol {symbol!r} in {what}{hint}")


@dataclass(frozen=True)
class CountSpec:
    """What to count: centre elements, neighbour elements of interest and the cutoff (Å)."""

    centers: tuple[str, ...] = ("S",)
    neighbors: tuple[str, ...] = ("Cu", "Ag", "Au", "S")
    cutoff: float = DEFAULT_CUTOFF
    material_keys: tuple[str, ...] = DEFAULT_MATERIAL_KEYS
    require: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "centers", tuple(dict.fromkeys(self.centers)))
        object.__setattr__(self, "neighbors", tuple(dict.fromkeys(self.neighbors)))
        object.__setattr__(self, "material_keys", tuple(self.material_keys))
        object.__setattr__(self, "require", tuple(self.require))
        if not self.centers:
            raise ValueError("at least one centre element is needed (--center)")
        for symbol in self.centers:
            validate_element(symbol, "--center")
        for symbol in self.neighbors:
            validate_element(symbol, "--neighbors")
        if not (isinstance(self.cutoff, (int, float)) and math.isfinite(self.cutoff) and self.cutoff > 0):
            raise ValueError(f"cutoff must be a positive number of Å, got {self.cutoff!r}")

    def metals(self, center: str) -> tuple[str, ...]:
        """The neighbour elements that count as "metal" for ``center``: all but the centre itself."""
        return tuple(e for e in self.neighbors if e != center)

    def expected_keys(self) -> list[Key]:
        """Every (centre, category, neighbour) the table lists, zero counts included, in table order."""
        keys: list[Key] = []
        for c in self.centers:
            metals = self.metals(c)
            keys.append((c, "all", NO_NEIGHBOR))
            keys.append((c, "isolated", NO_NEIGHBOR))
            keys.extend((c, "metal_only", m) for m in metals)
            keys.extend((c, "metal_and_center", m) for m in metals)
            keys.append((c, "center_only", c))
            keys.append((c, "other", NO_NEIGHBOR))
            keys.extend((c, "any_metal", m) for m in metals)
            keys.append((c, "any_center", c))
        return keys


@dataclass(frozen=True)
class Frame:
    """One structure, reduced to what the counter needs (picklable, small)."""

    material_id: str
    frame_id: str
    index: int
    numbers: np.ndarray       # (n,) atomic numbers
    positions: np.ndarray     # (n, 3) Å, Cartesian
    cell: np.ndarray          # (3, 3) Å, lattice vectors as rows
    pbc: np.ndarray           # (3,) bool
    material_fallback: bool = False


@dataclass(frozen=True)
class RawFrame:
    """The undecoded text of one frame and where it sits in its file."""

    kind: str                 # "json" or "extxyz"
    index: int                # running frame number in the file (0-based)
    offset: int               # byte offset of the frame's first byte
    data: bytes
    material_id: str | None = None   # JSON: the top-level key; extxyz: read from the frame
    frame_id: str | None = None
    unterminated: bool = False       # extxyz: last frame of a file that ends without a newline


@dataclass(frozen=True)
class Skip:
    """A frame that was not counted, and why."""

    index: int
    material_id: str
    frame_id: str
    reason: str
    offset: int = -1


@dataclass
class Tally:
    """Mergeable counts: what a worker returns for a chunk and what the run accumulates.

    Per-material dedup keeps, for each material with a centre atom, the set of keys it has been counted
    under (one shared frozenset per distinct key set), so memory grows with the number of such
    materials – about 100 bytes each – and not with the number of frames.
    """

    atoms: Counter = field(default_factory=Counter)            # Key -> centre atoms
    frames: Counter = field(default_factory=Counter)           # Key -> frames
    materials: Counter = field(default_factory=Counter)        # Key -> distinct materials
    material_keys: dict = field(default_factory=dict)          # material id -> frozenset of Keys
    frames_read: int = 0
    frames_counted: int = 0
    skipped: Counter = field(default_factory=Counter)          # reason -> frames
    skip_examples: list = field(default_factory=list)          # Skip, at most a few per reason
    material_fallbacks: int = 0
    material_ids: set = field(default_factory=set)             # extxyz only: every material id seen
    _keysets: dict = field(default_factory=dict, repr=False)   # canonical frozensets

    def add_material(self, material_id: str, keys: frozenset) -> None:
        """Count ``material_id`` once under each key of ``keys`` it was not yet counted under."""
        old = self.material_keys.get(material_id)
        new = keys if old is None else keys - old
        if not new:
            return
        self.materials.update(new)
        merged = keys if old is None else old | keys
        self.material_keys[material_id] = self._keysets.setdefault(merged, merged)

    def add_skip(self, skip: Skip) -> None:
        self.frames_read += 1
        if sum(1 for s in self.skip_examples if s.reason == skip.reason) < SKIP_EXAMPLES_PER_REASON:
            self.skip_examples.append(skip)
        self.skipped[skip.reason] += 1

    def merge(self, other: "Tally") -> list[Skip]:
        """Add ``other`` into this tally; return one skip example for each reason that is new here."""
        first_new: dict[str, Skip] = {}
        for s in other.skip_examples:
            if s.reason not in self.skipped:
                first_new.setdefault(s.reason, s)
        self.atoms.update(other.atoms)
        self.frames.update(other.frames)
        for material_id, keys in other.material_keys.items():
            self.add_material(material_id, keys)
        self.frames_read += other.frames_read
        self.frames_counted += other.frames_counted
        for s in other.skip_examples:
            if sum(1 for t in self.skip_examples if t.reason == s.reason) < SKIP_EXAMPLES_PER_REASON:
                self.skip_examples.append(s)
        self.skipped.update(other.skipped)
        self.material_fallbacks += other.material_fallbacks
        self.material_ids |= other.material_ids
        return list(first_new.values())


@dataclass
class RunMetadata:
    """The JSON record written next to the table."""

    input_path: str
    input_bytes: int
    format: str
    centers: list[str]
    neighbors: list[str]
    cutoff_angstrom: float
    frames_read: int
    frames_counted: int
    frames_skipped: int
    skipped_by_reason: dict[str, int]
    skip_examples: list[dict[str, Any]]
    materials_read: int | None
    material_id_source: str
    material_id_fallbacks: int
    require: list[str]
    workers: int
    chunk_size: int
    elapsed_s: float
    frames_per_s: float
    uipbench_version: str = UIPBENCH_VERSION
    counter_version: str = COUNTER_VERSION
    neighbor_rule: str = ("distance < cutoff, periodic images included (own image counts, the atom "
                          "itself does not), as ase.neighborlist.neighbor_list")
    categories: dict[str, str] = field(default_factory=lambda: {
        "all": "every centre atom",
        "isolated": "no neighbour within the cutoff",
        "metal_only": "neighbours are all of one metal M (a --neighbors element other than the centre)",
        "metal_and_center": "neighbours are one metal M plus at least one centre atom, nothing else",
        "center_only": "neighbours are all centre atoms",
        "other": "any other neighbour set (other elements, several metals)",
        "any_metal": "at least one M neighbour (inclusive)",
        "any_center": "at least one centre-element neighbour (inclusive)",
    })
    units: dict[str, str] = field(default_factory=lambda: {
        "atoms": "centre atoms in the category, summed over frames",
        "frames": "frames with at least one centre atom in the category",
        "materials": "distinct material ids with at least one centre atom in the category in any frame",
    })


@dataclass
class CountResult:
    table: Any                # pandas.DataFrame: center, category, neighbor, unit, count
    metadata: RunMetadata
    tally: Tally


# --------------------------------------------------------------------------- format detection, opening


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
    with _open_binary(path) as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return "json"
    if head[:1].isdigit():
        return "extxyz"
    raise ValueError(f"{path}: cannot tell the format (neither JSON nor extxyz); pass --format")


def _is_gzip(path: str | os.PathLike) -> bool:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a file")
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def _open_binary(path: str | os.PathLike) -> IO[bytes]:
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


# --------------------------------------------------------------------------- JSON splitting

_DELTA = np.zeros(256, dtype=np.int8)
_DELTA[ord("{")] = _DELTA[ord("[")] = 1
_DELTA[ord("}")] = _DELTA[ord("]")] = -1
_WS = b" \t\r\n"
_KEY_GAP = re.compile(rb'[ \t\r\n]*(,)?[ \t\r\n]*"((?:[^"\\]|\\.)*)"[ \t\r\n]*:[ \t\r\n]*', re.S)


@dataclass
class _ScanState:
    depth: int = 0
    in_string: int = 0
    backslash_run: int = 0


def _scan_block(block: bytes, state: _ScanState, base: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Structural brackets of ``block`` that open/close the top, material or frame level.

    Returns absolute positions and the depth after each bracket; ``state`` carries the nesting depth,
    whether the block ends inside a string, and a trailing backslash run, to the next block.
    """
    a = np.frombuffer(block, dtype=np.uint8)
    quotes = np.flatnonzero(a == 0x22)
    if state.backslash_run or b"\\" in block:
        # a quote is escaped when an odd run of backslashes precedes it (the run may start in an earlier
        # block); backslashes are rare in MPtrj, so walk back only from quotes that follow one
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


@dataclass
class SplitStats:
    """Filled in by the splitters while they run."""

    materials_read: int = 0
    bytes_read: int = 0
    frames_emitted: int = 0


def iter_json_raw_frames(path: str | os.PathLike, *, block_size: int = DEFAULT_BLOCK_SIZE,
                         stats: SplitStats | None = None) -> Iterator[RawFrame | Skip]:
    """Stream the frames of an MPtrj-format JSON file as undecoded text, never holding the whole file.

    Yields :class:`RawFrame` for every frame whose value is an object or array (the worker decodes it)
    and :class:`Skip` for a frame whose value is a scalar.  Raises :class:`MPtrjFormatError` for a
    truncated or malformed document, naming the file, the byte offset and the frame.
    """
    path_s = str(path)
    stats = stats if stats is not None else SplitStats()
    state = _ScanState()
    buf = bytearray()
    buf_start = 0              # absolute offset of buf[0]
    cursor = 0                 # absolute offset where the unparsed gap begins
    level = "start"            # start | top | material | frame | end
    material: str | None = None
    frame_key: str | None = None
    frame_start = -1
    n_in_top = 0
    n_in_material = 0
    index = 0
    first_block = True

    def where() -> str:
        ctx = f"{index} complete frame(s) before it"
        if material is not None:
            ctx = f"in material {material!r}" + (f", frame {frame_key!r}" if level == "frame" else "") + \
                  f"; {index} frame(s) read before it"
        return ctx

    def gap_bytes(end: int) -> bytes:
        return bytes(buf[cursor - buf_start:end - buf_start])

    def parse_gap(gap: bytes, gap_offset: int, n_before: int) -> tuple[str | None, list[tuple[str, Any]]]:
        """Parse ``[,] "key": [scalar, "key": ...]`` in a gap; return a pending key and scalar members."""
        if not gap.strip(_WS):
            return None, []
        m = _KEY_GAP.fullmatch(gap)
        if m is not None:
            if bool(m.group(1)) != (n_before > 0):
                raise MPtrjFormatError(f"{path_s}: malformed JSON: "
                                       f"{'missing' if n_before else 'unexpected'} comma near byte {gap_offset}")
            return _decode_key(m.group(2), path_s, gap_offset), []
        # slow path: members with scalar values, e.g. "frame": null
        try:
            text = gap.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MPtrjFormatError(f"{path_s}: invalid UTF-8 near byte {gap_offset + exc.start}") from None
        decoder = json.JSONDecoder()
        i, key, members, count = 0, None, [], n_before
        ws = " \t\r\n"
        while True:
            while i < len(text) and text[i] in ws:
                i += 1
            if i >= len(text):
                break
            if key is not None or (count > 0 and text[i] != ","):
                raise MPtrjFormatError(f"{path_s}: malformed JSON near byte {gap_offset + i} ({where()})")
            if count > 0:
                i += 1
                while i < len(text) and text[i] in ws:
                    i += 1
            if i >= len(text) or text[i] != '"':
                raise MPtrjFormatError(f"{path_s}: malformed JSON: expected a key near byte {gap_offset + i} "
                                       f"({where()})")
            try:
                name, i = json.decoder.scanstring(text, i + 1)
            except json.JSONDecodeError as exc:
                raise MPtrjFormatError(f"{path_s}: malformed JSON key near byte {gap_offset + i}: {exc.msg}") \
                    from None
            while i < len(text) and text[i] in ws:
                i += 1
            if i >= len(text) or text[i] != ":":
                raise MPtrjFormatError(f"{path_s}: malformed JSON: expected ':' after key {name!r} near byte "
                                       f"{gap_offset + i}")
            i += 1
            while i < len(text) and text[i] in ws:
                i += 1
            if i >= len(text):
                key = name
                break
            try:
                value, i = decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise MPtrjFormatError(f"{path_s}: malformed JSON value of {name!r} near byte "
                                       f"{gap_offset + exc.pos}: {exc.msg}") from None
            members.append((name, value))
            count += 1
        return key, members

    with _open_binary(path) as fh:
        while True:
            block = fh.read(max(block_size, 3) if first_block else block_size)
            if first_block:
                if not block:
                    raise MPtrjFormatError(f"{path_s}: empty file, expected a JSON object")
                if block.startswith(b"\xef\xbb\xbf"):
                    block = block[3:]
                    buf_start = cursor = 3
                first_block = False
            if not block:
                break
            base = buf_start + len(buf)
            positions, depths = _scan_block(block, state, base, path_s)
            buf += block
            stats.bytes_read = base + len(block)
            for pos, depth in zip(positions.tolist(), depths.tolist()):
                char = buf[pos - buf_start]
                opening = char in (0x7B, 0x5B)
                if level == "frame":
                    # the only bracket event inside a frame is its own closing bracket
                    data = bytes(buf[frame_start - buf_start:pos + 1 - buf_start])
                    yield RawFrame("json", index, frame_start, data, material, frame_key)
                    stats.frames_emitted += 1
                    index += 1
                    n_in_material += 1
                    level, cursor = "material", pos + 1
                    continue
                gap = gap_bytes(pos)
                if level == "start":
                    if gap.strip(_WS) or not (opening and char == 0x7B and depth == 1):
                        raise MPtrjFormatError(f"{path_s}: not an MPtrj JSON file: expected '{{' at byte {cursor}")
                    level, cursor = "top", pos + 1
                elif level == "top":
                    key, members = parse_gap(gap, cursor, n_in_top)
                    if members:
                        raise MPtrjFormatError(f"{path_s}: material {members[0][0]!r} is not a JSON object "
                                               f"(near byte {cursor})")
                    if opening:
                        if key is None or char != 0x7B:
                            raise MPtrjFormatError(f"{path_s}: malformed MPtrj JSON at byte {pos}: expected "
                                                   f"'\"material_id\": {{'")
                        material, n_in_material, n_in_top = key, 0, n_in_top + 1
                        stats.materials_read += 1
                        level, cursor = "material", pos + 1
                    else:
                        if key is not None or depth != 0:
                            raise MPtrjFormatError(f"{path_s}: malformed JSON at byte {pos}")
                        level, cursor = "end", pos + 1
                elif level == "material":
                    key, members = parse_gap(gap, cursor, n_in_material)
                    for name, value in members:
                        yield Skip(index, material or "", name,
                                   f"frame is not a JSON object (got {type(value).__name__})", cursor)
                        stats.frames_emitted += 1
                        index += 1
                        n_in_material += 1
                    if opening:
                        if key is None:
                            raise MPtrjFormatError(f"{path_s}: malformed JSON at byte {pos}: a frame needs a key "
                                                   f"({where()})")
                        frame_key, frame_start = key, pos
                        level = "frame"
                    else:
                        if key is not None:
                            raise MPtrjFormatError(f"{path_s}: malformed JSON at byte {pos}: key {key!r} "
                                                   f"has no value ({where()})")
                        level, cursor, material = "top", pos + 1, None
                else:  # end
                    raise MPtrjFormatError(f"{path_s}: trailing data after the JSON object at byte {pos}")
            # drop what is no longer needed; keep an unfinished frame and the unparsed gap
            keep_from = frame_start if level == "frame" else cursor
            if level == "frame" and stats.bytes_read - frame_start > MAX_FRAME_BYTES:
                raise MPtrjFormatError(f"{path_s}: frame {frame_key!r} starting at byte {frame_start} is over "
                                       f"{MAX_FRAME_BYTES} bytes; the file is probably corrupt")
            if keep_from > buf_start:
                del buf[:keep_from - buf_start]
                buf_start = keep_from
    end = buf_start + len(buf)
    if level == "start":
        raise MPtrjFormatError(f"{path_s}: not an MPtrj JSON file: no top-level object in its {end} bytes")
    if level != "end":
        if level == "frame":
            raise MPtrjFormatError(
                f"{path_s}: truncated JSON: the file ends at byte {end} inside frame {frame_key!r} of material "
                f"{material!r}, which starts at byte {frame_start} (frame #{index}; {index} complete frame(s) "
                f"read before it)")
        raise MPtrjFormatError(f"{path_s}: truncated JSON: the file ends at byte {end} before the document is "
                               f"closed ({where()})")
    if bytes(buf[cursor - buf_start:]).strip(_WS):
        raise MPtrjFormatError(f"{path_s}: trailing data after the JSON object at byte {cursor}")


# --------------------------------------------------------------------------- extxyz splitting


def iter_extxyz_raw_frames(path: str | os.PathLike, *, stats: SplitStats | None = None) -> Iterator[RawFrame]:
    """Stream the frames of an extxyz file as undecoded text (atom-count line, comment, atom lines)."""
    path_s = str(path)
    stats = stats if stats is not None else SplitStats()
    offset = 0
    index = 0
    with _open_binary(path) as fh:
        while True:
            line = fh.readline()
            if not line:
                break
            if not line.strip():
                offset += len(line)
                continue
            try:
                natoms = int(line.strip())
                if natoms < 0:
                    raise ValueError
            except ValueError:
                raise MPtrjFormatError(f"{path_s}: malformed extxyz at byte {offset} (frame #{index}): expected an "
                                       f"atom-count line, got {line[:60]!r}") from None
            lines = [line]
            for _ in range(natoms + 1):
                nxt = fh.readline()
                if not nxt:
                    raise MPtrjFormatError(
                        f"{path_s}: truncated extxyz: frame #{index} starting at byte {offset} declares {natoms} "
                        f"atoms but the file ends after {max(0, len(lines) - 2)} of them")
                lines.append(nxt)
            data = b"".join(lines)
            unterminated = not data.endswith(b"\n")
            yield RawFrame("extxyz", index, offset, data, unterminated=unterminated)
            offset += len(data)
            index += 1
            stats.bytes_read = offset
            stats.frames_emitted = index


# --------------------------------------------------------------------------- decoding frames

_SYMBOL_TO_Z = {s: z for z, s in enumerate(chemical_symbols) if z > 0}


def _diagnose_structure(obj: Mapping) -> str:
    """The first missing or malformed field of an MPtrj frame, as a skip reason."""
    st = obj.get("structure")
    if not isinstance(st, Mapping):
        return "missing field 'structure'" if st is None else "malformed field 'structure'"
    lat = st.get("lattice")
    if not isinstance(lat, Mapping) or "matrix" not in lat:
        return "missing field 'structure.lattice.matrix'"
    sites = st.get("sites")
    if not isinstance(sites, list):
        return "missing field 'structure.sites'"
    for site in sites:
        if not isinstance(site, Mapping):
            return "malformed field 'structure.sites[*]'"
        species = site.get("species")
        if not isinstance(species, list) or not species:
            return "missing field 'structure.sites[*].species'"
        if not isinstance(species[0], Mapping) or "element" not in species[0]:
            return "missing field 'structure.sites[*].species[*].element'"
        if "xyz" not in site and "abc" not in site:
            return "missing field 'structure.sites[*].xyz' (and no 'abc')"
    return "malformed structure"


def frame_from_mptrj_dict(material_id: str, frame_id: str, index: int, obj: Any,
                          require: Sequence[str] = (), offset: int = -1) -> Frame | Skip:
    """Turn one MPtrj frame (``{"structure": Structure.as_dict(), ...}``) into a :class:`Frame` or a Skip."""
    def skip(reason: str) -> Skip:
        return Skip(index, material_id, frame_id, reason, offset)

    if not isinstance(obj, Mapping):
        return skip(f"frame is not a JSON object (got {type(obj).__name__})")
    for name in require:
        if name not in obj:
            return skip(f"missing required field {name!r}")
    try:
        st = obj["structure"]
        matrix = st["lattice"]["matrix"]
        pbc_raw = st["lattice"].get("pbc", (True, True, True))
        sites = st["sites"]
        elements = []
        for site in sites:
            species = site["species"]
            if len(species) != 1:
                return skip(f"disordered site ({len(species)} species on one site)")
            elements.append(species[0]["element"])
        if sites and all("xyz" in s for s in sites):
            positions = np.asarray([s["xyz"] for s in sites], dtype=np.float64)
            cart = True
        else:
            positions = np.asarray([s["abc"] for s in sites], dtype=np.float64)
            cart = False
        cell = np.asarray(matrix, dtype=np.float64)
    except (KeyError, TypeError, IndexError, AttributeError):
        return skip(_diagnose_structure(obj))
    except ValueError:
        return skip("malformed coordinates or lattice (not numbers of the right shape)")
    if not elements:
        return skip("structure has no sites")
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        return skip("malformed field 'structure.lattice.matrix' (not a finite 3x3 matrix)")
    if positions.shape != (len(elements), 3) or not np.all(np.isfinite(positions)):
        return skip("malformed site coordinates (not finite 3-vectors)")
    if not cart:
        positions = positions @ cell
    numbers = np.empty(len(elements), dtype=np.int64)
    for i, el in enumerate(elements):
        z = _SYMBOL_TO_Z.get(el) if isinstance(el, str) else None
        if z is None:
            return skip(f"unknown element {el!r}")
        numbers[i] = z
    try:
        pbc = np.array([bool(p) for p in pbc_raw], dtype=bool)
        if pbc.shape != (3,):
            raise ValueError
    except (TypeError, ValueError):
        return skip("malformed field 'structure.lattice.pbc'")
    return Frame(material_id, frame_id, index, numbers, positions, cell, pbc)


def frame_from_atoms(atoms: Any, index: int, material_keys: Sequence[str] = DEFAULT_MATERIAL_KEYS,
                     require: Sequence[str] = (), offset: int = -1) -> Frame | Skip:
    """Turn an ASE Atoms into a :class:`Frame` (material id from ``atoms.info``, see module doc)."""
    info = atoms.info
    frame_id = next((str(info[k]) for k in DEFAULT_FRAME_KEYS if k in info), str(index))
    material_id = next((str(info[k]) for k in material_keys if k in info), None)
    fallback = material_id is None
    if fallback:
        material_id = f"{atoms.get_chemical_formula()}#{index}"
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    for name in require:
        if name not in info and name not in atoms.arrays and name not in results:
            return Skip(index, material_id, frame_id, f"missing required field {name!r}", offset)
    numbers = np.asarray(atoms.numbers, dtype=np.int64)
    if not len(numbers):
        return Skip(index, material_id, frame_id, "structure has no atoms", offset)
    if np.any((numbers <= 0) | (numbers >= len(chemical_symbols))):
        return Skip(index, material_id, frame_id, "unknown element (atomic number 0 or out of range)", offset)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if not np.all(np.isfinite(positions)):
        return Skip(index, material_id, frame_id, "malformed site coordinates (not finite 3-vectors)", offset)
    return Frame(material_id, frame_id, index, numbers, positions, np.asarray(atoms.cell.array, dtype=np.float64),
                 np.asarray(atoms.pbc, dtype=bool), material_fallback=fallback)


_UNKNOWN_SYMBOL = re.compile(r"^'?([A-Za-z][A-Za-z0-9]*)'?$")


def decode_raw_frame(raw: RawFrame, spec: CountSpec, path: str = "") -> Frame | Skip:
    """Decode one raw frame; a corrupt JSON frame raises :class:`MPtrjFormatError` with its byte offset."""
    if raw.kind == "json":
        try:
            obj = json.loads(raw.data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            pos = getattr(exc, "pos", getattr(exc, "start", 0))
            msg = getattr(exc, "msg", str(exc))
            raise MPtrjFormatError(f"{path}: malformed JSON at byte {raw.offset + pos} in frame {raw.frame_id!r} of "
                                   f"material {raw.material_id!r} (frame #{raw.index}): {msg}") from None
        return frame_from_mptrj_dict(raw.material_id or "", raw.frame_id or str(raw.index), raw.index, obj,
                                     spec.require, raw.offset)
    from ase.io.extxyz import read_xyz

    try:
        atoms = next(read_xyz(io.StringIO(raw.data.decode("utf-8")), index=0))
    except KeyError as exc:
        symbol = str(exc.args[0]) if exc.args else "?"
        if _UNKNOWN_SYMBOL.match(symbol) and symbol not in atomic_numbers:
            return Skip(raw.index, "", str(raw.index), f"unknown element {symbol!r}", raw.offset)
        return _extxyz_failure(raw, path, exc)
    except Exception as exc:  # ase raises many types for malformed text
        return _extxyz_failure(raw, path, exc)
    return frame_from_atoms(atoms, raw.index, spec.material_keys, spec.require, raw.offset)


def _extxyz_failure(raw: RawFrame, path: str, exc: Exception) -> Skip:
    if raw.unterminated:
        raise MPtrjFormatError(f"{path}: truncated extxyz: the last frame (#{raw.index}, byte {raw.offset}) "
                               f"cannot be parsed and the file does not end with a newline "
                               f"({type(exc).__name__}: {exc})") from None
    return Skip(raw.index, "", str(raw.index), f"unparseable extxyz frame ({type(exc).__name__})", raw.offset)


# --------------------------------------------------------------------------- neighbours and categories

_PAIR_BUDGET = 500_000     # centre x atom x image triples evaluated at once


def center_neighbor_elements(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                             center_z: int, cutoff: float) -> list[np.ndarray]:
    """For each atom of element ``center_z`` (in order), the atomic numbers of its neighbours.

    Neighbours are atoms at distance < ``cutoff`` over all periodic images along periodic axes; an
    atom's own image counts, the atom itself (zero shift) does not – the rule of ASE's neighbor_list.
    Raises ``ValueError`` for a degenerate cell along a periodic axis.
    """
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    centres = np.flatnonzero(numbers == center_z)
    if not centres.size:
        return []
    n = len(numbers)
    if pbc.any():
        full = np.asarray(cell, dtype=np.float64)
        if not pbc.all():
            from ase.geometry import complete_cell

            full = complete_cell(full)
        if abs(np.linalg.det(full)) < 1e-9:
            raise ValueError("degenerate cell (zero volume along the periodic axes)")
        inv = np.linalg.inv(full)
        frac = positions @ inv
        if pbc.all():
            frac -= np.floor(frac)
        else:
            frac[:, pbc] -= np.floor(frac[:, pbc])
        wrapped = frac @ full
        reach = np.sqrt((inv * inv).sum(axis=0)) * cutoff     # cutoff / interplanar spacing
        nrep = np.where(pbc, np.ceil(reach), 0).astype(np.int64)
        if np.prod(2 * nrep + 1) > 100_000:
            raise ValueError("cell too thin for the cutoff (more than 100000 periodic images needed)")
        shifts = np.indices(2 * nrep + 1).reshape(3, -1).T - nrep
        translations = shifts @ full
        zero = (len(shifts) - 1) // 2                           # the middle of the grid is the zero shift
    else:
        wrapped = positions
        translations = np.zeros((1, 3))
        zero = 0
    images = (wrapped[None, :, :] + translations[:, None, :]).reshape(-1, 3)   # (M * n, 3); atom = slot % n
    cut2 = cutoff * cutoff
    out: list[np.ndarray] = []
    step = max(1, _PAIR_BUDGET // images.shape[0])
    for lo in range(0, centres.size, step):
        idx = centres[lo:lo + step]
        d = images[None, :, :] - wrapped[idx][:, None, :]
        close = np.einsum("ijk,ijk->ij", d, d) < cut2
        close[np.arange(idx.size), zero * n + idx] = False
        rows, slots = np.nonzero(close)
        neigh = numbers[slots % n]
        out.extend(np.split(neigh, np.searchsorted(rows, np.arange(1, idx.size))))
    return out


def classify_environment(neighbor_elements: Iterable[str], center: str,
                         metals: Sequence[str]) -> list[tuple[str, str]]:
    """The (category, neighbour) pairs of one centre atom: ``all``, one exclusive, and the inclusive ones."""
    present = set(neighbor_elements)
    keys: list[tuple[str, str]] = [("all", NO_NEIGHBOR)]
    others = present - {center}
    if not present:
        keys.append(("isolated", NO_NEIGHBOR))
    elif present == {center}:
        keys.append(("center_only", center))
    elif len(others) == 1 and next(iter(others)) in metals:
        metal = next(iter(others))
        keys.append(("metal_and_center", metal) if center in present else ("metal_only", metal))
    else:
        keys.append(("other", NO_NEIGHBOR))
    keys.extend(("any_metal", m) for m in metals if m in present)
    if center in present:
        keys.append(("any_center", center))
    return keys


def count_frame(frame: Frame, spec: CountSpec) -> Counter:
    """Centre atoms per (centre, category, neighbour) key in one frame."""
    counts: Counter = Counter()
    for center in spec.centers:
        z = atomic_numbers[center]
        if not np.any(frame.numbers == z):
            continue
        metals = spec.metals(center)
        seen: dict[frozenset, list[tuple[str, str]]] = {}
        for neigh in center_neighbor_elements(frame.numbers, frame.positions, frame.cell, frame.pbc, z,
                                              spec.cutoff):
            zs = frozenset(neigh.tolist())
            keys = seen.get(zs)
            if keys is None:
                keys = seen[zs] = classify_environment([chemical_symbols[x] for x in zs], center, metals)
            for category, neighbor in keys:
                counts[(center, category, neighbor)] += 1
    return counts


def _count_into(tally: Tally, item: Frame | Skip, spec: CountSpec) -> None:
    if isinstance(item, Skip):
        tally.add_skip(item)
        return
    try:
        counts = count_frame(item, spec)
    except ValueError as exc:
        tally.add_skip(Skip(item.index, item.material_id, item.frame_id, str(exc)))
        return
    tally.frames_read += 1
    tally.frames_counted += 1
    tally.material_fallbacks += int(item.material_fallback)
    tally.atoms.update(counts)
    tally.frames.update(counts.keys())
    if counts:
        tally.add_material(item.material_id, frozenset(counts))


def count_frames(frames: Iterable[Frame | Skip], spec: CountSpec) -> Tally:
    """Count decoded frames (serially, in this process)."""
    tally = Tally()
    for item in frames:
        _count_into(tally, item, spec)
    return tally


def count_chunk(chunk: Sequence[RawFrame | Skip], spec: CountSpec, path: str = "") -> Tally:
    """Decode and count a chunk of raw frames: the task each worker runs."""
    tally = Tally()
    for raw in chunk:
        if isinstance(raw, Skip):
            tally.add_skip(raw)
            continue
        item = decode_raw_frame(raw, spec, path)
        if raw.kind == "extxyz" and isinstance(item, Frame):
            tally.material_ids.add(item.material_id)
        _count_into(tally, item, spec)
    return tally


# --------------------------------------------------------------------------- running over a file


def _chunks(items: Iterator[RawFrame | Skip], size: int) -> Iterator[list[RawFrame | Skip]]:
    chunk: list[RawFrame | Skip] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _run_chunks(chunks: Iterator[list], spec: CountSpec, path: str, workers: int) -> Iterator[Tally]:
    """Count chunks serially, or on a process pool with at most ``2 * workers`` chunks in flight."""
    if workers <= 1:
        for chunk in chunks:
            yield count_chunk(chunk, spec, path)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    pending: deque[Future] = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(count_chunk, chunk, spec, path))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise RuntimeError(f"{path}: a worker process died ({exc}); workers are spawned, so the calling script "
                           f"needs an `if __name__ == '__main__':` guard and must not be read from stdin – "
                           f"or use workers=1") from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _warn_skip(path: str, skip: Skip) -> None:
    warnings.warn(f"{path}: skipped frame #{skip.index} (material {skip.material_id!r}, frame {skip.frame_id!r}): "
                  f"{skip.reason}; further frames skipped for this reason are counted and listed in the metadata",
                  MPtrjSkipWarning, stacklevel=3)


def count_environments(path: str | os.PathLike, spec: CountSpec | None = None, *, workers: int = 1,
                       fmt: str = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE,
                       block_size: int = DEFAULT_BLOCK_SIZE, progress: bool = False) -> CountResult:
    """Stream ``path`` (MPtrj JSON or extxyz) and count the centre environments of ``spec``.

    ``workers`` > 1 decodes and counts on a process pool (spawned, at most ``2 * workers`` chunks of
    ``chunk_size`` frames in flight); the result does not depend on ``workers`` or ``chunk_size``.
    Spawned workers re-import the calling script: guard it with ``if __name__ == "__main__":``.
    """
    spec = spec if spec is not None else CountSpec()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found" if not path.exists() else f"{path}: not a regular file")
    kind = detect_format(path, fmt)
    size = path.stat().st_size
    gz = _is_gzip(path)
    stats = SplitStats()
    raw = (iter_json_raw_frames(path, block_size=block_size, stats=stats) if kind == "json"
           else iter_extxyz_raw_frames(path, stats=stats))
    from tqdm import tqdm

    tally = Tally()
    started = time.perf_counter()
    total = None if gz else size   # a gzipped file's progress is in uncompressed bytes, total unknown
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"mptrj-envs {path.name}", disable=not progress,
              leave=False) as bar:
        for part in _run_chunks(_chunks(raw, chunk_size), spec, str(path), workers):
            for skip in tally.merge(part):
                _warn_skip(str(path), skip)
            done = stats.bytes_read if gz else min(size, stats.bytes_read)
            bar.update(max(0, done - bar.n))
            bar.set_postfix(frames=tally.frames_read, skipped=sum(tally.skipped.values()), refresh=False)
    elapsed = time.perf_counter() - started
    if stats.frames_emitted != tally.frames_read:  # every frame found must be counted or skipped
        raise RuntimeError(f"{path}: internal error: {stats.frames_emitted} frames found but {tally.frames_read} "
                           f"counted or skipped")
    metadata = RunMetadata(
        input_path=str(path.resolve()),
        input_bytes=size,
        format=kind,
        centers=list(spec.centers),
        neighbors=list(spec.neighbors),
        cutoff_angstrom=float(spec.cutoff),
        frames_read=tally.frames_read,
        frames_counted=tally.frames_counted,
        frames_skipped=int(sum(tally.skipped.values())),
        skipped_by_reason=dict(sorted(tally.skipped.items())),
        skip_examples=[asdict(s) for s in tally.skip_examples],
        materials_read=stats.materials_read if kind == "json" else len(tally.material_ids),
        material_id_source=("top-level JSON key" if kind == "json" else
                            f"extxyz info key, first of {list(spec.material_keys)}; fallback '<formula>#<frame index>'"),
        material_id_fallbacks=tally.material_fallbacks,
        require=list(spec.require),
        workers=workers,
        chunk_size=chunk_size,
        elapsed_s=round(elapsed, 3),
        frames_per_s=round(tally.frames_read / elapsed, 1) if elapsed > 0 else float("nan"),
    )
    return CountResult(tally_to_table(tally, spec), metadata, tally)


# --------------------------------------------------------------------------- table, outputs, summary


def tally_to_table(tally: Tally, spec: CountSpec):
    """Tidy table: one row per centre, category, neighbour and unit (zeros included)."""
    import pandas as pd

    keys = spec.expected_keys()
    extra = sorted(set(tally.atoms) - set(keys))
    rows = []
    for key in keys + extra:
        center, category, neighbor = key
        values = {"atoms": tally.atoms.get(key, 0), "frames": tally.frames.get(key, 0),
                  "materials": tally.materials.get(key, 0)}
        for unit in UNITS:
            rows.append({"center": center, "category": category, "neighbor": neighbor, "unit": unit,
                         "count": int(values[unit])})
    return pd.DataFrame(rows, columns=["center", "category", "neighbor", "unit", "count"])


def _have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def write_outputs(result: CountResult, out_dir: str | os.PathLike, stem: str = "mptrj_envs",
                  figure: bool = True) -> dict[str, Path]:
    """Write the table (CSV, and parquet when pyarrow is installed), the metadata JSON and the figure."""
    from ._atomic import write_atomic, write_json_atomic, write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    written["csv"] = out / f"{stem}.csv"
    write_text_atomic(written["csv"], result.table.to_csv(index=False))
    if _have_pyarrow():
        written["parquet"] = out / f"{stem}.parquet"
        write_atomic(written["parquet"], lambda fh: result.table.to_parquet(fh, index=False), mode="wb")
    if figure:
        for center in result.metadata.centers:
            paths = plot_counts(result.table, out / f"{stem}_{center}", center=center,
                                title=f"{Path(result.metadata.input_path).name}: {center} environments within "
                                      f"{result.metadata.cutoff_angstrom:g} Å")
            written[f"figure_{center}_png"], written[f"figure_{center}_svg"] = paths
    written["metadata"] = out / f"{stem}.meta.json"
    meta = asdict(result.metadata)
    meta["outputs"] = {k: str(v) for k, v in written.items()}
    meta["parquet"] = "written" if "parquet" in written else "skipped: pyarrow is not installed"
    write_json_atomic(written["metadata"], meta)
    return written


def format_summary(result: CountResult) -> str:
    """Human-readable summary: counts per category in the three units, then the skips."""
    meta = result.metadata
    table = result.table
    lines = [f"{meta.input_path} ({meta.format}, {meta.input_bytes} bytes): {meta.frames_read} frames read, "
             f"{meta.frames_counted} counted, {meta.frames_skipped} skipped; "
             f"{meta.materials_read} materials; cutoff {meta.cutoff_angstrom:g} Å; "
             f"{meta.elapsed_s:.1f} s ({meta.frames_per_s:g} frames/s, {meta.workers} worker(s))"]
    wide = table.pivot_table(index=["center", "category", "neighbor"], columns="unit", values="count",
                             sort=False).reset_index()
    lines.append(f"{'center':<7}{'category':<18}{'neighbor':<9}{'atoms':>12}{'frames':>12}{'materials':>12}")
    for row in wide.itertuples(index=False):
        lines.append(f"{row.center:<7}{row.category:<18}{row.neighbor:<9}{int(row.atoms):>12}{int(row.frames):>12}"
                     f"{int(row.materials):>12}")
    if meta.material_id_fallbacks:
        lines.append(f"note: {meta.material_id_fallbacks} frame(s) had no material id in their info "
                     f"({meta.material_id_source}); each counts as its own material")
    if meta.frames_skipped:
        lines.append(f"skipped {meta.frames_skipped} frame(s):")
        lines.extend(f"  {n:>10}  {reason}" for reason, n in meta.skipped_by_reason.items())
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures

_CATEGORY_COLORS = {
    "metal_only": "#1f77b4", "metal_and_center": "#9467bd", "any_metal": "#aec7e8",
    "center_only": "#d62728", "any_center": "#ff9896", "isolated": "#7f7f7f", "other": "#bcbd22",
}
_CATEGORY_LABELS = {
    "metal_only": "only M", "metal_and_center": "M + {c} only", "any_metal": "≥1 M",
    "center_only": "only {c}", "any_center": "≥1 {c}", "isolated": "none", "other": "other",
}


def _save_figure(fig: Any, stem: Path) -> tuple[Path, Path]:
    from ._atomic import write_atomic

    png, svg = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")
    write_atomic(png, lambda fh: fig.savefig(fh, format="png", dpi=150, bbox_inches="tight"), mode="wb")
    write_atomic(svg, lambda fh: fig.savefig(fh, format="svg", bbox_inches="tight"), mode="wb")
    return png, svg


def _plain_log_labels(axis: Any) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_counts(table: Any, stem: str | os.PathLike, center: str = "S", title: str | None = None
                ) -> tuple[Path, Path]:
    """Bar chart, log scale: counts per category for each neighbour element, one panel per unit."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sub = table[(table["center"] == center) & (table["category"] != "all")]
    order = [("metal_only", "any_metal", "metal_and_center"), ("center_only", "any_center"), ("isolated", "other")]
    metals = [n for n in dict.fromkeys(sub.loc[sub["category"] == "metal_only", "neighbor"])]
    groups: list[tuple[str, list[tuple[str, str]]]] = [(m, [(c, m) for c in order[0]]) for m in metals]
    groups.append((center, [(c, center) for c in order[1]]))
    groups.append(("none/other", [(c, NO_NEIGHBOR) for c in order[2]]))
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, len(UNITS), figsize=(4.2 * len(UNITS), 4.0), squeeze=False)
    for ax, unit in zip(axes[0], UNITS):
        values = sub[sub["unit"] == unit].set_index(["category", "neighbor"])["count"]
        x, ticks, labels = 0.0, [], []
        for name, members in groups:
            start = x
            for category, neighbor in members:
                v = int(values.get((category, neighbor), 0))
                if v > 0:
                    ax.bar(x, v, width=0.8, color=_CATEGORY_COLORS[category])
                ax.text(x, max(v, 1), f"{v:,}", ha="center", va="bottom", fontsize=6, rotation=90)
                x += 1
            ticks.append((start + x - 1) / 2)
            labels.append(name)
            x += 0.8
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)
        _plain_log_labels(ax.yaxis)
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels)
        ax.set_xlabel(f"neighbour element of {center} (M)")
        ax.set_ylabel(f"{unit} (log scale)")
        ax.set_title(f"counted in {unit}")
    shown = [c for _, members in groups for c, _ in members]
    handles = [Patch(color=_CATEGORY_COLORS[c], label=_CATEGORY_LABELS[c].format(c=center))
               for c in dict.fromkeys(shown)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.06))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return _save_figure(fig, Path(stem))
    finally:
        plt.close(fig)


def _metal_of_system(system: str, center: str) -> str | None:
    parts = str(system).split("-")
    if len(parts) != 2 or parts[1].lower() != center.lower():
        return None
    metal = parts[0].capitalize()
    return metal if metal in atomic_numbers else None


_METRIC_LABELS = {"energy_mae_mev_per_atom": "raw backbone energy MAE (meV/atom)",
                  "energy_rmse_mev_per_atom": "raw backbone energy RMSE (meV/atom)"}


def relate_to_errors(counts_df: Any, sweep_results_df: Any, *, center: str = "S", category: str = "any_metal",
                     unit: str = "atoms", metric: str = "energy_mae_mev_per_atom",
                     systems: Mapping[str, str] | None = None) -> Any:
    """Put each backbone's raw error on a system next to the count of the matching metal–centre environment.

    ``counts_df`` is the table of :func:`tally_to_table` (center, category, neighbor, unit, count);
    ``sweep_results_df`` the sweep's tidy results (backbone, system, aggregation, train_size, seed,
    metric, value).  Rows with ``metric`` are averaged per (backbone, system) – a raw (uncorrected)
    error does not depend on train_size, seed or aggregation, so the spread is reported to show it.
    ``systems`` maps system → metal (default: ``"cu-s"`` → ``"Cu"`` for centre S).  Returns one row per
    backbone and system: backbone, system, metal, center, category, unit, env_count, metric,
    error_mean, error_std, error_min, error_max, n_values.
    """
    import pandas as pd

    need_counts = {"center", "category", "neighbor", "unit", "count"}
    need_sweep = {"backbone", "system", "metric", "value"}
    for name, df, need in (("counts_df", counts_df, need_counts), ("sweep_results_df", sweep_results_df, need_sweep)):
        missing = need - set(df.columns)
        if missing:
            raise ValueError(f"{name} lacks column(s) {sorted(missing)}")
    counts = counts_df[(counts_df["center"] == center) & (counts_df["category"] == category)
                       & (counts_df["unit"] == unit)]
    if counts.empty:
        raise ValueError(f"no counts for center={center!r}, category={category!r}, unit={unit!r}")
    by_metal = dict(zip(counts["neighbor"], counts["count"]))
    sweep = sweep_results_df[sweep_results_df["metric"] == metric]
    if "model" in sweep.columns:  # the sweep's tidy table: raw = backbone after the per-species offset
        sweep = sweep[sweep["model"] == "raw"]
    if sweep.empty:
        raise ValueError(f"no sweep results with metric {metric!r}; present: "
                         f"{sorted(map(str, sweep_results_df['metric'].unique()))}")
    mapping = dict(systems) if systems is not None else {
        s: m for s in sweep["system"].unique() if (m := _metal_of_system(s, center)) is not None}
    sweep = sweep[sweep["system"].isin(list(mapping))]
    columns = ["backbone", "system", "metal", "center", "category", "unit", "env_count", "metric",
               "error_mean", "error_std", "error_min", "error_max", "n_values"]
    if sweep.empty:
        return pd.DataFrame(columns=columns)
    grouped = sweep.groupby(["backbone", "system"], sort=True)["value"]
    agg = grouped.agg(error_mean="mean", error_std="std", error_min="min", error_max="max",
                      n_values="count").reset_index()
    agg["metal"] = agg["system"].map(mapping)
    agg["env_count"] = agg["metal"].map(lambda m: by_metal.get(m, np.nan))
    agg["center"], agg["category"], agg["unit"], agg["metric"] = center, category, unit, metric
    agg["error_std"] = agg["error_std"].fillna(0.0)
    return agg[columns].reset_index(drop=True)


def plot_relation(relation_df: Any, stem: str | os.PathLike) -> tuple[Path, Path]:
    """Scatter: environment count in the training set (log x) against each backbone's raw error."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if relation_df.empty:
        raise ValueError("nothing to plot: the relation table is empty")
    first = relation_df.iloc[0]
    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    markers = "osD^v<>ph*"
    for i, (backbone, rows) in enumerate(relation_df.groupby("backbone", sort=True)):
        rows = rows.sort_values("env_count")
        x = rows["env_count"].clip(lower=0.8)
        ax.errorbar(x, rows["error_mean"], yerr=rows["error_std"], marker=markers[i % len(markers)],
                    linestyle="-", capsize=3, label=str(backbone))
        for xi, yi, metal, n in zip(x, rows["error_mean"], rows["metal"], rows["env_count"]):
            label = f"{metal} (0, drawn at 0.8)" if n == 0 else str(metal)
            ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    _plain_log_labels(ax.xaxis)
    cat = {"any_metal": "≥1 M neighbour", "metal_only": "only M neighbours",
           "metal_and_center": "M + {c} neighbours"}.get(first["category"], first["category"]).format(c=first["center"])
    ax.set_xlabel(f"{first['center']} environments with {cat} in the training set ({first['unit']}, log scale)")
    metric = str(first["metric"])
    ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
    ax.set_title(f"raw backbone error vs training-set coverage of M–{first['center']}")
    ax.legend(title="backbone", fontsize=8)
    fig.tight_layout()
    try:
        return _save_figure(fig, Path(stem))
    finally:
        plt.close(fig)
