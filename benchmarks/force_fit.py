"""Energy-only against energy+force Δ-fits at equal training structures, scored on the validation sets.

    .venv/bin/python benchmarks/force_fit.py --backbone chgnet-0.3.0 [--sizes 24 48 96 max] [--seeds 0 1 2]
        [--forces adsorbate] [--out reports/benchmarks/force_fit-chgnet-0.3.0.json]

Training data: the shipped structures of cu-s, ag-s and au-s pooled (random subsets of ``--sizes``, one per
seed, the same subset for both fits); scored on every system's ``validation.extxyz`` (never fitted on):
energy MAE (meV/atom) per metal and pooled for the raw backbone (plus its per-species offset and mean fitted on
the same training structures: DFT and backbone energies have different zeros), the energy-only Δ and the energy+force Δ,
and the force MAE (meV/Å) on the labelled atoms of the validation structures (``--forces``: the adsorbate
atoms by default), raw and both Δs, with Δ-forces from the model's design rows (:mod:`uipbench.delta.forces`).
Same model otherwise: atomic aggregation, sparse, 500 inducing atoms, hyperparameters by the likelihood.
Embeddings and the Jacobians' displaced embeddings go through the embedding cache (the backbone's worker).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

from uipbench._atomic import write_json_atomic
from uipbench.adapters.registry import load_backbone
from uipbench.cache import cached_embed
from uipbench.datasets.io import load, load_validation, read_structures
from uipbench.delta.gpr import DeltaGPR
from uipbench.delta.jacobian import force_labels
from uipbench.harness import metrics
from uipbench.harness.fit import dft_energy, dft_forces

SYSTEMS = ("cu-s", "ag-s", "au-s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="chgnet-0.3.0")
    parser.add_argument("--sizes", nargs="+", default=["24", "48", "96", "max"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--forces", default="adsorbate", choices=("adsorbate", "all"))
    parser.add_argument("--minima", type=Path, default=Path("reports/search-benchmark/labelled.extxyz"),
                        help="DFT-labelled search minima (never fitted on): pair ordering and energy MAE on them")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(f"reports/benchmarks/force_fit-{args.backbone}.json")

    train = [a for s in SYSTEMS for a in load(s)]
    train_system = [s for s in SYSTEMS for _ in load(s)]
    valid = [a for s in SYSTEMS for a in load_validation(s)]
    valid_system = [s for s in SYSTEMS for _ in load_validation(s)]
    backbone = load_backbone(args.backbone)

    minima = read_structures(args.minima) if args.minima and args.minima.is_file() else []
    t0 = time.perf_counter()
    emb_minima = cached_embed(backbone, minima).structures if minima else []
    y_minima = np.array([dft_energy(a) for a in minima]) - np.array([e.energy for e in emb_minima])
    X_minima = [(e.embedding, e.numbers) for e in emb_minima]
    formula = [a.get_chemical_formula() for a in minima]
    emb_train = cached_embed(backbone, train, forces=True).structures
    emb_valid = cached_embed(backbone, valid, forces=True).structures
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()
    lab_train = force_labels(backbone, train, dft_forces(train), [e.forces for e in emb_train], args.forces)
    lab_valid = force_labels(backbone, valid, dft_forces(valid, "validation set"), [e.forces for e in emb_valid],
                             args.forces)
    t_jacobian = time.perf_counter() - t0
    n_displaced = sum(6 * len(lab.atoms) for lab in [*lab_train, *lab_valid])

    y_train = np.array([dft_energy(a) for a in train]) - np.array([e.energy for e in emb_train])
    y_valid = np.array([dft_energy(a) for a in valid]) - np.array([e.energy for e in emb_valid])
    n_valid = np.array([len(a) for a in valid])
    X_train = [(e.embedding, e.numbers) for e in emb_train]
    X_valid = [(e.embedding, e.numbers) for e in emb_valid]

    def energy_mae(pred: np.ndarray) -> dict[str, float]:
        err = metrics.energy_errors_per_atom_mev(pred, y_valid, n_valid)
        res = {s: metrics.mae(err[[v == s for v in valid_system]]) for s in SYSTEMS if s in valid_system}
        res["all"] = metrics.mae(err)
        return res

    labelled = [i for i, lab in enumerate(lab_valid) if len(lab.atoms)]

    def force_mae(model: DeltaGPR | None) -> float:
        """meV/Å on the labelled atoms: the residual F_DFT − F_backbone against the Δ-forces (0 for raw)."""
        reference = [lab_valid[i].residual for i in labelled]
        predicted = ([np.zeros_like(r) for r in reference] if model is None else
                     model.predict_forces([X_valid[i] for i in labelled], [lab_valid[i] for i in labelled]))
        return 1000.0 * metrics.force_mae(predicted, reference)

    def on_minima(delta_pred: np.ndarray) -> dict:
        """Same-formula pairs of the minima ordered as DFT orders them (ties in DFT < 1 meV left out), and the
        relative-energy MAE of the metric registry (:func:`uipbench.harness.metrics.relative_energy_mae_mev`)."""
        if not minima:
            return {}
        dft = np.array([dft_energy(a) for a in minima])
        model = dft - y_minima + delta_pred  # E_backbone + Δ
        res: dict = {}
        for f in sorted(set(formula)):
            idx = np.array([i for i, g in enumerate(formula) if g == f])
            i, j = np.triu_indices(len(idx), 1)
            d_dft = dft[idx][i] - dft[idx][j]
            d_model = model[idx][i] - model[idx][j]
            keep = np.abs(d_dft) > 1e-3
            res[f] = {"pairs": int(keep.sum()), "ordered_as_dft": float(np.mean(np.sign(d_dft[keep]) == np.sign(d_model[keep]))),
                      "relative_energy_mae_meV": metrics.relative_energy_mae_mev(model[idx], dft[idx],
                                                                                 [f] * len(idx))}
        return res

    rows = []
    # raw forces need no offset; raw energies are scored per run, after the offset fitted on its structures
    raw = {"force_mae_meV_per_A": force_mae(None)}
    for size in args.sizes:
        n = len(train) if size == "max" else int(size)
        for seed in (args.seeds if n < len(train) else args.seeds[:1]):
            take = np.sort(np.random.default_rng(seed).permutation(len(train))[:n])
            X = [X_train[i] for i in take]
            y = y_train[take]
            row = {"size": n, "seed": seed, "systems_in_training": sorted({train_system[i] for i in take})}
            for name, forces in (("energy", None), ("energy+forces", [lab_train[i] for i in take])):
                t0 = time.perf_counter()
                model = DeltaGPR("atomic", sparse=True, random_state=seed).fit(X, y, forces=forces)
                fit_s = time.perf_counter() - t0
                if forces is None:  # the raw backbone up to its per-species offset fitted on the same structures
                    row["raw"] = {"energy_mae_meV_per_atom": energy_mae(model.predict_baseline(X_valid)),
                                  "minima": on_minima(model.predict_baseline(X_minima)) if minima else {}}
                row[name] = {"energy_mae_meV_per_atom": energy_mae(model.predict(X_valid)),
                             "force_mae_meV_per_A": force_mae(model), "fit_seconds": fit_s,
                             "minima": on_minima(model.predict(X_minima)) if minima else {},
                             "length_scale": model.length_scale_, "noise_level": model.noise_level_,
                             "force_noise_level": getattr(model, "force_noise_level_", None),
                             "force_labels": getattr(model, "n_force_labels_", 0)}
            rows.append(row)
            print(n, seed, "raw", round(row["raw"]["energy_mae_meV_per_atom"]["all"], 2),
                  "E", round(row["energy"]["energy_mae_meV_per_atom"]["all"], 2),
                  "E+F", round(row["energy+forces"]["energy_mae_meV_per_atom"]["all"], 2),
                  "| F raw", round(raw["force_mae_meV_per_A"], 1), "E", round(row["energy"]["force_mae_meV_per_A"], 1),
                  "E+F", round(row["energy+forces"]["force_mae_meV_per_A"], 1),
                  "| minima ordered", *[round(np.mean([v["ordered_as_dft"] for v in row[k]["minima"].values()]), 2)
                                        for k in ("raw", "energy", "energy+forces") if row[k]["minima"]], flush=True)
    report = {
        "backbone": args.backbone, "forces_on": args.forces, "training_systems": list(SYSTEMS),
        "training_structures": len(train), "validation_structures": {s: valid_system.count(s) for s in SYSTEMS},
        "minima": {"file": str(args.minima), "structures": len(minima),
                   "formulas": {f: formula.count(f) for f in sorted(set(formula))}},
        "raw": raw, "runs": rows,
        "cost": {"embed_seconds": t_embed, "jacobian_seconds_wall": t_jacobian, "displaced_embeddings": n_displaced,
                 "structures_with_jacobian": len(train) + len(valid),
                 "max_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
        "machine": f"{platform.node()}, 2 cores shared with structure searches",
        "note": "validation force MAE on the labelled (adsorbate) atoms only; the Jacobian wall time includes "
                "the worker start and any cache misses (a second run reads them from the cache)",
    }
    write_json_atomic(out, report)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
