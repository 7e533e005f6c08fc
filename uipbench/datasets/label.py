"""Resumable, parallel DFT labelling of planned structures under the reference protocol
(the training plan into ``structures.extxyz``, the validation plan into ``validation.extxyz``).

Each structure is labelled by ``gpaw_runner.py`` in its own Debian-Python process
(one core each, or ``mpirun -np N`` with ``mpi_ranks=N``), ``workers`` at a time.
One structure's labelling is a pure task (:func:`label_structure`: a :class:`LabelTask`
in, a :class:`LabelRecord` out, a GPAW failure being a failed record), so it runs on any
``concurrent.futures.Executor``: local threads by default, Dask workers
(:mod:`uipbench.executors`) on a cluster.  Only the driver (:func:`label_entries`) writes
the dataset: a finished structure is appended by an atomic rewrite, and the card is
refreshed the same way, so a crash at any moment leaves either the old file or the new
one; a result is taken once per plan id, however often a task ran.  GPAW results are
also kept in a scratch folder (``.labelling/``, on the file system the workers share),
so a structure whose DFT finished but which was not yet appended, or whose worker died
after GPAW finished, is not computed twice.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
from ase import Atoms
from tqdm.auto import tqdm

from .._atomic import write_json_atomic, write_text_atomic
from .._interrupt import end_children, run_child
from .._lock import OutputLock
from ..paths import gpaw_python
from .card import CARD_WRITERS, generator_settings, write_card, write_validation_card  # noqa: F401 (re-exported)
from .generate import PlanEntry, plan
from .io import (STRUCTURES_FILE, VALIDATION_FILE, DatasetError, read_structures, structure_hash, to_extxyz_text,
                 with_results)
from .protocol import KIND_KEY, PROTOCOL_V1, ReferenceProtocol, kind_settings, system_metal
from .validation import ValidationEntry, validation_generator_settings, validation_plan

GPAW_PYTHON = gpaw_python()
RUNNER = Path(__file__).with_name("gpaw_runner.py")

Relaxer = Callable[[Atoms], Atoms]
#: ``atoms.info`` key of the total magnetic moment (μB) a spin-polarised labelling converged to
MAGMOM_KEY = "dft_magmom"
#: ``atoms.info`` keys that make a structure's labelling a DFT relaxation (BFGS to this fmax, at most so many steps)
RELAX_FMAX, RELAX_STEPS = "dft_relax_fmax", "dft_relax_max_steps"

if TYPE_CHECKING:
    from ..executors import ExecutorSpec


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


@dataclass(frozen=True)
class LabelSettings:
    """How GPAW is run for one structure: its interpreter and MPI ranks (cores) per structure."""

    python: str = GPAW_PYTHON
    mpi_ranks: int = 1
    mpirun: str = "mpirun"

    def __post_init__(self) -> None:
        if self.mpi_ranks < 1:
            raise ValueError(f"MPI ranks per structure must be at least 1, got {self.mpi_ranks}")

    def command(self, job_path: Path, result_path: Path) -> list[str]:
        """The runner's command line (``mpirun -np N`` around it when N > 1)."""
        runner = [self.python, str(RUNNER), str(job_path), str(result_path)]
        return runner if self.mpi_ranks == 1 else [self.mpirun, "-np", str(self.mpi_ranks), *runner]


def job_for(atoms: Atoms, protocol: ReferenceProtocol = PROTOCOL_V1) -> dict:
    """What determines a structure's DFT result: the structure, the protocol and, for a bulk crystal or a
    molecule (``atoms.info["dft_kind"]``), the settings of its kind (:func:`kind_settings`); a slab's job
    has no such keys, so it is the job v1 always wrote."""
    job = {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": atoms.cell.array.tolist(),
        "pbc": [bool(p) for p in atoms.pbc],
        "protocol": protocol.to_dict(),
        "structure_hash": structure_hash(atoms),
    }
    job.update(kind_settings(str(atoms.info.get(KIND_KEY, "slab")), tuple(bool(p) for p in atoms.pbc),
                             tuple(float(x) for x in atoms.cell.lengths()),
                             [float(m) for m in atoms.get_initial_magnetic_moments()], protocol))
    if is_relaxation(atoms):  # a DFT relaxation (gpaw_runner.relax), the atoms' FixAtoms held
        from ase.constraints import FixAtoms

        fixed = sorted(int(i) for c in atoms.constraints if isinstance(c, FixAtoms) for i in c.get_indices())
        job["relax"] = {"fmax": float(atoms.info[RELAX_FMAX]), "steps": int(atoms.info[RELAX_STEPS]), "fixed": fixed}
    return job


