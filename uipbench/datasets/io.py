"""Reading, validating and splitting the labelled datasets under ``datasets/<system>/``."""
from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from ..paths import datasets_dir
from .protocol import PROTOCOL_NAME, SYSTEMS

STRUCTURES_FILE = "structures.extxyz"
#: the independent validation set of a system (``uipbench.datasets.validation``): scored on, never fitted on
VALIDATION_FILE = "validation.extxyz"
#: the reference structures of a system's thermodynamics (the Cu oxide: bulk Cu, O2, Cu2O): never fitted on
REFERENCES_FILE = "references.extxyz"
CARD_FILE = "card.json"


class DatasetError(ValueError):
    """A dataset file or card is missing, malformed or inconsistent."""


def default_root() -> Path:
    """``datasets/`` of the source checkout (where the shipped data lives)."""
    return datasets_dir()


def system_dir(system: str, root: Path | None = None) -> Path:
    directory = (Path(root) if root is not None else default_root()) / system
    if system not in SYSTEMS and not directory.is_dir():
        raise DatasetError(f"unknown system {system!r}; {describe_systems(root)}")
    return directory


def describe_systems(root: Path | None = None, *also: str) -> str:
    """The systems under ``root`` (the datasets folder actually used), for an error naming a system that is
    not there, e.g. ``systems in /data: cu-s, my-cu`` (then ``also``, e.g. ``all``)."""
    where = Path(root) if root is not None else "the shipped datasets folder"
    present = available_systems(root)
    if not present:
        return f"no systems in {where} (a system is a folder holding a {STRUCTURES_FILE})"
    return f"systems in {where}: {', '.join([*present, *also])}"


def available_systems(root: Path | None = None) -> list[str]:
    """Systems with a structures file under ``root``: the shipped ones first, then any other
    folder holding ``structures.extxyz`` (a user's own data, labelled elsewhere), sorted."""
    root = Path(root) if root is not None else default_root()
    shipped = [s for s in SYSTEMS if (root / s / STRUCTURES_FILE).is_file()]
    extra = sorted(p.parent.name for p in root.glob(f"*/{STRUCTURES_FILE}") if p.parent.name not in SYSTEMS)
    return [*shipped, *extra]


