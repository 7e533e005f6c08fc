"""A search's output folder: its identity in ``search.json``, one file per finished evaluation.

``DIR/search.json`` records what identifies the search (the problem card's content, backbone,
weights sha256, Δ-model hash, algorithm, seed, relaxation and move settings) plus the budget
and timing of the last run.  ``DIR/evaluations/NNNNNN.json`` holds one finished relaxation,
written atomically as soon as it ends, with every float as JSON writes it (exact round trip),
so a resumed search continues from bit-identical minima.  A folder holding another search is
refused; the same search with another budget resumes (a larger one extends it).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .._atomic import write_json_atomic
from .._lock import LOCK_FILE
from .engine import Evaluation

FORMAT = "uipbench-search"
FORMAT_VERSION = 1


class SearchFolderError(ValueError):
    """The output folder holds another search, or files this search cannot read."""


def delta_sha256(delta: Any) -> str | None:
    """Hash of a fitted Δ-model's parameters and fitted state (the same before saving and after loading)."""
    if delta is None:
        return None
    h = hashlib.sha256(json.dumps(delta.get_params(deep=False), sort_keys=True, default=str).encode())
    for name in sorted(vars(delta)):
        if not name.endswith("_") or name.startswith("_") or name == "provenance_":
            continue
        value = getattr(delta, name)
        h.update(name.encode())
        if isinstance(value, np.ndarray):
            h.update(str(value.dtype).encode() + str(value.shape).encode())
            h.update(np.ascontiguousarray(value.astype(str) if value.dtype.kind == "O" else value).tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def identity(problem_dict: dict[str, Any], backbone: str, weights_sha256: str, delta_hash: str | None,
             settings: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "problem": problem_dict, "backbone": backbone,
            "weights_sha256": weights_sha256, "delta_sha256": delta_hash, "settings": settings}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')} ({a!r} there, {b!r} here)"]


def evaluation_to_dict(record: Evaluation) -> dict[str, Any]:
    from ase.constraints import FixAtoms

    atoms = record.atoms
    fixed = sorted(int(i) for c in atoms.constraints if isinstance(c, FixAtoms) for i in c.get_indices())
    data = {k: getattr(record, k) for k in ("index", "energy", "energy_std", "steps", "converged", "max_force",
                                            "cpu_seconds", "wall_seconds", "move", "parent", "accepted")}
    data["atoms"] = {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
                     "cell": atoms.cell.array.tolist(), "pbc": atoms.pbc.tolist(), "fixed": fixed,
                     "tags": atoms.get_tags().tolist(),
                     "info": {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float))}}
    return data


def evaluation_from_dict(data: dict[str, Any]) -> Evaluation:
    from ase.constraints import FixAtoms

    a = data["atoms"]
    atoms = Atoms(numbers=a["numbers"], positions=a["positions"], cell=a["cell"], pbc=a["pbc"], tags=a["tags"])
    atoms.set_constraint(FixAtoms(indices=a["fixed"]))
    atoms.info.update(a["info"])
    fields = {k: data[k] for k in ("index", "energy", "energy_std", "steps", "converged", "max_force",
                                   "cpu_seconds", "wall_seconds", "move", "parent", "accepted")}
    return Evaluation(atoms=atoms, **fields)


class SearchFolder:
    """The output folder of one search; refuses a folder that holds another one."""

    def __init__(self, path: str | Path, identity: dict[str, Any]):
        self.path = Path(path)
        self.identity = identity
        self.settings_file = self.path / "search.json"
        self.evaluations_dir = self.path / "evaluations"
        self._check()

    def _check(self) -> None:
        if self.settings_file.is_file():
            try:
                there = json.loads(self.settings_file.read_text(encoding="utf-8"))["identity"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SearchFolderError(f"{self.settings_file}: not a search settings file ({exc})") from None
            diff = _differences(there, self.identity)
            if diff:
                raise SearchFolderError(f"{self.path} holds another search (settings differ: {'; '.join(diff)}); "
                                        f"choose another --out, or delete the folder to start over")
        elif self.path.is_dir() and any(not p.name.startswith(LOCK_FILE) for p in self.path.iterdir()):
            raise SearchFolderError(f"{self.path} is not empty and holds no search.json; choose another --out")

    def start(self, budget: int, extra: dict[str, Any] | None = None) -> None:
        self.write_summary({"budget": budget, "status": "running", **(extra or {})})

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.settings_file, {"identity": self.identity, **summary})

    def evaluation_path(self, index: int) -> Path:
        return self.evaluations_dir / f"{index:06d}.json"

    def write(self, record: Evaluation) -> None:
        write_json_atomic(self.evaluation_path(record.index), evaluation_to_dict(record))

    def load(self) -> dict[int, Evaluation]:
        """Every finished evaluation, by index."""
        out: dict[int, Evaluation] = {}
        for path in sorted(self.evaluations_dir.glob("*.json")):
            try:
                record = evaluation_from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise SearchFolderError(f"{path}: unreadable evaluation record ({exc}); delete it to redo "
                                        f"that relaxation") from None
            if path.name != f"{record.index:06d}.json":
                raise SearchFolderError(f"{path}: holds evaluation {record.index}")
            out[record.index] = record
        return out