def is_relaxation(atoms: Atoms) -> bool:
    """Whether labelling ``atoms`` is a DFT relaxation (both of its keys in ``info``; one alone is an error)."""
    keys = [k for k in (RELAX_FMAX, RELAX_STEPS) if k in atoms.info]
    if len(keys) == 1:
        missing = RELAX_STEPS if keys == [RELAX_FMAX] else RELAX_FMAX
        raise ValueError(f"{atoms.info.get('plan_id', 'a structure')}: a DFT relaxation needs both "
                         f"{RELAX_FMAX!r} and {RELAX_STEPS!r} in its info; {missing!r} is missing")
    return bool(keys)


def relaxed_by_dft(atoms: Atoms, result: dict) -> Atoms:
    """The structure a DFT relaxation's ``result`` ended at, with what the relaxation did in ``info`` (and not
    the keys that asked for it: labelling it again is a single point)."""
    out = atoms.copy()
    target = out.info.pop(RELAX_FMAX, None)
    out.info.pop(RELAX_STEPS, None)
    if target is not None:
        out.info["dft_relax_target_fmax"] = float(target)
    out.positions = np.asarray(result["positions"], dtype=float)
    out.info.update(dft_relax_initial_energy=float(result["initial_energy"]), dft_relax_steps=int(result["steps"]),
                    dft_relax_converged=bool(result["converged"]), dft_relax_final_fmax=float(result["fmax"]))
    return out


def run_gpaw(atoms: Atoms, scratch: Path, name: str, protocol: ReferenceProtocol = PROTOCOL_V1,
             python: str = GPAW_PYTHON, settings: LabelSettings | None = None) -> dict:
    """Label one structure; reuse a finished result for the same job from ``scratch``.

    The job file (``<name>.job.json``) holds only what determines the result, so scratch
    results of earlier runs, whatever their MPI ranks, are reused.
    """
    settings = settings or LabelSettings(python)
    job = job_for(atoms, protocol)
    scratch.mkdir(parents=True, exist_ok=True)
    job_path, result_path = scratch / f"{name}.job.json", scratch / f"{name}.result.json"
    if result_path.exists() and job_path.exists():
        try:
            if json.loads(job_path.read_text()) == json.loads(json.dumps(job)):
                return json.loads(result_path.read_text())
        except json.JSONDecodeError:
            pass  # a corrupt leftover: recompute
    write_json_atomic(job_path, job)
    proc = run_child(settings.command(job_path, result_path), capture_output=True, text=True,  # ended on
                     env=_gpaw_env())  # Ctrl-C / SIGTERM, not waited for
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise LabellingError(f"GPAW failed on {name} (exit {proc.returncode}):\n{tail}")
    return json.loads(result_path.read_text())


@dataclass
class LabelTask:
    """One structure to label: everything a worker needs, nothing it writes besides scratch."""

    plan_id: str
    atoms: Atoms
    protocol: ReferenceProtocol
    scratch: Path
    settings: LabelSettings = field(default_factory=LabelSettings)
    relaxer: Relaxer | None = None
    relaxer_name: str | None = None


@dataclass
class LabelRecord:
    """The outcome of one :class:`LabelTask`: the structure labelled (relaxed where it was to be),
    its DFT energy, forces and timing, or ``status="failed"`` and the error."""

    plan_id: str
    atoms: Atoms
    status: str
    energy: float | None = None
    forces: list[list[float]] | None = None
    gpaw_version: str | None = None
    kpts: list[int] | None = None
    wall_seconds: float | None = None
    cores: int = 1
    error: str = ""
    #: total magnetic moment (μB) of a spin-polarised calculation (a molecule); None for the rest
    magmom: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def result(self) -> dict:
        """The runner's result dict (what :func:`labelled_structure` takes)."""
        result = {"energy": self.energy, "forces": self.forces, "gpaw_version": self.gpaw_version,
                  "kpts": self.kpts, "wall_seconds": self.wall_seconds}
        if self.magmom is not None:
            result["magmom"] = self.magmom
        return result


