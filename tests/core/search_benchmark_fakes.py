"""The fakes of ``uipbench search-benchmark``'s tests (``test_search_benchmark.py``): a fake runner writes the
run folders of synthetic searches on a small slab, a fake labeller gives DFT energies from a known function, so
every score of those tests is known in advance.

The DFT stand-in: E = −10 + 0.15 eV per S–S bond + 0.5 eV/Å × (mean S height − 2 Å).  Structures:
``dispersed`` (no S–S bond, −10.0 eV, the DFT minimum), ``near`` (dispersed lifted 0.01 Å: −9.995 eV, the
same minimum by the similarity rule), ``dimer`` (1 bond, −9.85 eV), ``chain`` (2 bonds, −9.7 eV).  The raw
backbone over-binds S–S (predicts the chain or the dimer lowest); the Δ-corrected one gets the order right.
"""
from __future__ import annotations

import functools
import json
import threading
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from uipbench.datasets.label import LabelRecord
from uipbench.delta import load, save
from uipbench.search.minima import adsorbate_bonds
from uipbench.search.store import delta_sha256

PROBLEM, BACKBONE = "cu-s3-3x3", "chgnet-0.3.0"
S_XY = {"dispersed": [(1.5, 1.5), (4.5, 1.5), (3.0, 4.5)], "dimer": [(1.5, 1.5), (3.5, 1.5), (3.0, 4.5)],
        "chain": [(1.0, 1.5), (3.0, 1.5), (3.0, 3.5)]}


def structure(name: str) -> Atoms:
    """4 Cu atoms at z = 0 in a 6 x 6 Å cell, 3 S above them."""
    kind, height = ("dispersed", 2.01) if name == "near" else (name, 2.0)
    cu = [(x, y, 0.0) for x in (0.0, 3.0) for y in (0.0, 3.0)]
    s = [(x, y, height) for x, y in S_XY[kind]]
    return Atoms("Cu4S3", positions=cu + s, cell=[6.0, 6.0, 14.0], pbc=[True, True, False])


def dft_energy(atoms: Atoms) -> float:
    heights = atoms.positions[4:, 2] - atoms.positions[:4, 2].max()
    return -10.0 + 0.15 * adsorbate_bonds(atoms, 4) + 0.5 * (heights.mean() - 2.0)


#: (method, seed) -> the run's minima: (structure, predicted energy, first evaluation), lowest first
MINIMA = {
    ("raw", 0): [("chain", -12.0, 2), ("dimer", -11.9, 5)],
    ("raw", 1): [("dimer", -11.95, 1), ("chain", -11.9, 0)],
    ("delta", 0): [("dispersed", -10.2, 3), ("dimer", -10.0, 6)],
    ("delta", 1): [("near", -10.15, 0), ("chain", -9.9, 4)],
    ("al", 0): [("dispersed", -10.1, 2), ("dimer", -9.9, 1)],
    ("al", 1): [("dimer", -10.05, 0), ("dispersed", -10.0, 3)],
}
BUDGET, CPU_TOTAL = 10, 20.0


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@functools.lru_cache(maxsize=None)
def toy_model(shift: float = 0.0):
    """A real Δ-model (on the toy backbone's embedding; the fake runs never evaluate it), ``shift``: another one."""
    from tests.core.test_search_toy import ToyBackbone, toy_problem
    from uipbench.delta import DeltaGPR
    from uipbench.search.candidates import CandidateGenerator
    from uipbench.search.engine import rng_for

    generator = CandidateGenerator(toy_problem())
    structures = [generator.random(rng_for(7, k, 0)) for k in range(6)]
    residual = np.array([0.1 * a.positions[12:, 2].mean() - 1.0 + shift for a in structures])
    return DeltaGPR("atomic", random_state=0).fit(ToyBackbone().embed(structures).structures, residual)


