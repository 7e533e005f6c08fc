"""``uipbench demo``: embed the shipped structures with every backbone whose weights are present."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .adapters.registry import all_status, load_backbone
from .cache import EmbeddingCache, cached_embed
from .datasets.io import load
from .datasets.protocol import SYSTEMS


@dataclass
class DemoRow:
    backbone: str
    system: str
    structures: int
    atoms: int
    width: int
    mean_energy_per_atom: float
    seconds: float


def run_demo(log=print) -> list[DemoRow]:
    datasets = {}
    for system in SYSTEMS:
        try:
            structures = load(system)
        except Exception as exc:  # a missing system is reported, not fatal
            log(f"uipbench: skipping {system}: {exc}")
            continue
        if structures:
            datasets[system] = structures
    rows = []
    for status in all_status():
        if not status.weights_present:
            log(f"uipbench: skipping {status.name}: {status.hint}")
            continue
        backbone = load_backbone(status.name)
        everything = [a for structures in datasets.values() for a in structures]
        start = time.perf_counter()
        batch = cached_embed(backbone, everything, EmbeddingCache())  # one worker call per backbone
        seconds = time.perf_counter() - start
        offset = 0
        for system, structures in datasets.items():
            part = batch.structures[offset:offset + len(structures)]
            offset += len(structures)
            n_atoms = sum(s.n_atoms for s in part)
            energy = sum(s.energy for s in part)
            rows.append(DemoRow(status.name, system, len(part), n_atoms, batch.metadata.width,
                                energy / n_atoms, seconds * len(structures) / len(everything)))
    return rows


def format_rows(rows: list[DemoRow]) -> str:
    lines = ["| backbone | system | structures | atoms | embedding width | mean E/atom (eV) | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.backbone} | {r.system} | {r.structures} | {r.atoms} | {r.width} | "
                     f"{r.mean_energy_per_atom:.4f} | {r.seconds:.1f} |")
    return "\n".join(lines)