def relax_task(task: LabelTask) -> LabelTask:
    """The task with its structure relaxed by its relaxer (unchanged when it has none)."""
    if task.relaxer is None:
        return task
    atoms = task.relaxer(task.atoms.copy())
    atoms.info.update(task.atoms.info, relaxed_with=task.relaxer_name)
    return replace(task, atoms=atoms, relaxer=None)


def label_structure(task: LabelTask) -> LabelRecord:
    """Label one structure (a pure task: runs on any executor).  A failure of the relaxation
    or of GPAW is a failed record, not an exception."""
    atoms = task.atoms
    try:
        task = relax_task(task)
        atoms = task.atoms
        start = time.perf_counter()
        result = run_gpaw(atoms, task.scratch, task.plan_id, task.protocol, settings=task.settings)
        result.setdefault("wall_seconds", time.perf_counter() - start)
        if is_relaxation(atoms):
            if not result["converged"]:
                raise LabellingError(f"DFT relaxation not converged in {result['steps']} steps (fmax "
                                     f"{result['fmax']:.3f} eV/Å, from {result['initial_energy']:.4f} to "
                                     f"{result['energy']:.4f} eV so far); its steps are kept: run it again with "
                                     f"more steps to go on")
            atoms = relaxed_by_dft(atoms, result)
        magmom = result.get("magmom")
        return LabelRecord(task.plan_id, atoms, "ok", float(result["energy"]), result["forces"],
                           str(result["gpaw_version"]), list(result["kpts"]), float(result["wall_seconds"]),
                           task.settings.mpi_ranks, magmom=None if magmom is None else float(magmom))
    except Exception as exc:  # noqa: BLE001 - any failure of one structure is that structure's record
        return LabelRecord(task.plan_id, atoms, "failed", cores=task.settings.mpi_ranks,
                           error=str(exc) or type(exc).__name__)


def labelled_structure(atoms: Atoms, result: dict, protocol: ReferenceProtocol, cores: int = 1) -> Atoms:
    out = with_results(atoms, result["energy"], np.array(result["forces"]))
    out.set_constraint()
    out.info.update(
        protocol=protocol.name,
        gpaw_version=result["gpaw_version"],
        kpts=" ".join(str(k) for k in result["kpts"]),
        label_seconds=round(float(result["wall_seconds"]), 1),
        structure_hash=structure_hash(atoms),
    )
    if cores > 1:  # one-core structures carry no such key (as before MPI ranks were a setting)
        out.info["label_cores"] = int(cores)
    if result.get("magmom") is not None:  # spin-polarised (a molecule): the moment it converged to (μB; not
        out.info[MAGMOM_KEY] = round(float(result["magmom"]), 4)  # "magmom", which extxyz reads as a result)
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
    #: results that arrived for a structure already taken (a task run twice); ignored
    duplicates: int = 0


def append_structures(path: Path, new: list[Atoms]) -> list[Atoms]:
    """Atomically rewrite ``path`` with ``new`` appended; return the full list."""
    existing = read_structures(path) if path.exists() else []
    structures = existing + new
    write_text_atomic(path, to_extxyz_text(structures))
    return structures


def _pending(entries: list[PlanEntry | ValidationEntry], done: set, relaxer: Relaxer | None,
             report: BuildReport) -> list[PlanEntry | ValidationEntry]:
    """The entries still to label (each plan id once), counting the skipped and deferred ones."""
    pending: dict[str, PlanEntry | ValidationEntry] = {}
    for entry in entries:
        if entry.plan_id in done:
            report.skipped_existing += 1
        elif entry.needs_relaxation and relaxer is None:
            report.deferred_relaxation += 1
        else:
            pending.setdefault(entry.plan_id, entry)
    if report.deferred_relaxation:
        warnings.warn(f"{report.deferred_relaxation} 'relaxed' structures deferred: no relaxation backbone available",
                      stacklevel=3)
    return list(pending.values())


