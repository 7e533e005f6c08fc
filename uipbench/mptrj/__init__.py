"""Count how often a training set (MPtrj, or any extxyz file) shows the atomic environments we benchmark.

Why: Christiansen & Hammer (arXiv:2502.21179) trace the errors of universal potentials on S adatoms
on coinage-metal surfaces to what the training set, MPtrj, contains: few S atoms bonded to Cu/Ag/Au
and many S–S environments.  This package counts such environments in a training file so that the
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

No literature counts are built in: every number this package reports is counted from the file it is
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
the frame; so do an empty file, a ``.gz`` file that is not gzip-compressed and a gzip stream that is
cut short or corrupt.  A frame that cannot be counted (missing or malformed fields, an unknown element, a
disordered site, a degenerate cell, a field from ``require`` missing) is skipped, counted by reason,
warned about (:class:`MPtrjSkipWarning`, once per reason) and listed in the metadata – never counted
silently wrong.  Unknown element symbols in ``centers``/``neighbors`` raise ``ValueError``.

Layout
------
``records`` (what to count, frames, skips, tallies, metadata), ``source`` (opening plain or gzip
files, format detection), ``json_stream`` (the constant-memory MPtrj JSON splitter), ``reading``
(the extxyz splitter and decoding frames), ``counting`` (neighbours, categories, parallel chunks),
``output`` (table, files, summary) and ``figures``.  Relating the counts to a sweep's errors is a
report: :mod:`uipbench.report.mptrj_relation` (``relate_to_errors`` and ``plot_relation`` are still
importable from here).
"""

from __future__ import annotations

from typing import Any

from .counting import (center_neighbor_elements, classify_environment, count_chunk, count_environments,
                       count_frame)
from .figures import plot_counts
from .json_stream import iter_json_raw_frames
from .output import format_summary, tally_to_table, write_outputs
from .reading import decode_raw_frame, frame_from_atoms, frame_from_mptrj_dict, iter_extxyz_raw_frames
from .records import (COUNTER_VERSION, DEFAULT_BLOCK_SIZE, DEFAULT_CHUNK_SIZE, DEFAULT_CUTOFF,
                      DEFAULT_MATERIAL_KEYS, EXCLUSIVE_CATEGORIES, INCLUSIVE_CATEGORIES, NO_NEIGHBOR, UNITS,
                      CountResult, CountSpec, Frame, MPtrjFormatError, MPtrjSkipWarning, RawFrame, RunMetadata,
                      Skip, SplitStats, Tally, validate_element)
from .source import detect_format

__all__ = [
    "COUNTER_VERSION", "DEFAULT_BLOCK_SIZE", "DEFAULT_CHUNK_SIZE", "DEFAULT_CUTOFF", "DEFAULT_MATERIAL_KEYS",
    "EXCLUSIVE_CATEGORIES", "INCLUSIVE_CATEGORIES", "UNITS", "NO_NEIGHBOR", "CountSpec", "Frame", "RawFrame",
    "Skip", "SplitStats", "Tally", "RunMetadata", "CountResult", "MPtrjFormatError", "MPtrjSkipWarning",
    "validate_element", "detect_format", "iter_json_raw_frames", "iter_extxyz_raw_frames",
    "frame_from_mptrj_dict", "frame_from_atoms", "decode_raw_frame", "center_neighbor_elements",
    "classify_environment", "count_frame", "count_chunk", "tally_to_table", "count_environments",
    "write_outputs", "plot_counts", "relate_to_errors", "plot_relation", "format_summary",
]

_MOVED_TO_REPORT = ("relate_to_errors", "plot_relation")


def __getattr__(name: str) -> Any:
    # the relation to a sweep's errors is a report (it knows the results schema); it lives in
    # uipbench.report.mptrj_relation and is imported only when asked for here
    if name in _MOVED_TO_REPORT:
        from ..report import mptrj_relation

        return getattr(mptrj_relation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
