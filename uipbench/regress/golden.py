"""Golden files: is this backbone still the backbone we benchmarked?

``reports/baselines/<backbone>.json`` holds the backbone's energies and embedding fingerprints
(shape, norm, per-atom norms, mean, std, a few fixed entries) on fixed generator structures
(:data:`GOLDEN_STRUCTURES`, no DFT).  :func:`compare_golden` lists every quantity out of
tolerance, naming backbone, structure and quantity.

The code owns what is checked: the structures (:data:`GOLDEN_STRUCTURES`) and the tolerances
(:data:`GOLDEN_TOLERANCES`).  A golden file records both when written, for the reader, but a
check never takes them from the file (a loosened tolerance there would hide any change); a file
whose records differ from the code's is reported.  A golden file is only ever compared with
**its own** backbone: embeddings of different backbones (or widths) live in different spaces.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from numbers import Real
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..paths import golden_dir
from .stats import RegressError

GOLDEN_DIR = golden_dir()  # the shipped folder; golden_path() asks paths.golden_dir() at each call
GOLDEN_FORMAT = "uipbench-golden-v1"

#: (system, plan index) of the golden structures: 2x2 cells, S2 dimer (ideal), two dispersed S
#: (distorted), S3 cluster (distorted) on each metal.
GOLDEN_STRUCTURES: tuple[tuple[str, int], ...] = tuple((s, i) for s in ("cu-s", "ag-s", "au-s") for i in (0, 4, 13))
#: |current − golden| <= atol + rtol·|golden|; float32 models on CPU reproduce to ~1e-6, so these
#: absorb BLAS/threading differences and catch any change of weights, layer or package behaviour.
GOLDEN_TOLERANCES = {"energy_atol_ev": 1e-3, "energy_rtol": 1e-5, "embedding_atol": 1e-4, "embedding_rtol": 1e-4}
DEFAULT_GOLDEN_TOLERANCES = GOLDEN_TOLERANCES  # the name before the code owned them

_LIST, _NUMBER = (list,), (Real,)
_TYPE_NAMES = {str: "text", int: "an integer", Real: "a number", list: "a list", dict: "an object"}
#: the keys a golden file must hold, with their types (a missing or mistyped one is a clear error)
_FILE_KEYS = {"format": (str,), "backbone": (str,), "width": (int,), "structures": _LIST}
_STRUCTURE_KEYS = {"id": (str,), "system": (str,), "plan_index": (int,), "n_atoms": (int,),
                   "structure_hash": (str,), "energy_ev": _NUMBER, "embedding": (dict,)}
_FINGERPRINT_KEYS = {"shape": _LIST, "norm": _NUMBER, "atom_norms": _LIST, "mean": _NUMBER, "std": _NUMBER,
                     "entries": _LIST}


class GoldenMismatch(AssertionError):
    """A backbone no longer reproduces its golden file."""


def golden_path(name: str, directory: Path | None = None) -> Path:
    return (Path(directory) if directory else golden_dir()) / f"{name}.json"


def golden_structures(entries: Sequence[tuple[str, int]] = GOLDEN_STRUCTURES):
    """The fixed generator structures (deterministic, unlabelled) with their ids."""
    from ..datasets.generate import plan_entry

    out = []
    for system, index in entries:
        entry = plan_entry(system, index)
        out.append((entry.plan_id, system, index, entry.atoms))
    return out


def _fixed_entries(n_atoms: int, width: int) -> list[tuple[int, int]]:
    rows = sorted({0, n_atoms // 2, n_atoms - 1})
    cols = sorted({0, width // 2, width - 1})
    return [(i, j) for i in rows for j in cols]


def fingerprint(embedding: np.ndarray) -> dict[str, Any]:
    """Shape, Frobenius norm, per-atom norms, mean, std and a few fixed entries of an embedding."""
    e = np.asarray(embedding, dtype=np.float64)
    n, d = e.shape
    return {"shape": [int(n), int(d)], "norm": float(np.linalg.norm(e)),
            "atom_norms": [float(v) for v in np.linalg.norm(e, axis=1)],
            "mean": float(e.mean()), "std": float(e.std()),
            "entries": [[i, j, float(e[i, j])] for i, j in _fixed_entries(n, d)]}


def golden_record(backbone, entries: Sequence[tuple[str, int]] = GOLDEN_STRUCTURES,
                  random_weights: bool = False) -> dict[str, Any]:
    """Energies and embedding fingerprints of ``backbone`` on the golden structures (no cache)."""
    from ..datasets.io import structure_hash

    items = golden_structures(entries)
    batch = backbone.embed([atoms for *_, atoms in items])
    meta = batch.metadata.to_dict()
    structures = []
    for (plan_id, system, index, atoms), emb in zip(items, batch.structures):
        structures.append({"id": plan_id, "system": system, "plan_index": index, "formula": atoms.get_chemical_formula(),
                           "n_atoms": len(atoms), "structure_hash": structure_hash(atoms),
                           "energy_ev": float(emb.energy), "embedding": fingerprint(emb.embedding)})
    return {"format": GOLDEN_FORMAT, "backbone": meta["backbone"], "width": int(meta["width"]),
            "random_weights": bool(random_weights), "metadata": meta,
            "tolerances": dict(GOLDEN_TOLERANCES), "structures": structures}


def _require(record: Any, keys: dict[str, tuple[type, ...]], where: str) -> None:
    if not isinstance(record, dict):
        raise RegressError(f"{where}: expected an object, found {type(record).__name__}")
    for key, types in keys.items():
        if key not in record:
            raise RegressError(f"{where}: missing key {key!r}")
        value = record[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise RegressError(f"{where}: key {key!r} should be {' or '.join(_TYPE_NAMES[t] for t in types)}, "
                               f"found {type(value).__name__} {value!r:.40}")


def validate_golden(data: Any, where: str = "golden file") -> dict[str, Any]:
    """``data`` if it holds every key a check reads; else a RegressError naming ``where`` and the key."""
    _require(data, _FILE_KEYS, where)
    if data["format"] != GOLDEN_FORMAT:
        raise RegressError(f"{where}: not a golden file of format {GOLDEN_FORMAT} (found {data['format']!r})")
    if not data["structures"]:
        raise RegressError(f"{where}: holds no structures, so it checks nothing (regenerate it with "
                           f"`uipbench regress golden --write {data['backbone']}`)")
    for k, s in enumerate(data["structures"]):
        _require(s, _STRUCTURE_KEYS, f"{where}: structures[{k}]")
        _require(s["embedding"], _FINGERPRINT_KEYS, f"{where}: structures[{k}] ({s['id']}): embedding")
    return data


def load_golden(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RegressError(f"{path}: no golden file (write it with `uipbench regress golden --write NAME`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegressError(f"{path}: not a golden file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != GOLDEN_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise RegressError(f"{path}: not a golden file of format {GOLDEN_FORMAT} (found {found!r})")
    return validate_golden(data, str(path))


def _close(current: float, golden: float, atol: float, rtol: float) -> bool:
    return bool(np.isfinite(current)) and abs(current - golden) <= atol + rtol * abs(golden)


def _refuse_other_space(golden: dict[str, Any], current: dict[str, Any]) -> None:
    name = golden["backbone"]
    if current["backbone"] != name:
        raise RegressError(f"golden file of backbone {name!r} compared with backbone {current['backbone']!r}: "
                           f"embedding fingerprints are only comparable with the backbone's own golden file "
                           f"(compare different backbones with `uipbench regress --baseline ... --candidate ...`)")
    if int(current["width"]) != int(golden["width"]):
        raise RegressError(f"{name}: embedding width {current['width']} but the golden file has width "
                           f"{golden['width']}: fingerprints of different widths cannot be compared "
                           f"(the card's embedding layer changed? regenerate the golden file if intended)")


def _file_problems(golden: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs in the golden file as a whole: its recorded tolerances, the weights file."""
    name, problems = golden["backbone"], []
    stored = golden.get("tolerances")
    if stored is not None and stored != GOLDEN_TOLERANCES:
        changed = ", ".join(f"{k} {stored.get(k)!r} (code {v:g})" for k, v in GOLDEN_TOLERANCES.items()
                            if stored.get(k) != v) or f"extra keys {sorted(set(stored) - set(GOLDEN_TOLERANCES))}"
        problems.append(f"{name}: the golden file's recorded tolerances differ from the code's: {changed}; the "
                        f"code's are used (the file was edited, or written by another uipbench: regenerate it)")
    gsha, csha = golden.get("metadata", {}).get("weights_sha256"), current.get("metadata", {}).get("weights_sha256")
    if gsha and csha and gsha != csha:
        problems.append(f"{name}: weights sha256 {csha[:16]}…, golden {gsha[:16]}… (different weights file)")
    return problems


