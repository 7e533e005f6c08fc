"""How much of the validation-set error is the DFT's own k-point sampling, and the Δ with cell-referenced residuals.

    .venv/bin/python benchmarks/cell_reference.py [--backbones chgnet-0.3.0 sevennet-0]
        [--out reports/benchmarks/cell_reference.json]

Protocol v1 samples the Brillouin zone by a 20 Å rule (k_i = ceil(20 Å / |a_i|)) with 0.1 eV Fermi–Dirac
smearing.  Two cells of one surface then carry different sampling errors, while a backbone sees the same
local environments in both.  First step: the clean 3-layer slab of every cell shape of the training and
validation sets, labelled once per metal under protocol v1 (``datasets/<system>/clean_cells.extxyz``, resumable
through the labelling scratch folder), against the backbones' energies of the same slabs.

Second step, the strain energy of the rattled metal that the validation sets carry (σ 0.05–0.08 Å): the clean
2×2 slab with every atom displaced by a Gaussian of σ = 0.03, 0.05, 0.08 Å (seed 0), DFT against each backbone,
as energy above the ideal slab per atom (also in ``clean_cells.extxyz``, ``variant="rattled clean slab"``).

Third step, per backbone, training on the shipped structures of cu-s, ag-s and au-s pooled and scoring on every
validation set (never fitted on), energy MAE and mean signed error (meV/atom) per metal and pooled, for the raw
backbone + per-species offset and the energy-only Δ (atomic, sparse: the suite's defaults), two ways:

* **plain**: residuals E_DFT − E_backbone, as the suite fits them;
* **cell-referenced**: residuals less κ(S) = n_metal(S) · [e_clean(cell of S) − e_clean(3×3)], the clean slab's
  DFT energy per atom in the structure's cell against the 3×3 one; the prediction adds κ back.  This needs one
  DFT clean slab per cell shape, never the structure's own label.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from uipbench._atomic import write_json_atomic, write_text_atomic
from uipbench._lock import OutputLock
from uipbench.adapters.registry import load_backbone
from uipbench.cache import cached_embed
from uipbench.datasets.cells import make_cell_slab
from uipbench.datasets.io import load, load_validation, read_structures, system_dir, to_extxyz_text
from uipbench.datasets.label import labelled_structure, run_gpaw
from uipbench.datasets.protocol import PROTOCOL_V1
from uipbench.datasets.validation import CELLS
from uipbench.harness import metrics
from uipbench.harness.fit import dft_energy, fit_residuals

SYSTEMS = {"cu-s": "Cu", "ag-s": "Ag", "au-s": "Au"}
CLEAN_FILE = "clean_cells.extxyz"
REFERENCE_CELL = "3x3"
RATTLES = (0.03, 0.05, 0.08)  # Å


def clean_slabs(system: str, metal: str) -> dict[str, dict]:
    """DFT (protocol v1) of the clean slab in every cell shape, read from or added to ``clean_cells.extxyz``."""
    with OutputLock(system_dir(system), command="benchmarks/cell_reference.py"):  # beside `dataset build`
        return _clean_slabs(system, metal)


def _clean_slabs(system: str, metal: str) -> dict[str, dict]:
    path = system_dir(system) / CLEAN_FILE
    done = {_key(a): a for a in read_structures(path)} if path.is_file() else {}
    wanted = {name: make_cell_slab(metal, cell) for name, cell in CELLS.items()}
    for sigma in RATTLES:
        slab = make_cell_slab(metal, CELLS["2x2"])
        slab.rattle(stdev=sigma, seed=0)
        slab.info.update(rattle_angstrom=sigma)
        wanted[f"2x2 rattled {sigma}"] = slab
    for key, slab in wanted.items():
        if key not in done:
            cell = key.split()[0]
            slab.info.update(system=system, surface_cell=cell,
                             variant="rattled clean slab" if "rattle_angstrom" in slab.info else "clean slab")
            result = run_gpaw(slab, system_dir(system) / ".labelling", f"{system}-clean-{key.replace(' ', '-')}")
            done[key] = labelled_structure(slab, result, PROTOCOL_V1)
            write_text_atomic(path, to_extxyz_text(list(done.values())))  # every labelled slab, wanted or not
    return {name: {"n_atoms": len(a), "e_per_atom": a.get_potential_energy() / len(a), "kpts": a.info["kpts"],
                   "label_seconds": a.info["label_seconds"], "atoms": a} for name, a in done.items()}


def _key(atoms) -> str:
    sigma = atoms.info.get("rattle_angstrom")
    return atoms.info["surface_cell"] if sigma is None else f"{atoms.info['surface_cell']} rattled {sigma}"


def scores(predicted: np.ndarray, reference: np.ndarray, n_atoms: np.ndarray, system: list[str]) -> dict:
    errors = metrics.energy_errors_per_atom_mev(predicted, reference, n_atoms)
    system = np.array(system)
    out = {s: {"mae": metrics.mae(errors[system == s]), "signed": float(errors[system == s].mean()),
               "n": int((system == s).sum())} for s in SYSTEMS if (system == s).any()}
    out["pooled"] = {"mae": metrics.mae(errors), "signed": float(errors.mean()), "n": int(errors.size)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["chgnet-0.3.0", "sevennet-0"])
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/cell_reference.json"))
    args = parser.parse_args()

    clean = {s: clean_slabs(s, m) for s, m in SYSTEMS.items()}
    table = {s: {c: {k: v for k, v in d.items() if k != "atoms"} for c, d in cells.items()} for s, cells in clean.items()}
    for s, cells in table.items():
        ref = cells[REFERENCE_CELL]["e_per_atom"]
        for key, d in cells.items():
            if "rattled" in key:
                d["above_ideal_2x2_mev_per_atom"] = 1000.0 * (d["e_per_atom"] - cells["2x2"]["e_per_atom"])
            else:
                d["minus_3x3_mev_per_atom"] = 1000.0 * (d["e_per_atom"] - ref)

    def kappa(atoms, system: str) -> float:
        cell = atoms.info["surface_cell"]  # the ideal clean slab of that cell (not a rattled one)
        n_metal = sum(1 for z in atoms.numbers if z != 16)
        return n_metal * (clean[system][cell]["e_per_atom"] - clean[system][REFERENCE_CELL]["e_per_atom"])

    train = [(s, a) for s in SYSTEMS for a in load(s)]
    valid = [(s, a) for s in SYSTEMS for a in load_validation(s)]
    result = {"clean_slabs": table, "reference_cell": REFERENCE_CELL, "backbones": {},
              "machine": platform.machine(), "training": len(train), "validation": len(valid)}
    for name in args.backbones:
        backbone = load_backbone(name)
        start = time.perf_counter()
        e_train = cached_embed(backbone, [a for _, a in train]).structures
        e_valid = cached_embed(backbone, [a for _, a in valid]).structures
        e_clean = cached_embed(backbone, [d["atoms"] for s in SYSTEMS for d in clean[s].values()]).energies
        k = 0
        backbone_clean = {}
        for s in SYSTEMS:
            for c, d in clean[s].items():
                backbone_clean.setdefault(s, {})[c] = float(e_clean[k]) / d["n_atoms"]
                k += 1
            for c in list(backbone_clean[s]):
                if "rattled" in c:
                    backbone_clean[s][f"{c}: above ideal 2x2, meV/atom"] = \
                        1000.0 * (backbone_clean[s][c] - backbone_clean[s]["2x2"])
        y_train = np.array([dft_energy(a) for _, a in train]) - np.array([e.energy for e in e_train])
        dft_valid = np.array([dft_energy(a) for _, a in valid])
        bb_valid = np.array([e.energy for e in e_valid])
        n_valid = np.array([len(a) for _, a in valid])
        k_train = np.array([kappa(a, s) for s, a in train])
        k_valid = np.array([kappa(a, s) for s, a in valid])
        runs = {}
        for mode, shift_train, shift_valid in (("plain", 0.0, 0.0), ("cell-referenced", k_train, k_valid)):
            model = fit_residuals(list(e_train), y_train - shift_train)
            base = bb_valid + model.predict_baseline(list(e_valid)) + shift_valid
            delta = bb_valid + model.predict(list(e_valid)) + shift_valid
            runs[mode] = {"raw_plus_offset": scores(base, dft_valid, n_valid, [s for s, _ in valid]),
                          "delta": scores(delta, dft_valid, n_valid, [s for s, _ in valid])}
        result["backbones"][name] = {"runs": runs, "clean_slab_e_per_atom": backbone_clean,
                                     "seconds": time.perf_counter() - start}
        print(name, json.dumps({m: {k2: {s: round(v["mae"], 1) for s, v in r.items()} for k2, r in run.items()}
                                for m, run in runs.items()}))
    write_json_atomic(args.out, result)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
