"""The minima of finished raw-backbone searches of the oxide's problems, pooled per problem, and their DFT points.

A search folder (``uipbench search PROBLEM ... --out DIR``) holds ``search.json`` (its identity: the
problem card, backbone, weights, Δ-model) and ``minima.extxyz`` (its distinct minima, with the backbone's
``predicted_energy``); ``--seeds`` writes one such folder per seed under ``DIR/seed-S``.  Every folder
given that is a search, or else every search folder below it, is read.  The runs of one problem (several seeds) are pooled
and their minima made distinct again with the search's own rule (:func:`uipbench.search.minima.
distinct_minima`): a minimum's members are every run's structure of it, its representative the lowest.

Refused, naming the folder: an unfinished search, a Δ-corrected one (the phase diagram is the raw
backbone's), one of another backbone or other weights than the rest, problems on different slabs, and a
set of problems without exactly one clean slab (the empty composition: E_clean).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms

from ..datasets.io import read_structures, structure_hash

SEARCH_FILE, MINIMA_FILE = "search.json", "minima.extxyz"
#: what every problem of one phase diagram shares
SLAB_KEYS = ("protocol", "slab")


class SearchesError(ValueError):
    """The search folders cannot make one phase diagram."""


@dataclass
class SearchRun:
    """One finished search: its folder, identity and minima (the backbone's energies in ``predicted``)."""

    path: Path
    problem: dict
    backbone: str
    weights_sha256: str
    seed: int | None
    minima: list[Atoms] = field(repr=False)
    predicted: list[float] = field(repr=False)


@dataclass
class ProblemMinima:
    """The pooled distinct minima of one problem, lowest backbone energy first."""

    problem: str
    composition: dict[str, int]
    protocol: str
    minima: list[Atoms] = field(repr=False)
    energies: list[float]
    members: list[list[Atoms]] = field(repr=False)  # every run's structure of each minimum

    @property
    def is_clean(self) -> bool:
        return not self.composition

    @property
    def n_adsorbates(self) -> int:
        return sum(self.composition.values())

    @property
    def n_slab(self) -> int:
        """Atoms of the template slab (the first ones of every minimum)."""
        return len(self.minima[0]) - self.n_adsorbates

    @property
    def label(self) -> str:
        """``Cu5O4``, ``O2`` or ``clean``."""
        if self.is_clean:
            return "clean"
        return "".join(f"{e}{n if n > 1 else ''}" for e, n in sorted(self.composition.items()))


def search_folders(paths: Iterable[Path]) -> list[Path]:
    """Each path holding a ``search.json``, else every folder below it holding one (``--seeds`` runs, a
    folder of searches of several problems)."""
    out: list[Path] = []
    for path in map(Path, paths):
        if (path / SEARCH_FILE).is_file():
            out.append(path)
            continue
        found = sorted(p.parent for p in path.rglob(SEARCH_FILE)) if path.is_dir() else []
        if not found:
            raise SearchesError(f"{path}: no search here ({SEARCH_FILE} neither in it nor in any folder below it)")
        out.extend(found)
    return list(dict.fromkeys(out))


def read_run(path: Path) -> SearchRun:
    """One finished search folder."""
    try:
        data = json.loads((path / SEARCH_FILE).read_text(encoding="utf-8"))
        identity = data["identity"]
        problem = identity["problem"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SearchesError(f"{path / SEARCH_FILE}: not a search settings file ({exc})") from None
    if data.get("status") != "finished":
        raise SearchesError(f"{path}: the search has not finished (status {data.get('status')!r}); run its command "
                            f"again to finish it")
    if identity.get("delta_sha256") is not None:
        raise SearchesError(f"{path}: a Δ-corrected search; the phase diagram is the raw backbone's")
    minima = read_structures(path / MINIMA_FILE)
    if not minima:
        raise SearchesError(f"{path / MINIMA_FILE}: no minima")
    predicted = [float(a.info["predicted_energy"]) for a in minima]
    return SearchRun(path, problem, str(identity["backbone"]), str(identity["weights_sha256"]),
                     identity.get("settings", {}).get("seed"), minima, predicted)


def _check_runs(runs: Sequence[SearchRun], backbone: str) -> None:
    for run in runs:
        if run.backbone != backbone:
            raise SearchesError(f"{run.path}: a search with backbone {run.backbone!r}, not {backbone!r}")
        if run.weights_sha256 != runs[0].weights_sha256:
            raise SearchesError(f"{run.path}: {backbone} weights {run.weights_sha256[:12]}…, but {runs[0].path} "
                                f"used {runs[0].weights_sha256[:12]}…; one phase diagram is one set of weights")
        for key in SLAB_KEYS:
            if run.problem.get(key) != runs[0].problem.get(key):
                raise SearchesError(f"{run.path}: problem {run.problem.get('name')!r} differs from "
                                    f"{runs[0].problem.get('name')!r} ({runs[0].path}) in {key!r}; the phases of "
                                    f"one diagram share one slab")


def pool(runs: Sequence[SearchRun], backbone: str) -> dict[str, ProblemMinima]:
    """The runs' minima pooled per problem (see the module docstring), clean slab first."""
    from ..search.minima import distinct_minima

    if not runs:
        raise SearchesError("no search folders given")
    _check_runs(runs, backbone)
    by_problem: dict[str, list[SearchRun]] = {}
    for run in runs:
        by_problem.setdefault(str(run.problem["name"]), []).append(run)
    out: dict[str, ProblemMinima] = {}
    for name, group in by_problem.items():
        problem = group[0].problem
        composition = {str(e): int(n) for e, n in problem["adsorbates"]["composition"].items()}
        entries = [(k, atoms, energy, None) for k, (atoms, energy) in
                   enumerate((a, e) for run in group for a, e in zip(run.minima, run.predicted))]
        n_slab = len(entries[0][1]) - sum(composition.values())
        minima = distinct_minima(entries, n_slab)
        out[name] = ProblemMinima(name, composition, str(problem["protocol"]), [m.atoms for m in minima],
                                  [m.energy for m in minima], [[entries[k][1] for k in m.hits] for m in minima])
    clean = [p for p in out.values() if p.is_clean]
    if len(clean) != 1:
        found = ", ".join(p.problem for p in clean) or "none"
        raise SearchesError(f"the searches need exactly one clean-slab problem (an empty composition, e.g. "
                            f"`uipbench search cu-o8-clean --budget 1`) for E_clean; found {found}")
    return dict(sorted(out.items(), key=lambda item: (not item[1].is_clean, item[1].n_adsorbates, item[0])))


@dataclass(frozen=True)
class DftPoint:
    """A labelled minimum: its DFT energy (eV) and the labelled structure."""

    energy: float
    atoms: Atoms = field(repr=False)


#: ``info["variant"]`` of a DFT-relaxed structure (``uipbench oxide relax``): not a single point of a minimum
DFT_RELAXED = "DFT relaxation"


def single_points(structures: Iterable[Atoms]) -> list[Atoms]:
    """The labelled structures that are single points at a search's geometry (DFT relaxations left out)."""
    return [a for a in structures if a.info.get("variant") != DFT_RELAXED]


def dft_points(structures: Iterable[Atoms]) -> dict[str, DftPoint]:
    """Labelled single points by structure hash (of the geometry as read back); DFT relaxations left out."""
    out = {}
    for atoms in single_points(structures):
        calc = atoms.calc
        if calc is not None and "energy" in getattr(calc, "results", {}):
            out[structure_hash(atoms)] = DftPoint(float(calc.results["energy"]), atoms)
    return out


def dft_of(members: Sequence[Atoms], points: dict[str, DftPoint], n_slab: int | None = None) -> DftPoint | None:
    """The DFT point of a minimum: that of the first of its members (the representative first) labelled; with
    ``n_slab``, else the nearest point at the same minimum's geometry by the search's rule (same cell and
    formula, fingerprints within :data:`uipbench.search.minima.F_TOL`): a longer search may have replaced the
    labelled structure as the minimum's representative by a lower hit, and one minimum is labelled once."""
    for atoms in members:
        point = points.get(structure_hash(atoms))
        if point is not None:
            return point
    if n_slab is None or not members or len(members[0]) == n_slab:  # no adsorbates: nothing to fingerprint
        return None
    from ..search.minima import F_TOL, fingerprint, fingerprint_distance

    formula, fp = members[0].get_chemical_formula(), fingerprint(members[0], n_slab)
    near = [(fingerprint_distance(fp, fingerprint(p.atoms, n_slab)), i, p) for i, p in enumerate(points.values())
            if p.atoms.get_chemical_formula() == formula and np.allclose(p.atoms.cell, members[0].cell)]
    near = [n for n in near if n[0] < F_TOL]
    return min(near, key=lambda n: n[:2])[2] if near else None