def _structure_problems(name: str, g: dict[str, Any], c: dict[str, Any]) -> list[str]:
    """Every quantity of structure ``c`` (current) out of the code's tolerances against ``g`` (golden)."""
    tol, sid, problems = GOLDEN_TOLERANCES, g["id"], []
    if c["structure_hash"] != g["structure_hash"]:
        return [f"{name}: structure {sid}: geometry hash {c['structure_hash']}, golden {g['structure_hash']} "
                f"(the generator changed, not the backbone: regenerate)"]
    if not _close(c["energy_ev"], g["energy_ev"], tol["energy_atol_ev"], tol["energy_rtol"]):
        problems.append(f"{name}: structure {sid}: energy {c['energy_ev']:.6f} eV, golden {g['energy_ev']:.6f} eV "
                        f"(diff {c['energy_ev'] - g['energy_ev']:+.3e} eV; tolerance "
                        f"{tol['energy_atol_ev']:g} eV + {tol['energy_rtol']:g}·|golden|)")
    ce, ge = c["embedding"], g["embedding"]
    if list(ce["shape"]) != list(ge["shape"]):
        return problems + [f"{name}: structure {sid}: embedding shape {ce['shape']}, golden {ge['shape']}"]
    current_entries = {(i, j): v for i, j, v in ce["entries"]}
    quantities = [("norm", ce["norm"], ge["norm"]), ("mean", ce["mean"], ge["mean"]), ("std", ce["std"], ge["std"])]
    quantities += [(f"norm of atom {k}", cv, gv) for k, (cv, gv) in enumerate(zip(ce["atom_norms"], ge["atom_norms"]))]
    quantities += [(f"entry [{i}, {j}]", current_entries.get((i, j), math.nan), gv) for i, j, gv in ge["entries"]]
    atol, rtol = tol["embedding_atol"], tol["embedding_rtol"]
    problems += [f"{name}: structure {sid}: embedding {label} {cv:.6g}, golden {gv:.6g} "
                 f"(diff {cv - gv:+.3e}; tolerance {atol:g} + {rtol:g}·|golden|)"
                 for label, cv, gv in quantities if not _close(cv, gv, atol, rtol)]
    return problems