def structure_hash(atoms: Atoms, decimals: int = 5) -> str:
    """Content hash of a structure: numbers, positions, cell and pbc (rounded)."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.positions, dtype=np.float64), decimals).tobytes())
    h.update(np.round(np.asarray(atoms.cell.array, dtype=np.float64), decimals).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()[:16]


def to_extxyz_text(structures: list[Atoms]) -> str:
    buffer = io.StringIO()
    write(buffer, structures, format="extxyz")
    return buffer.getvalue()


def read_structures(path: Path) -> list[Atoms]:
    """Parse an extxyz file, turning parser failures into a :class:`DatasetError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    if path.stat().st_size == 0:
        return []
    try:
        structures = read(path, index=":", format="extxyz")
    except Exception as exc:  # ase raises many types for malformed text
        raise DatasetError(f"{path}: malformed extxyz ({type(exc).__name__}: {exc})") from exc
    return list(structures)


def labelled(atoms: Atoms, where: str) -> Atoms:
    """Check that ``atoms`` carries a finite energy and forces; raise naming ``where`` otherwise."""
    calc = atoms.calc
    results = getattr(calc, "results", {}) if calc is not None else {}
    if "energy" not in results:
        raise DatasetError(f"{where}: structure has no energy")
    if "forces" not in results:
        raise DatasetError(f"{where}: structure has no forces")
    energy, forces = results["energy"], np.asarray(results["forces"])
    if not math.isfinite(float(energy)):
        raise DatasetError(f"{where}: energy is not finite ({energy})")
    if forces.shape != (len(atoms), 3) or not np.all(np.isfinite(forces)):
        raise DatasetError(f"{where}: forces are missing, misshapen or not finite")
    if not np.all(np.isfinite(atoms.positions)) or not np.all(np.isfinite(atoms.cell.array)):
        raise DatasetError(f"{where}: positions or cell are not finite")
    return atoms


def _load_file(path: Path) -> list[Atoms]:
    structures = read_structures(path)
    for i, atoms in enumerate(structures):
        labelled(atoms, f"{path} structure {i}")
    return structures


def load(system: str, root: Path | None = None) -> list[Atoms]:
    """The labelled training structures of ``system`` as ASE Atoms with energies and forces attached.

    Only ``structures.extxyz``: the validation set (:func:`load_validation`) is never part of it.
    """
    return _load_file(system_dir(system, root) / STRUCTURES_FILE)


def load_validation(system: str, root: Path | None = None) -> list[Atoms]:
    """The labelled validation structures of ``system`` (``validation.extxyz``); an empty list when the
    system has none.  For scoring only: nothing in uipbench fits, tunes or chooses on them."""
    path = system_dir(system, root) / VALIDATION_FILE
    return _load_file(path) if path.exists() else []


def load_card(system: str, root: Path | None = None) -> dict:
    path = system_dir(system, root) / CARD_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: dataset card not found") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: corrupt dataset card ({exc})") from exc


def group_key(atoms: Atoms) -> str:
    """Composition group: structures with the same formula (and so the same cell) compete in a search."""
    return atoms.get_chemical_formula(mode="metal")


def arrangement_key(atoms: Atoms) -> str:
    """Composition-by-arrangement group: same formula and same S motif."""
    return f"{group_key(atoms)}:{atoms.info.get('motif', 'unknown')}"


def count_summary(structures: list[Atoms]) -> dict:
    """Counts recorded in a dataset card (and checked against it by the validator)."""
    by_arrangement = Counter(arrangement_key(a) for a in structures)
    by_composition = Counter(group_key(a) for a in structures)
    return {
        "structures": len(structures),
        "atoms": int(sum(len(a) for a in structures)),
        "by_surface_cell": dict(sorted(Counter(a.info.get("surface_cell", "?") for a in structures).items())),
        "by_motif": dict(sorted(Counter(a.info.get("motif", "?") for a in structures).items())),
        "by_variant": dict(sorted(Counter(a.info.get("variant", "?") for a in structures).items())),
        "by_composition": dict(sorted(by_composition.items())),
        "by_arrangement": dict(sorted(by_arrangement.items())),
        "composition_groups_3plus": sum(1 for v in by_composition.values() if v >= 3),
        "arrangement_groups_3plus": sum(1 for v in by_arrangement.values() if v >= 3),
    }


@dataclass
class ValidationReport:
    system: str
    n_structures: int = 0
    n_validation: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_structures(path: Path, structures: list[Atoms], report: ValidationReport,
                      seen: dict[str, tuple[str, int]]) -> None:
    """Each structure labelled, under the protocol, with a GPAW version, and not a duplicate of one in ``seen``
    (hash -> file name and index where it was first found)."""
    for i, atoms in enumerate(structures):
        where = f"{path} structure {i}"
        try:
            labelled(atoms, where)
        except DatasetError as exc:
            report.problems.append(str(exc))
        if atoms.info.get("protocol") != PROTOCOL_NAME:
            report.problems.append(f"{where}: protocol is {atoms.info.get('protocol')!r}, expected {PROTOCOL_NAME!r}")
        if "gpaw_version" not in atoms.info:
            report.problems.append(f"{where}: no gpaw_version recorded")
        key = structure_hash(atoms)
        if key in seen:
            file, j = seen[key]
            same = file == path.name
            report.problems.append(f"{where}: duplicate of {'' if same else file + ' '}structure {j}"
                                   + ("" if same else " (a validation structure must not be a training structure)"))
        seen.setdefault(key, (path.name, i))


def _check_counts(where: Path, counts: dict | None, structures: list[Atoms], report: ValidationReport,
                  prefix: str = "counts") -> None:
    for name, value in count_summary(structures).items():
        stored = (counts or {}).get(name)
        if stored != value:
            report.problems.append(f"{where}: {prefix}.{name} is {stored!r}, file has {value!r}")


def validate(system: str, root: Path | None = None) -> ValidationReport:
    """Every structure parses, is labelled with finite values under the protocol, is unique,
    and the card's counts match the file; the same for the validation set, if there is one, whose
    structures must also differ from every training structure."""
    report = ValidationReport(system)
    directory = system_dir(system, root)
    try:
        structures = read_structures(directory / STRUCTURES_FILE)
    except DatasetError as exc:
        report.problems.append(str(exc))
        return report
    report.n_structures = len(structures)
    seen: dict[str, tuple[str, int]] = {}
    _check_structures(directory / STRUCTURES_FILE, structures, report, seen)
    validation: list[Atoms] = []
    if (directory / VALIDATION_FILE).exists():
        try:
            validation = read_structures(directory / VALIDATION_FILE)
        except DatasetError as exc:
            report.problems.append(str(exc))
        report.n_validation = len(validation)
        _check_structures(directory / VALIDATION_FILE, validation, report, seen)
    if (directory / REFERENCES_FILE).exists():  # the oxide's references: labelled, under the protocol, unique
        try:
            _check_structures(directory / REFERENCES_FILE, read_structures(directory / REFERENCES_FILE), report,
                              seen)
        except DatasetError as exc:
            report.problems.append(str(exc))
    try:
        card = load_card(system, root)
    except DatasetError as exc:
        report.problems.append(str(exc))
        return report
    _check_counts(directory / CARD_FILE, card.get("counts"), structures, report)
    if validation or "validation" in card:
        _check_counts(directory / CARD_FILE, card.get("validation", {}).get("counts"), validation, report,
                      "validation.counts")
    return report


def train_test_split(structures: list[Atoms], test_fraction: float = 0.25, seed: int = 0,
                     n_train: int | None = None) -> tuple[list[int], list[int]]:
    """Deterministic split of indices keyed by ``seed``.

    The test set is ``test_fraction`` of the structures; ``n_train`` (optional) takes
    the first ``n_train`` of the shuffled remainder, so training sets of growing size
    are nested for one seed.
    """
    n = len(structures)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    n_test = max(1, int(round(test_fraction * n)))
    if n - n_test < 1:
        raise ValueError(f"{n} structures are too few to split off a test set")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:n_test], order[n_test:]
    if n_train is not None:
        if n_train > len(train):
            raise ValueError(f"training size {n_train} is larger than the {len(train)} structures available for training")
        train = train[:n_train]
    return sorted(int(i) for i in train), sorted(int(i) for i in test)


def with_results(atoms: Atoms, energy: float, forces: np.ndarray) -> Atoms:
    """A copy of ``atoms`` with a single-point calculator holding ``energy`` and ``forces``."""
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=float(energy), forces=np.asarray(forces, dtype=float))
    return out