def label_entries(entries: Iterable[PlanEntry | ValidationEntry], directory: Path, system: str, *,
                  workers: int = 2, protocol: ReferenceProtocol = PROTOCOL_V1, relaxer: Relaxer | None = None,
                  relaxer_name: str | None = None, seed: int = 0, python: str = GPAW_PYTHON,
                  progress: bool = True, executor: Executor | None = None, mpi_ranks: int = 1,
                  dataset_file: str = STRUCTURES_FILE, generator: dict | None = None) -> BuildReport:
    """Label the entries not yet in ``directory/<dataset_file>`` (``structures.extxyz``, or
    ``validation.extxyz`` for the validation set, whose card section is written instead).

    ``executor``: where the labelling tasks run (default: ``workers`` local threads, each
    driving one GPAW process).  On a thread pool the relaxation of a 'relaxed' variant runs
    inside its task; on any other executor the driver relaxes it (the relaxation backbone
    lives here) and then submits its DFT.  ``mpi_ranks``: cores (MPI ranks) per structure.
    ``generator``: the card's generator settings (default: the training plan's).
    """
    if dataset_file not in CARD_WRITERS:
        raise ValueError(f"cannot label into {dataset_file!r}; choose from {', '.join(CARD_WRITERS)}")
    card_writer = CARD_WRITERS[dataset_file]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / dataset_file
    existing = read_structures(path) if path.exists() else []
    done = {a.info.get("plan_id") for a in existing}
    entries = list(entries)
    report = BuildReport(system, total=len(entries))
    pending = _pending(entries, done, relaxer, report)
    settings = LabelSettings(python, mpi_ranks)
    scratch = directory / ".labelling"
    tasks = [LabelTask(e.plan_id, e.atoms, protocol, scratch, settings,
                       relaxer if e.needs_relaxation else None, relaxer_name if e.needs_relaxation else None)
             for e in pending]
    generator = generator if generator is not None else generator_settings(seed, relaxer_name)

    def take(record: LabelRecord) -> None:
        """The driver's one write path: each plan id taken once, appended atomically."""
        nonlocal existing
        if record.plan_id in done:
            report.duplicates += 1
        elif not record.ok:
            report.failed.append(f"{record.plan_id}: {record.error}")
        else:
            atoms = labelled_structure(record.atoms, record.result(), protocol, record.cores)
            existing = append_structures(path, [atoms])
            card_writer(directory, system, existing, protocol, generator)
            done.add(record.plan_id)
            report.labelled += 1
            report.seconds.append(float(atoms.info["label_seconds"]))

    bar = tqdm(total=len(tasks), desc=f"labelling {system}", unit="structure", disable=not progress,
               file=sys.stderr)
    with ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, workers)))
        _run_tasks(tasks, executor, take, bar.update, stack)
    bar.close()
    if existing and not report.labelled:
        card_writer(directory, system, existing, protocol, generator)
    return report


def _run_tasks(tasks: list[LabelTask], executor: Executor, take: Callable[[LabelRecord], None],
               tick: Callable[[int], object], stack: ExitStack) -> None:
    """Run every task on ``executor`` and hand each record to ``take`` as it finishes.

    A task whose relaxation must happen here (not on a thread pool) is relaxed on one local
    thread first; a task that fails on the executor itself (e.g. its workers kept dying)
    becomes a failed record.
    """
    in_thread = isinstance(executor, ThreadPoolExecutor)
    relax_pool: ThreadPoolExecutor | None = None
    futures: dict[Future, LabelTask] = {}
    for task in tasks:
        if task.relaxer is not None and not in_thread:
            relax_pool = relax_pool or stack.enter_context(ThreadPoolExecutor(max_workers=1))
            futures[relax_pool.submit(relax_task, task)] = task
        else:
            futures[executor.submit(label_structure, task)] = task
    try:
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                task = futures.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # noqa: BLE001 - the task's failure, not the driver's
                    outcome = LabelRecord(task.plan_id, task.atoms, "failed", error=f"{type(exc).__name__}: {exc}")
                if isinstance(outcome, LabelTask):  # relaxed here: now its DFT
                    futures[executor.submit(label_structure, outcome)] = outcome
                    continue
                take(outcome)
                tick(1)
    except BaseException as exc:
        running = [f for f in futures if not f.cancel()]
        if isinstance(exc, KeyboardInterrupt):  # Ctrl-C or SIGTERM (uipbench._interrupt): end local GPAW runs
            end_children(wait_for=running if in_thread else ())
        raise