def compare_golden(golden: dict[str, Any], current: dict[str, Any], where: str = "golden file") -> list[str]:
    """Every quantity of ``current`` out of the code's tolerances, one line each (empty = match).

    Refuses (RegressError) a golden file missing a key or holding no structures, and comparing
    different backbones or embedding widths: fingerprints are only meaningful against the
    backbone's own golden file.  A structure in one record but not the other is a problem.
    """
    validate_golden(golden, where)
    _refuse_other_space(golden, current)
    name = golden["backbone"]
    problems = _file_problems(golden, current)
    by_id = {s["id"]: s for s in current["structures"]}
    for g in golden["structures"]:
        if g["id"] not in by_id:
            problems.append(f"{name}: structure {g['id']}: missing from the current evaluation")
        else:
            problems += _structure_problems(name, g, by_id[g["id"]])
    known = {g["id"] for g in golden["structures"]}
    problems += [f"{name}: structure {sid}: evaluated now but not in the golden file (regenerate it)"
                 for sid in by_id if sid not in known]
    return problems


def assert_matches_golden(golden: dict[str, Any], current: dict[str, Any], path: Path | str = "") -> None:
    """Raise :class:`GoldenMismatch` listing every difference (quantity out of tolerance, structure, record)."""
    problems = compare_golden(golden, current, str(path) or "golden file")
    if problems:
        head = (f"{golden['backbone']} does not reproduce its golden file {path} "
                f"({len(problems)} difference{'' if len(problems) == 1 else 's'}):")
        shown = problems[:25] + ([f"... and {len(problems) - 25} more"] if len(problems) > 25 else [])
        raise GoldenMismatch("\n  ".join([head, *shown]))


