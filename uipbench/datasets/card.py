"""The dataset card (``card.json``) of a system: the training structures' card, its ``validation`` section
and (the Cu oxide) its ``references`` section.

Written by the labelling driver (:mod:`uipbench.datasets.label`) after every appended structure, by an
atomic rewrite; the training build, the validation build and the references build each rewrite their own
part only.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from ase import Atoms

from .._atomic import write_json_atomic
from .generate import BLOCK_SCHEDULE, S_HEIGHT_RANGE, VARIANTS
from .io import CARD_FILE, REFERENCES_FILE, STRUCTURES_FILE, VALIDATION_FILE, count_summary
from .protocol import ReferenceProtocol, system_metal


#: what a shipped system's structures are, where it is not the S generator's
DESCRIPTIONS = {
    "cu-o": "Cu_nO_m overlayers and the clean slab on Cu(111) in the '8' cell (|3 2; -1 2|), 3-layer slabs: DFT "
            "single points at the geometries of raw-backbone search minima (variant 'search minimum') and DFT relaxations "
            "of some of them (variant 'DFT relaxation'), labelled by uipbench's own pipeline",
}


def _description(system: str) -> str:
    return DESCRIPTIONS.get(system, f"S adatoms, S–S dimers and small S clusters on {_metal_or_name(system)}(111), "
                                    "3-layer slabs, labelled with DFT by uipbench's own pipeline")


def _metal_or_name(system: str) -> str:
    try:
        return system_metal(system)
    except ValueError:  # a custom system (tests, user data)
        return system


def _labelling_summary(structures: list[Atoms]) -> dict:
    timed = [a for a in structures if "label_seconds" in a.info]
    seconds = [float(a.info["label_seconds"]) for a in timed]
    cores = sorted({int(a.info.get("label_cores", 1)) for a in timed}) or [1]
    return {
        "median_minutes_per_structure": round(float(np.median(seconds)) / 60.0, 2) if seconds else None,
        "total_core_hours": round(sum(float(a.info["label_seconds"]) * int(a.info.get("label_cores", 1))
                                      for a in timed) / 3600.0, 2),
        "cores_per_structure": cores[0] if len(cores) == 1 else cores,
    }


def _existing_card(directory: Path) -> dict:
    try:
        return json.loads((directory / CARD_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_card(directory: Path, system: str, structures: list[Atoms], protocol: ReferenceProtocol,
               generator: dict) -> dict:
    """The card of the training structures (a ``validation`` section already there is kept)."""
    versions = sorted({str(a.info.get("gpaw_version")) for a in structures})
    before = _existing_card(directory)
    card = {
        "system": system,
        "description": _description(system),
        "protocol": protocol.to_dict(),
        "generator": generator,
        "counts": count_summary(structures),
        "labelling": _labelling_summary(structures),
        "provenance": {
            "code": "GPAW",
            "gpaw_versions": versions,
            "generated_by": generator.get("generated_by", "uipbench dataset build"),
            "updated": _now(),
        },
        "files": {"structures": STRUCTURES_FILE},
    }
    for section, file in (("validation", VALIDATION_FILE), ("references", REFERENCES_FILE)):
        if section in before:
            card[section] = before[section]
            card["files"][section] = file
    write_json_atomic(directory / CARD_FILE, card)
    return card


def write_validation_card(directory: Path, system: str, structures: list[Atoms], protocol: ReferenceProtocol,
                          generator: dict) -> dict:
    """The card's ``validation`` section (counts, generator settings, labelling, provenance); the rest
    of the card, written by the training build, is left as it is."""
    card = _existing_card(directory) or {"system": system, "protocol": protocol.to_dict()}
    card["validation"] = {
        "purpose": "independent validation set: scored on, never fitted on or used to choose a model",
        "protocol": protocol.name,
        "generator": generator,
        "counts": count_summary(structures),
        "labelling": _labelling_summary(structures),
        "provenance": {"code": "GPAW", "gpaw_versions": sorted({str(a.info.get("gpaw_version")) for a in structures}),
                       "generated_by": "uipbench dataset build-validation", "updated": _now()},
    }
    card.setdefault("files", {})["validation"] = VALIDATION_FILE
    write_json_atomic(directory / CARD_FILE, card)
    return card


def write_references_card(directory: Path, system: str, structures: list[Atoms], protocol: ReferenceProtocol,
                          generator: dict) -> dict:
    """The card's ``references`` section (each reference structure's id, kind, formula, energy and magnetic
    moment; generator settings, labelling, provenance); the rest of the card is left as it is."""
    card = _existing_card(directory) or {"system": system, "protocol": protocol.to_dict()}
    card["references"] = {
        "purpose": "reference energies of the thermodynamics (bulk Cu, the O2 molecule, bulk Cu2O): never "
                   "fitted on",
        "protocol": protocol.name,
        "generator": generator,
        "structures": [{"plan_id": a.info.get("plan_id"), "reference": a.info.get("reference"),
                        "kind": a.info.get("dft_kind"), "formula": a.get_chemical_formula(),
                        "energy": float(a.get_potential_energy()),
                        **({"magmom": float(a.info["dft_magmom"])} if "dft_magmom" in a.info else {})}
                       for a in structures],
        "labelling": _labelling_summary(structures),
        "provenance": {"code": "GPAW", "gpaw_versions": sorted({str(a.info.get("gpaw_version")) for a in structures}),
                       "generated_by": "uipbench oxide references", "updated": _now()},
    }
    card.setdefault("files", {})["references"] = REFERENCES_FILE
    write_json_atomic(directory / CARD_FILE, card)
    return card


#: the files a labelling run may write, each with the writer of its part of the card
CARD_WRITERS = {STRUCTURES_FILE: write_card, VALIDATION_FILE: write_validation_card,
                REFERENCES_FILE: write_references_card}


def generator_settings(seed: int, relaxer_name: str | None) -> dict:
    return {
        "module": "uipbench.datasets.generate",
        "seed": seed,
        "block_schedule": [list(b) for b in BLOCK_SCHEDULE],
        "variants": list(VARIANTS),
        "distorted_s_height_range_angstrom": list(S_HEIGHT_RANGE),
        "relaxer": relaxer_name,
    }
