"""The output folder of an active Δ-learning run (:mod:`.active`)::

    OUT/active.json              identity (problem card, backbone, weights, base data, settings) + round records
    OUT/labelled.extxyz          every DFT-labelled structure, provenance in its info (rewritten atomically
                                 with each new one)
    OUT/failures.json            labellings that failed (recorded, skipped, not retried)
    OUT/round-RR/delta.{json,npz}  the Δ-model of round RR (uipbench.delta.save)
    OUT/round-RR/search/         the search of round RR (a uipbench search folder)
    OUT/.labelling/              GPAW scratch: a finished DFT calculation is reused after a kill
    OUT/minima.extxyz, minima.csv  the final round's distinct minima (a copy)

Every file is written atomically.  ``labelled.extxyz`` is the one record of the DFT results: each
round fits on what it reads back from there, so a resumed run fits on exactly what an uninterrupted
one fits on.  A folder holding another run (other identity), or files of something else, is refused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase import Atoms

from .._atomic import write_json_atomic
from .._lock import LOCK_FILE
from .store import SearchFolderError, _differences

FORMAT = "uipbench-active"
FORMAT_VERSION = 1
STATE_FILE = "active.json"
LABELLED_FILE = "labelled.extxyz"
FAILURES_FILE = "failures.json"


class ActiveFolderError(SearchFolderError):
    """The output folder holds another active-learning run, or files this run cannot read."""


@dataclass
class ActiveState:
    """What a run's folder holds: finished rounds, labelled structures, failed labellings."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    labelled: list[Atoms] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def labelled_by_hash(self) -> dict[str, Atoms]:
        return {str(a.info["structure_hash"]): a for a in self.labelled}

    def labelled_before(self, round_index: int) -> list[Atoms]:
        return [a for a in self.labelled if int(a.info["round"]) < round_index]


class ActiveFolder:
    """The folder of one active-learning run; refuses a folder that holds another one."""

    def __init__(self, path: str | Path, identity: dict[str, Any]):
        self.path = Path(path)
        # as JSON reads it back (tuples become lists), so a resumed run compares like with like
        self.identity = json.loads(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **identity}))
        self.state_file = self.path / STATE_FILE
        self.labelled_file = self.path / LABELLED_FILE
        self.failures_file = self.path / FAILURES_FILE
        self.scratch = self.path / ".labelling"
        self._check()

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ActiveFolderError(f"{path}: unreadable ({exc})") from None

    def _check(self) -> None:
        if self.state_file.is_file():
            data = self._read_json(self.state_file)
            there = data.get("identity") if isinstance(data, dict) else None
            if not isinstance(there, dict):
                raise ActiveFolderError(f"{self.state_file}: not an active-learning record")
            diff = _differences(there, self.identity)
            if diff:
                raise ActiveFolderError(f"{self.path} holds another active-learning run (settings differ: "
                                        f"{'; '.join(diff)}); choose another --out, or delete the folder to "
                                        f"start over")
        elif self.path.is_dir() and any(not p.name.startswith(LOCK_FILE) for p in self.path.iterdir()):
            raise ActiveFolderError(f"{self.path} is not empty and holds no {STATE_FILE}; choose another --out")

    def round_dir(self, round_index: int) -> Path:
        return self.path / f"round-{round_index:02d}"

    def load(self) -> ActiveState:
        from ..datasets.io import read_structures

        rounds = self._read_json(self.state_file).get("rounds", []) if self.state_file.is_file() else []
        labelled = read_structures(self.labelled_file) if self.labelled_file.is_file() else []
        for i, atoms in enumerate(labelled):
            if "round" not in atoms.info or "structure_hash" not in atoms.info:
                raise ActiveFolderError(f"{self.labelled_file} structure {i}: no round or structure_hash in "
                                        f"its info; not written by this run")
        failures = self._read_json(self.failures_file) if self.failures_file.is_file() else []
        return ActiveState(list(rounds), labelled, list(failures))

    def write_state(self, state: ActiveState, status: str, stopped_because: str | None) -> None:
        write_json_atomic(self.state_file, {"identity": self.identity, "status": status,
                                            "stopped_because": stopped_because, "rounds": state.rounds})

    def append_labelled(self, atoms: Atoms) -> list[Atoms]:
        """Atomically rewrite ``labelled.extxyz`` with ``atoms`` appended; the file's structures, read back."""
        from ..datasets.io import read_structures
        from ..datasets.label import append_structures

        append_structures(self.labelled_file, [atoms])
        return read_structures(self.labelled_file)

    def add_failure(self, state: ActiveState, failure: dict[str, Any]) -> None:
        state.failures.append(failure)
        write_json_atomic(self.failures_file, state.failures)