def _load_for_golden(name: str, random_weights: bool | None, in_process: bool | None, download: bool = True):
    """(backbone, random_weights used): real weights when present (or, with ``download``, when the package's
    loader can fetch them), else the card's architecture with random weights from seed 0."""
    from ..adapters.card import WeightsError, get_card
    from ..adapters.registry import load_backbone, status

    card = get_card(name)
    if random_weights is None:
        if not download and not status(card).weights_present:
            random_weights = True
        else:
            try:
                return load_backbone(name, in_process=in_process), False
            except WeightsError:
                random_weights = True
    return load_backbone(name, in_process=in_process, random_weights=random_weights), bool(random_weights)


def write_golden(name: str, path: Path | None = None, random_weights: bool | None = None,
                 in_process: bool | None = None) -> Path:
    """Evaluate backbone ``name`` on the golden structures and write ``reports/baselines/<name>.json``.

    In-process when the backbone's package is importable here, else through its worker.
    ``random_weights=None``: real weights when present, else the card's architecture with
    random weights drawn from seed 0 (recorded in the file; the check then does the same).
    """
    from .._atomic import write_json_atomic

    backbone, used_random = _load_for_golden(name, random_weights, in_process)
    record = golden_record(backbone, random_weights=used_random)
    record["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    record["note"] = ("written by `uipbench regress golden --write`; checked by tests/backbones/test_golden.py "
                      "and `uipbench regress golden --check`; structures and tolerances are the code's, recorded "
                      "here for the reader" + ("; RANDOM weights (seed 0): the real weights were absent"
                                               if used_random else ""))
    path = Path(path) if path else golden_path(name)
    write_json_atomic(path, record)
    return path


def check_golden(name: str, path: Path | None = None, in_process: bool | None = None) -> dict[str, Any]:
    """Evaluate ``name`` on the code's golden structures, as its golden file was made (real or random
    weights), and raise :class:`GoldenMismatch` on any difference."""
    from ..adapters.card import get_card

    path = Path(path) if path else golden_path(name)
    golden = load_golden(path)
    get_card(name)
    if golden["backbone"] != name:
        raise RegressError(f"{path} is the golden file of {golden['backbone']!r}, not {name!r}")
    random_weights = bool(golden.get("random_weights"))
    backbone, _ = _load_for_golden(name, random_weights, in_process)
    current = golden_record(backbone, GOLDEN_STRUCTURES, random_weights)
    assert_matches_golden(golden, current, path)
    return current


def golden_energy_changes(baseline: str, candidate: str, directory: Path | None = None):
    """Per golden structure: candidate − baseline energy (meV/atom), from both golden files; None if absent.

    Energies are comparable across backbones (fingerprints are not).
    """
    import pandas as pd

    pb, pc = golden_path(baseline, directory), golden_path(candidate, directory)
    if not (pb.is_file() and pc.is_file()):
        return None
    gb, gc = load_golden(pb), load_golden(pc)
    cs = {s["id"]: s for s in gc["structures"]}
    rows = []
    for s in gb["structures"]:
        c = cs.get(s["id"])
        if c is None or c["structure_hash"] != s["structure_hash"]:
            continue
        rows.append({"structure": s["id"], "system": s["system"], "n_atoms": s["n_atoms"],
                     "baseline_ev": s["energy_ev"], "candidate_ev": c["energy_ev"],
                     "change_mev_per_atom": 1000.0 * (c["energy_ev"] - s["energy_ev"]) / s["n_atoms"]})
    return pd.DataFrame(rows) if rows else None
