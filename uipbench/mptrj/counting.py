"""Counting: neighbours within the cutoff, the category of each centre atom, tallies, parallel chunks."""
from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .output import tally_to_table
from .reading import decode_raw_frame, iter_raw_frames
from .records import (DEFAULT_BLOCK_SIZE, DEFAULT_CHUNK_SIZE, NO_NEIGHBOR, CountResult, CountSpec, Frame,
                      MPtrjSkipWarning, RawFrame, RunMetadata, Skip, SplitStats, Tally)
from .source import check_input_file, detect_format, is_gzip

_PAIR_BUDGET = 500_000     # centre x atom x image triples evaluated at once
_MAX_IMAGES = 100_000


def _periodic_images(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                     cutoff: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Wrapped positions, the lattice translations that reach within ``cutoff``, and the zero shift's index."""
    if not pbc.any():
        return positions, np.zeros((1, 3)), 0
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
    reach = np.sqrt((inv * inv).sum(axis=0)) * cutoff     # cutoff / interplanar spacing
    nrep = np.where(pbc, np.ceil(reach), 0).astype(np.int64)
    if np.prod(2 * nrep + 1) > _MAX_IMAGES:
        raise ValueError(f"cell too thin for the cutoff (more than {_MAX_IMAGES} periodic images needed)")
    shifts = np.indices(2 * nrep + 1).reshape(3, -1).T - nrep
    return frac @ full, shifts @ full, (len(shifts) - 1) // 2   # the middle of the grid is the zero shift


def center_neighbor_elements(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                             center_z: int, cutoff: float) -> list[np.ndarray]:
    """For each atom of element ``center_z`` (in order), the atomic numbers of its neighbours.

    Neighbours are atoms at distance < ``cutoff`` over all periodic images along periodic axes; an
    atom's own image counts, the atom itself (zero shift) does not – the rule of ASE's neighbor_list.
    Raises ``ValueError`` for a degenerate cell along a periodic axis.
    """
    numbers = np.asarray(numbers)
    centres = np.flatnonzero(numbers == center_z)
    if not centres.size:
        return []
    n = len(numbers)
    wrapped, translations, zero = _periodic_images(np.asarray(positions, dtype=np.float64), cell,
                                                   np.asarray(pbc, dtype=bool), cutoff)
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
    from .._interrupt import sigint_held, worker_process_init

    ctx = multiprocessing.get_context("spawn")
    # the workers leave Ctrl-C to this process (it stops the pool and says so in one line), from their start on
    with sigint_held():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_process_init,
                                   initargs=(os.getpid(),))
    pending: deque[Future] = deque()
    try:
        for chunk in chunks:
            with sigint_held():  # submit starts the workers, one by one
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
                  MPtrjSkipWarning, stacklevel=4)


def _tally_file(path: Path, raw: Iterator[RawFrame | Skip], stats: SplitStats, spec: CountSpec, *,
                workers: int, chunk_size: int, progress: bool) -> Tally:
    """Count every raw frame of ``path`` into one tally, with a progress bar in bytes read."""
    from tqdm import tqdm

    tally = Tally()
    gz = is_gzip(path)
    size = path.stat().st_size
    total = None if gz else size   # a gzipped file's progress is in uncompressed bytes, total unknown
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"mptrj-envs {path.name}", disable=not progress,
              leave=False) as bar:
        for part in _run_chunks(_chunks(raw, chunk_size), spec, str(path), workers):
            for skip in tally.merge(part):
                _warn_skip(str(path), skip)
            done = stats.bytes_read if gz else min(size, stats.bytes_read)
            bar.update(max(0, done - bar.n))
            bar.set_postfix(frames=tally.frames_read, skipped=sum(tally.skipped.values()), refresh=False)
    if stats.frames_emitted != tally.frames_read:  # every frame found must be counted or skipped
        raise RuntimeError(f"{path}: internal error: {stats.frames_emitted} frames found but {tally.frames_read} "
                           f"counted or skipped")
    return tally


def _run_metadata(path: Path, kind: str, spec: CountSpec, tally: Tally, stats: SplitStats, *, workers: int,
                  chunk_size: int, elapsed: float) -> RunMetadata:
    return RunMetadata(
        input_path=str(path.resolve()),
        input_bytes=path.stat().st_size,
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
    path = check_input_file(path)
    kind = detect_format(path, fmt)
    stats = SplitStats()
    raw = iter_raw_frames(path, kind, block_size=block_size, stats=stats)
    started = time.perf_counter()
    tally = _tally_file(path, raw, stats, spec, workers=workers, chunk_size=chunk_size, progress=progress)
    metadata = _run_metadata(path, kind, spec, tally, stats, workers=workers, chunk_size=chunk_size,
                             elapsed=time.perf_counter() - started)
    return CountResult(tally_to_table(tally, spec), metadata, tally)
