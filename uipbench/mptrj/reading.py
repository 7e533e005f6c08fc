"""Reading frames: the extxyz splitter, and decoding raw MPtrj JSON or extxyz text into :class:`Frame`.

Splitting runs in the main process (:func:`iter_raw_frames`), decoding in the workers
(:func:`decode_raw_frame`).  A frame that cannot be counted becomes a :class:`Skip` with its reason;
a file that is truncated or malformed raises :class:`MPtrjFormatError`.
"""
from __future__ import annotations

import io
import json
import os
import re
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .json_stream import iter_json_raw_frames
from .records import (DEFAULT_BLOCK_SIZE, DEFAULT_FRAME_KEYS, DEFAULT_MATERIAL_KEYS, CountSpec, Frame,
                      MPtrjFormatError, RawFrame, Skip, SplitStats)
from .source import open_binary

_SYMBOL_TO_Z = {s: z for z, s in enumerate(chemical_symbols) if z > 0}
_UNKNOWN_SYMBOL = re.compile(r"^'?([A-Za-z][A-Za-z0-9]*)'?$")


def iter_raw_frames(path: str | os.PathLike, kind: str, *, block_size: int = DEFAULT_BLOCK_SIZE,
                    stats: SplitStats | None = None) -> Iterator[RawFrame | Skip]:
    """The raw frames of ``path`` in file order, for ``kind`` ``json`` or ``extxyz``."""
    if kind == "json":
        return iter_json_raw_frames(path, block_size=block_size, stats=stats)
    return iter_extxyz_raw_frames(path, stats=stats)


def _atom_count(line: bytes, path: str, offset: int, index: int) -> int:
    try:
        natoms = int(line.strip())
    except ValueError:
        natoms = -1
    if natoms < 0:
        raise MPtrjFormatError(f"{path}: malformed extxyz at byte {offset} (frame #{index}): expected an "
                               f"atom-count line, got {line[:60]!r}")
    return natoms


def iter_extxyz_raw_frames(path: str | os.PathLike, *, stats: SplitStats | None = None) -> Iterator[RawFrame]:
    """Stream the frames of an extxyz file as undecoded text (atom-count line, comment, atom lines)."""
    path_s = str(path)
    stats = stats if stats is not None else SplitStats()
    offset = 0
    index = 0
    with open_binary(path) as fh:
        for line in iter(fh.readline, b""):
            if not line.strip():
                offset += len(line)
                continue
            natoms = _atom_count(line, path_s, offset, index)
            lines = [line]
            for _ in range(natoms + 1):
                nxt = fh.readline()
                if not nxt:
                    raise MPtrjFormatError(
                        f"{path_s}: truncated extxyz: frame #{index} starting at byte {offset} declares {natoms} "
                        f"atoms but the file ends after {max(0, len(lines) - 2)} of them")
                lines.append(nxt)
            data = b"".join(lines)
            yield RawFrame("extxyz", index, offset, data, unterminated=not data.endswith(b"\n"))
            offset += len(data)
            index += 1
            stats.bytes_read = offset
            stats.frames_emitted = index
    if index == 0:
        raise MPtrjFormatError(f"{path_s}: no extxyz frame in the file (only blank lines)")


# --------------------------------------------------------------------------- MPtrj JSON frames


def _diagnose_sites(sites: list) -> str | None:
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
    return None


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
    return _diagnose_sites(sites) or "malformed structure"


def _structure_arrays(st: Mapping) -> tuple[list, np.ndarray, bool, np.ndarray, Any] | str:
    """Elements, positions (Cartesian or fractional), whether Cartesian, cell and raw pbc; or a skip reason.

    Raises KeyError/TypeError/IndexError/AttributeError/ValueError for a malformed structure.
    """
    matrix = st["lattice"]["matrix"]
    pbc_raw = st["lattice"].get("pbc", (True, True, True))
    sites = st["sites"]
    elements = []
    for site in sites:
        species = site["species"]
        if len(species) != 1:
            return f"disordered site ({len(species)} species on one site)"
        elements.append(species[0]["element"])
    cart = bool(sites) and all("xyz" in s for s in sites)
    positions = np.asarray([s["xyz" if cart else "abc"] for s in sites], dtype=np.float64)
    return elements, positions, cart, np.asarray(matrix, dtype=np.float64), pbc_raw


