"""Resumable, parallel DFT labelling of planned structures under the reference protocol.

Each structure is labelled by ``gpaw_runner.py`` in its own Debian-Python process
(one core each, ``workers`` at a time).  A finished structure is appended to the
dataset file by an atomic rewrite, and the card is refreshed the same way, so a
crash at any moment leaves either the old file or the new one.  GPAW results
are also kept in a scratch folder (``.labelling/``), so a structure whose DFT
finished but which was not yet appended is not computed twice.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from .._atomic import write_json_atomic, write_text_atomic
from .._interrupt import end_children, run_child
from .._lock import OutputLock
from ..paths import gpaw_python
from .generate import BLOCK_SCHEDULE, S_HEIGHT_RANGE, VARIANTS, PlanEntry, plan
from .io import (CARD_FILE, STRUCTURES_FILE, DatasetError, count_summary, read_structures,
                 structure_hash, to_extxyz_text, with_results)
from .protocol import PROTOCOL_V1, ReferenceProtocol, system_metal

GPAW_PYTHON = gpaw_python()
RUNNER = Path(__file__).with_name("gpaw_runner.py")

Relaxer = Callable[[Atoms], Atoms]


class LabellingError(RuntimeError):
    """GPAW failed on a structure."""


def gpaw_available(python: str = GPAW_PYTHON) -> tuple[bool, str]:
    """Whether ``python`` can import GPAW, and why not."""
    if shutil.which(python) is None and not Path(python).exists():
        return False, f"{python} not found"
    probe = subprocess.run([python, "-c", "import gpaw; print(gpaw.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return False, f"GPAW is not importable by {python} (install Debian's gpaw and gpaw-data)"
    return True, probe.stdout.strip()


def _gpaw_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # the suite's virtual environment must not leak into Debian's interpreter
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def run_gpaw(atoms: Atoms, scratch: Path, name: str, protocol: ReferenceProtocol = PROTOCOL_V1,
             python: str = GPAW_PYTHON) -> dict:
    """Label one structure; reuse a finished result for the same job from ``scratch``."""
    scratch.mkdir(parents=True, exist_ok=True)
    job = {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": [bool(p) for p in atoms.pbc],
        "protocol": protocol.to_dict(),
        "structure_hash": structure_hash(atoms),
    }
    job_path, result_path = scratch / f"{name}.job.json", scratch / f"{name}.result.json"
    if result_path.exists() and job_path.exists():
        try:
            if json.loads(job_path.read_text()) == json.loads(json.dumps(job)):
                return json.loads(result_path.read_text())
        except json.JSONDecodeError:
            pass  # a corrupt leftover: recompute
    write_json_atomic(job_path, job)
    proc = run_child([python, str(RUNNER), str(job_path), str(result_path)],  # ended on Ctrl-C / SIGTERM
                     capture_output=True, text=True, env=_gpaw_env())
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise LabellingError(f"GPAW failed on {name} (exit {proc.returncode}):\n{tail}")
    return json.loads(result_path.read_text())


def labelled_structure(atoms: Atoms, result: dict, protocol: ReferenceProtocol) -> Atoms:
    out = with_results(atoms, result["energy"], np.array(result["forces"]))
    out.set_constraint()
    out.info.update(
        protocol=protocol.name,
        gpaw_version=result["gpaw_version"],
        kpts=" ".join(str(k) for k in result["kpts"]),
        label_seconds=round(float(result["wall_seconds"]), 1),
        structure_hash=structure_hash(atoms),
    )
    return out


@dataclass
class BuildReport:
    system: str
    labelled: int = 0
    skipped_existing: int = 0
    deferred_relaxation: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    total: int = 0


def append_structures(path: Path, new: list[Atoms]) -> list[Atoms]:
    """Atomically rewrite ``path`` with ``new`` appended; return the full list."""
    existing = read_structures(path) if path.exists() else []
    structures = existing + new
    write_text_atomic(path, to_extxyz_text(structures))
    return structures


def _metal_or_name(system: str) -> str:
    try:
        return system_metal(system)
    except ValueError:  # a custom system (tests, user data)
        return system


def write_card(directory: Path, system: str, structures: list[Atoms], protocol: ReferenceProtocol,
               generator: dict) -> dict:
    seconds = [float(a.info["label_seconds"]) for a in structures if "label_seconds" in a.info]
    versions = sorted({str(a.info.get("gpaw_version")) for a in structures})
    card = {
        "system": system,
        "description": f"S adatoms, S–S dimers and small S clusters on {_metal_or_name(system)}(111), "
                       "3-layer slabs, labelled with DFT by uipbench's own pipeline",
        "protocol": protocol.to_dict(),
        "generator": generator,
        "counts": count_summary(structures),
        "labelling": {
            "median_minutes_per_structure": round(float(np.median(seconds)) / 60.0, 2) if seconds else None,
            "total_core_hours": round(sum(seconds) / 3600.0, 2),
            "cores_per_structure": 1,
        },
        "provenance": {
            "code": "GPAW",
            "gpaw_versions": versions,
            "generated_by": "uipbench dataset build",
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "files": {"structures": STRUCTURES_FILE},
    }
    write_json_atomic(directory / CARD_FILE, card)
    return card


def generator_settings(seed: int, relaxer_name: str | None) -> dict:
    return {
        "module": "uipbench.datasets.generate",
        "seed": seed,
        "block_schedule": [list(b) for b in BLOCK_SCHEDULE],
        "variants": list(VARIANTS),
        "distorted_s_height_range_angstrom": list(S_HEIGHT_RANGE),
        "relaxer": relaxer_name,
    }


def label_entries(entries: Iterable[PlanEntry], directory: Path, system: str, *, workers: int = 2,
                  protocol: ReferenceProtocol = PROTOCOL_V1, relaxer: Relaxer | None = None,
                  relaxer_name: str | None = None, seed: int = 0, python: str = GPAW_PYTHON,
                  progress: bool = True) -> BuildReport:
    """Label the entries not yet in ``directory/structures.extxyz``, ``workers`` at a time."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STRUCTURES_FILE
    existing = read_structures(path) if path.exists() else []
    done = {a.info.get("plan_id") for a in existing}
    entries = list(entries)
    report = BuildReport(system, total=len(entries))
    pending: list[PlanEntry] = []
    for entry in entries:
        if entry.plan_id in done:
            report.skipped_existing += 1
        elif entry.needs_relaxation and relaxer is None:
            report.deferred_relaxation += 1
        else:
            pending.append(entry)
    if report.deferred_relaxation:
        warnings.warn(f"{report.deferred_relaxation} 'relaxed' structures deferred: no relaxation backbone available",
                      stacklevel=2)
    scratch = directory / ".labelling"
    generator = generator_settings(seed, relaxer_name)

    def job(entry: PlanEntry) -> Atoms:
        atoms = entry.atoms.copy()
        if entry.needs_relaxation:
            atoms = relaxer(atoms)  # type: ignore[misc]
            atoms.info.update(entry.atoms.info, relaxed_with=relaxer_name)
        start = time.perf_counter()
        result = run_gpaw(atoms, scratch, entry.plan_id, protocol, python)
        result.setdefault("wall_seconds", time.perf_counter() - start)
        return labelled_structure(atoms, result, protocol)

    bar = tqdm(total=len(pending), desc=f"labelling {system}", unit="structure", disable=not progress,
               file=sys.stderr)
    structures = existing
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(job, e): e for e in pending}
        try:
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    entry = futures.pop(future)
                    try:
                        atoms = future.result()
                    except Exception as exc:  # keep the others going; report at the end
                        report.failed.append(f"{entry.plan_id}: {exc}")
                        bar.update(1)
                        continue
                    structures = append_structures(path, [atoms])
                    write_card(directory, system, structures, protocol, generator)
                    report.labelled += 1
                    report.seconds.append(float(atoms.info["label_seconds"]))
                    bar.update(1)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (uipbench._interrupt): cancel the pending, end GPAW
            end_children(wait_for=[f for f in futures if not f.cancel()])
            raise
    bar.close()
    if structures and not report.labelled:
        write_card(directory, system, structures, protocol, generator)
    return report


def build_dataset(system: str, n: int, *, root: Path | None = None, resume: bool = False, workers: int | None = None,
                  seed: int = 0, relaxer: Relaxer | None = None, relaxer_name: str | None = None,
                  protocol: ReferenceProtocol = PROTOCOL_V1, progress: bool = True) -> BuildReport:
    """Label the first ``n`` entries of the generator plan of ``system``."""
    from .io import system_dir

    system_metal(system)  # unknown names fail here, before any work
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    directory = system_dir(system, root)
    path = directory / STRUCTURES_FILE
    if path.exists() and path.stat().st_size and not resume:
        count = len(read_structures(path))
        raise DatasetError(f"{path} already holds {count} structures; pass --resume to extend it")
    ok, why = gpaw_available()
    if not ok:
        raise LabellingError(why)
    workers = workers or os.cpu_count() or 1
    with OutputLock(directory, command=f"uipbench dataset build {system} --n {n}"):  # one build per dataset
        return label_entries(plan(system, n, seed, protocol), directory, system, workers=workers,
                             protocol=protocol, relaxer=relaxer, relaxer_name=relaxer_name, seed=seed,
                             progress=progress)