def _check_build(system: str, n: int, root: Path | None, resume: bool, dataset_file: str,
                 mpi_ranks: int) -> tuple[Path, LabelSettings]:
    """Bad input fails here, before any work: the system, ``n``, the MPI ranks, an existing file without
    ``resume``, and GPAW missing.  Returns the system's folder and the labelling settings."""
    from .io import system_dir

    system_metal(system)  # unknown names fail here, before any work
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    settings = LabelSettings(mpi_ranks=mpi_ranks)
    directory = system_dir(system, root)
    path = directory / dataset_file
    if path.exists() and path.stat().st_size and not resume:
        count = len(read_structures(path))
        raise DatasetError(f"{path} already holds {count} structures; pass --resume to extend it")
    ok, why = gpaw_available()
    if not ok:
        raise LabellingError(why)
    return directory, settings


def _label_locked(entries: list, directory: Path, system: str, command: str, workers: int | None,
                  executor: "ExecutorSpec | None", settings: LabelSettings, **options) -> BuildReport:
    """Label ``entries`` under the folder's lock (one build per dataset folder: the training and the
    validation build share its card), on local GPAW processes or the executor's workers."""
    with OutputLock(directory, command=command):
        if executor is None or executor.kind == "local":
            workers = (executor.workers if executor is not None else workers) or os.cpu_count() or 1
            return label_entries(entries, directory, system, workers=workers, mpi_ranks=settings.mpi_ranks,
                                 **options)
        from ..executors import open_executor

        with open_executor(executor, task_cores=settings.mpi_ranks) as pool:
            return label_entries(entries, directory, system, executor=pool, mpi_ranks=settings.mpi_ranks,
                                 **options)


def build_dataset(system: str, n: int, *, root: Path | None = None, resume: bool = False, workers: int | None = None,
                  seed: int = 0, relaxer: Relaxer | None = None, relaxer_name: str | None = None,
                  protocol: ReferenceProtocol = PROTOCOL_V1, progress: bool = True,
                  executor: "ExecutorSpec | None" = None, mpi_ranks: int = 1) -> BuildReport:
    """Label the first ``n`` entries of the generator plan of ``system``.

    ``executor``: where the labelling runs (:class:`uipbench.executors.ExecutorSpec`); None or a
    local spec: ``workers`` (or the spec's workers) local GPAW processes at a time, as always;
    a Dask spec: one task per structure on the Dask workers, each asking for ``mpi_ranks`` cores.
    """
    directory, settings = _check_build(system, n, root, resume, STRUCTURES_FILE, mpi_ranks)
    return _label_locked(plan(system, n, seed, protocol), directory, system, f"uipbench dataset build {system} --n {n}",
                         workers, executor, settings, protocol=protocol, relaxer=relaxer, relaxer_name=relaxer_name,
                         seed=seed, progress=progress)


def build_validation(system: str, n: int, *, root: Path | None = None, resume: bool = False,
                     workers: int | None = None, seed: int = 0, relaxed: bool = False,
                     relaxer: Relaxer | None = None, relaxer_name: str | None = None,
                     protocol: ReferenceProtocol = PROTOCOL_V1, progress: bool = True,
                     executor: "ExecutorSpec | None" = None, mpi_ranks: int = 1) -> BuildReport:
    """Label the first ``n`` entries of the validation plan of ``system`` into ``validation.extxyz``
    (:mod:`uipbench.datasets.validation`); the card gets its ``validation`` section.

    ``relaxed``: the plan's relaxed variant (each entry relaxed by ``relaxer`` before its DFT; without a
    relaxer they are deferred, as in :func:`build_dataset`).  Otherwise as :func:`build_dataset`.
    """
    directory, settings = _check_build(system, n, root, resume, VALIDATION_FILE, mpi_ranks)
    entries = validation_plan(system, n, seed, protocol, relaxed=relaxed)
    return _label_locked(entries, directory, system, f"uipbench dataset build-validation {system} --n {n}",
                         workers, executor, settings, protocol=protocol, relaxer=relaxer,
                         relaxer_name=relaxer_name, seed=seed, progress=progress, dataset_file=VALIDATION_FILE,
                         generator=validation_generator_settings(seed, relaxed, relaxer_name))