def _atomic_numbers_of(elements: list) -> np.ndarray | str:
    numbers = np.empty(len(elements), dtype=np.int64)
    for i, el in enumerate(elements):
        z = _SYMBOL_TO_Z.get(el) if isinstance(el, str) else None
        if z is None:
            return f"unknown element {el!r}"
        numbers[i] = z
    return numbers


def _pbc_of(pbc_raw: Any) -> np.ndarray | None:
    try:
        pbc = np.array([bool(p) for p in pbc_raw], dtype=bool)
    except (TypeError, ValueError):
        return None
    return pbc if pbc.shape == (3,) else None


def frame_from_mptrj_dict(material_id: str, frame_id: str, index: int, obj: Any,
                          require: Sequence[str] = (), offset: int = -1) -> Frame | Skip:
    """Turn one MPtrj frame (``{"structure": Structure.as_dict(), ...}``) into a :class:`Frame` or a Skip."""
    def skip(reason: str) -> Skip:
        return Skip(index, material_id, frame_id, reason, offset)

    if not isinstance(obj, Mapping):
        return skip(f"frame is not a JSON object (got {type(obj).__name__})")
    missing = next((name for name in require if name not in obj), None)
    if missing is not None:
        return skip(f"missing required field {missing!r}")
    try:
        arrays = _structure_arrays(obj["structure"])
    except (KeyError, TypeError, IndexError, AttributeError):
        return skip(_diagnose_structure(obj))
    except ValueError:
        return skip("malformed coordinates or lattice (not numbers of the right shape)")
    if isinstance(arrays, str):
        return skip(arrays)
    elements, positions, cart, cell, pbc_raw = arrays
    if not elements:
        return skip("structure has no sites")
    if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
        return skip("malformed field 'structure.lattice.matrix' (not a finite 3x3 matrix)")
    if positions.shape != (len(elements), 3) or not np.all(np.isfinite(positions)):
        return skip("malformed site coordinates (not finite 3-vectors)")
    numbers = _atomic_numbers_of(elements)
    if isinstance(numbers, str):
        return skip(numbers)
    pbc = _pbc_of(pbc_raw)
    if pbc is None:
        return skip("malformed field 'structure.lattice.pbc'")
    return Frame(material_id, frame_id, index, numbers, positions if cart else positions @ cell, cell, pbc)


# --------------------------------------------------------------------------- extxyz frames


def frame_from_atoms(atoms: Any, index: int, material_keys: Sequence[str] = DEFAULT_MATERIAL_KEYS,
                     require: Sequence[str] = (), offset: int = -1) -> Frame | Skip:
    """Turn an ASE Atoms into a :class:`Frame` (material id from ``atoms.info``, see the package doc)."""
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


def _decode_json_frame(raw: RawFrame, spec: CountSpec, path: str) -> Frame | Skip:
    try:
        obj = json.loads(raw.data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", getattr(exc, "start", 0))
        msg = getattr(exc, "msg", str(exc))
        raise MPtrjFormatError(f"{path}: malformed JSON at byte {raw.offset + pos} in frame {raw.frame_id!r} of "
                               f"material {raw.material_id!r} (frame #{raw.index}): {msg}") from None
    return frame_from_mptrj_dict(raw.material_id or "", raw.frame_id or str(raw.index), raw.index, obj,
                                 spec.require, raw.offset)


def _decode_extxyz_frame(raw: RawFrame, spec: CountSpec, path: str) -> Frame | Skip:
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


def decode_raw_frame(raw: RawFrame, spec: CountSpec, path: str = "") -> Frame | Skip:
    """Decode one raw frame; a corrupt JSON frame raises :class:`MPtrjFormatError` with its byte offset."""
    if raw.kind == "json":
        return _decode_json_frame(raw, spec, path)
    return _decode_extxyz_frame(raw, spec, path)


def _extxyz_failure(raw: RawFrame, path: str, exc: Exception) -> Skip:
    if raw.unterminated:
        raise MPtrjFormatError(f"{path}: truncated extxyz: the last frame (#{raw.index}, byte {raw.offset}) "
                               f"cannot be parsed and the file does not end with a newline "
                               f"({type(exc).__name__}: {exc})") from None
    return Skip(raw.index, "", str(raw.index), f"unparseable extxyz frame ({type(exc).__name__})", raw.offset)