class FakeRunner:
    """Writes what ``uipbench delta fit`` (:func:`toy_model` of ``model_shift``) and ``uipbench search`` leave
    (a Δ run records its model's hash); ``kill_at``: raise KeyboardInterrupt on that call (1-based), as a
    Ctrl-C would, before writing anything."""

    def __init__(self, kill_at: int | None = None, model_shift: float = 0.0):
        self.calls: list[list[str]] = []
        self.envs: list[dict | None] = []
        self.kill_at, self.model_shift = kill_at, model_shift
        self.lock = threading.Lock()

    def __call__(self, argv: list[str], env: dict | None = None) -> int:
        with self.lock:
            self.calls.append(argv)
            self.envs.append(env)
            if len(self.calls) == self.kill_at:
                raise KeyboardInterrupt
        out = Path(option(argv, "--out"))
        if argv[:2] == ["delta", "fit"]:
            save(toy_model(self.model_shift), out, BACKBONE, "0" * 64)  # chgnet-0.3.0.json: the name has dots
            return 0
        method = "delta" if "--delta" in argv else "al" if "--active-learning" in argv else "raw"
        model = delta_sha256(load(option(argv, "--delta"))) if method == "delta" else None
        self._search(out, method, int(option(argv, "--seed")), int(option(argv, "--budget")),
                     option(argv, "--algorithm"), model)
        return 0

    @staticmethod
    def _search(out, method: str, seed: int, budget: int, algorithm: str = "random", model: str | None = None) -> None:
        out.mkdir(parents=True, exist_ok=True)
        minima = []
        for rank, (name, energy, first) in enumerate(MINIMA[(method, seed)], start=1):
            atoms = structure(name)
            atoms.info.update(problem=PROBLEM, rank=rank, predicted_energy=energy, evaluation=first + 1,
                              first_evaluation=first, hits=2, adsorbate_bonds=adsorbate_bonds(atoms, 4))
            minima.append(atoms)
        write(out / "minima.extxyz", minima, format="extxyz")
        (out / "minima.csv").write_text("rank,energy,evaluation,first_evaluation,hits\n" + "".join(
            f"{a.info['rank']},{a.info['predicted_energy']},{a.info['evaluation']},{a.info['first_evaluation']},2\n"
            for a in minima))
        if method == "al":
            FakeRunner._active(out, budget, algorithm)
            return
        total = CPU_TOTAL
        if (method, seed) == ("delta", 0):  # every relaxation's record: CPU 1, 2, ..., 10 s
            (out / "evaluations").mkdir()
            for i in range(budget):
                (out / "evaluations" / f"{i:06d}.json").write_text(json.dumps({"index": i, "cpu_seconds": i + 1.0}))
            total = sum(range(1, budget + 1))
        FakeRunner._summary(out, budget, algorithm, total, model)

    @staticmethod
    def _summary(out, budget: int, algorithm: str, total: float, model: str | None = None) -> None:
        (out / "search.json").write_text(json.dumps({
            "identity": {"delta_sha256": model, "settings": {"algorithm": algorithm}}, "status": "finished",
            "budget": budget,
            "evaluations": budget, "timing": {"cpu_seconds_per_relaxation": {"total": total, "mean": total / budget}}}))

    @staticmethod
    def _active(out, budget: int, algorithm: str) -> None:
        """Two rounds of searches; it labelled the dispersed structure itself (100 s on 2 cores), and one more
    under another protocol (10 s)."""
        for r in (0, 1):
            (out / f"round-{r:02d}" / "search").mkdir(parents=True)
            FakeRunner._summary(out / f"round-{r:02d}" / "search", budget, algorithm, CPU_TOTAL)
        own, other = structure("dispersed"), structure("chain")
        own.info.update(problem=PROBLEM, round=0, backbone=BACKBONE, predicted_energy=-10.1, label_seconds=100.0,
                        label_cores=2, energy=dft_energy(own), protocol="gpaw-lcao-dzp-pbe-v1")
        other.info.update(problem=PROBLEM, round=1, energy=-50.0, protocol="someone-elses-dft",  # not pooled
                          label_seconds=10.0)
        write(out / "labelled.extxyz", [own, other], format="extxyz")
        (out / "active.json").write_text(json.dumps({
            "identity": {"settings": {"budget": budget, "label_per_round": 2, "search": {"algorithm": algorithm}}},
            "status": "finished", "stopped_because": "converged", "rounds": [{"round": 0}, {"round": 1}]}))


class FakeLabeller:
    """DFT stand-in: :func:`dft_energy`; ``fail``: structures (by energy) whose record fails;
    ``kill_at``: KeyboardInterrupt on that call."""

    def __init__(self, kill_at: int | None = None, fail: tuple[float, ...] = ()):
        self.calls: list[float] = []
        self.kill_at, self.fail = kill_at, fail
        self.lock = threading.Lock()

    def __call__(self, task) -> LabelRecord:
        energy = dft_energy(task.atoms)
        with self.lock:
            self.calls.append(round(energy, 6))
            if len(self.calls) == self.kill_at:
                raise KeyboardInterrupt
        if any(abs(energy - f) < 1e-9 for f in self.fail):
            return LabelRecord(task.plan_id, task.atoms, "failed", error="SCF did not converge")
        return LabelRecord(task.plan_id, task.atoms, "ok", energy, np.zeros((len(task.atoms), 3)).tolist(),
                           "fake-gpaw", [1, 1, 1], 30.0, 1)
