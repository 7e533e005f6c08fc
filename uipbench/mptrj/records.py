"""The records of the environment counter: what to count, frames, skips, tallies, run metadata."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase.data import atomic_numbers

from .. import __version__ as UIPBENCH_VERSION

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
class SplitStats:
    """Filled in by the splitters while they run."""

    materials_read: int = 0
    bytes_read: int = 0
    frames_emitted: int = 0


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

    def _keep_example(self, skip: Skip) -> None:
        if sum(1 for s in self.skip_examples if s.reason == skip.reason) < SKIP_EXAMPLES_PER_REASON:
            self.skip_examples.append(skip)

    def add_skip(self, skip: Skip) -> None:
        self.frames_read += 1
        self._keep_example(skip)
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
            self._keep_example(s)
        self.skipped.update(other.skipped)
        self.material_fallbacks += other.material_fallbacks
        self.material_ids |= other.material_ids
        return list(first_new.values())


def _category_help() -> dict[str, str]:
    return {
        "all": "every centre atom",
        "isolated": "no neighbour within the cutoff",
        "metal_only": "neighbours are all of one metal M (a --neighbors element other than the centre)",
        "metal_and_center": "neighbours are one metal M plus at least one centre atom, nothing else",
        "center_only": "neighbours are all centre atoms",
        "other": "any other neighbour set (other elements, several metals)",
        "any_metal": "at least one M neighbour (inclusive)",
        "any_center": "at least one centre-element neighbour (inclusive)",
    }


def _unit_help() -> dict[str, str]:
    return {
        "atoms": "centre atoms in the category, summed over frames",
        "frames": "frames with at least one centre atom in the category",
        "materials": "distinct material ids with at least one centre atom in the category in any frame",
    }


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
    categories: dict[str, str] = field(default_factory=_category_help)
    units: dict[str, str] = field(default_factory=_unit_help)


@dataclass
class CountResult:
    table: Any                # pandas.DataFrame: center, category, neighbor, unit, count
    metadata: RunMetadata
    tally: Tally
