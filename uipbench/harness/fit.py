"""Fit a Δ-model on DFT-labelled structures: E_DFT − E_backbone regressed on the backbone's own embedding.

* :func:`shipped_structures` – the labelled structures of shipped (or ``root``'s) systems;
* :func:`residuals` – the embeddings (through the embedding cache) and residuals E_DFT − E_backbone;
* :func:`fit_residuals` – a :class:`~uipbench.delta.DeltaGPR` fitted on them;
* :func:`fit_delta` – both: what ``uipbench delta fit``, the active-learning loop
  (:mod:`uipbench.search.active`) and ``benchmarks/bench_search.py`` use.

The backbone may be in-process (inside its own environment) or worker-backed
(:class:`~uipbench.adapters.remote.RemoteBackbone`): only ``embed`` is called.  Heavy packages
(scikit-learn, SciPy) are imported when a model is fitted, not when this module is.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from ase import Atoms

if TYPE_CHECKING:
    from ..cache import EmbeddingCache
    from ..delta.gpr import DeltaGPR
    from ..embedding import StructureEmbedding


class TrainingDataError(ValueError):
    """Structures a Δ-model cannot be fitted on (no DFT energy, mixed protocols, too few)."""


def shipped_structures(systems: list[str], root: Path | None = None) -> list[Atoms]:
    """The labelled DFT structures of ``systems`` (shipped ones, or those under ``root``), in order.

    An unknown system is a :class:`~uipbench.datasets.io.DatasetError` naming the known ones.
    """
    from ..datasets.io import DatasetError, available_systems, load

    present = available_systems(root)
    unknown = [s for s in systems if s not in present]
    if unknown:
        where = Path(root) if root is not None else "the shipped datasets folder"
        raise DatasetError(f"unknown system(s) {', '.join(unknown)}; systems with labelled structures in "
                           f"{where}: {', '.join(present) or 'none'}")
    return [atoms for system in dict.fromkeys(systems) for atoms in load(system, root)]


def dft_energy(atoms: Atoms) -> float | None:
    """The structure's stored (DFT) energy, or None when it has none or it is not finite."""
    results = getattr(atoms.calc, "results", None) or {}
    energy = results.get("energy")
    if energy is None or not math.isfinite(float(energy)):
        return None
    return float(energy)


def check_energies(structures: Sequence[Atoms], where: str) -> None:
    """Refuse structures without a finite (DFT) energy, naming the first few."""
    missing = [i for i, atoms in enumerate(structures) if dft_energy(atoms) is None]
    if missing:
        raise TrainingDataError(f"{where}: {len(missing)} structure(s) without a finite DFT energy "
                                f"(structure {_first_few(missing)}); a Δ-model learns E_DFT − E_backbone")


def _first_few(indices: Sequence[int], shown: int = 5) -> str:
    return ", ".join(str(i) for i in indices[:shown]) + (" ..." if len(indices) > shown else "")


def check_training_set(structures: Sequence[Atoms], where: str = "training set") -> None:
    """Refuse, before any embedding, structures without a finite energy, a mix of reference protocols
    (energies of different DFT set-ups do not share a zero), or fewer than two structures."""
    check_energies(structures, where)
    protocols = Counter(str(a.info.get("protocol", "unknown")) for a in structures)
    if len(protocols) > 1:
        found = ", ".join(f"{p!r}: {n}" for p, n in protocols.most_common())
        raise TrainingDataError(f"{where}: mixes reference protocols ({found}); energies of different DFT "
                                f"set-ups do not share a zero: fit on one protocol's structures (set each "
                                f"structure's info['protocol'] to name its own)")
    if len(structures) < 2:
        raise TrainingDataError(f"{where}: {len(structures)} structure(s); a Δ-model needs at least 2")


def residuals(backbone: Any, structures: Sequence[Atoms], cache: "EmbeddingCache | None" = None,
              forces: bool = False) -> tuple[list["StructureEmbedding"], np.ndarray]:
    """The backbone's embeddings of ``structures`` (cache first; with its forces when ``forces``) and the
    residuals E_DFT − E_backbone (eV)."""
    from ..cache import cached_embed

    check_training_set(structures)
    batch = cached_embed(backbone, list(structures), cache, forces=forces)
    energies = np.array([dft_energy(a) for a in structures], dtype=np.float64)
    return batch.structures, energies - batch.energies


def dft_forces(structures: Sequence[Atoms], where: str = "training set") -> list[np.ndarray]:
    """The stored (DFT) forces of every structure; one without finite forces is refused, naming it."""
    out, missing = [], []
    for i, atoms in enumerate(structures):
        forces = (getattr(atoms.calc, "results", None) or {}).get("forces")
        if forces is None or np.shape(forces) != (len(atoms), 3) or not np.all(np.isfinite(forces)):
            missing.append(i)
        else:
            out.append(np.asarray(forces, np.float64))
    if missing:
        raise TrainingDataError(f"{where}: {len(missing)} structure(s) without finite DFT forces (structure "
                                f"{_first_few(missing)}); force labels need F_DFT on every training structure")
    return out


def fit_residuals(embeddings: list["StructureEmbedding"], residual: np.ndarray, *, aggregation: str = "atomic",
                  sparse: bool = True, random_state: int = 0, forces: Sequence[Any] | None = None) -> "DeltaGPR":
    """A Δ-GPR fitted on precomputed embeddings and residuals (and force labels, :mod:`uipbench.delta.forces`)."""
    from ..delta.gpr import DeltaGPR

    return DeltaGPR(aggregation, sparse=sparse, random_state=random_state).fit(embeddings, residual, forces=forces)


def fit_delta(backbone: Any, structures: Sequence[Atoms], *, aggregation: str = "atomic", sparse: bool = True,
              random_state: int = 0, cache: "EmbeddingCache | None" = None, forces: str | None = None) -> "DeltaGPR":
    """Embed ``structures`` (through ``cache``, default the shared embedding cache) and fit a Δ-GPR on
    E_DFT − E_backbone.  Bad input (no energy, mixed protocols, < 2 structures) is refused before embedding.

    ``forces``: also fit the force residuals F_DFT − F_backbone of these atoms (``"adsorbate"`` or ``"all"``,
    :func:`uipbench.delta.jacobian.labelled_atoms`), through the embedding's Jacobian (cached)."""
    from .defaults import AGGREGATIONS

    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose from {', '.join(AGGREGATIONS)}")
    labels = None
    if forces is not None:
        from ..delta.jacobian import check_labelled, force_labels

        check_labelled(forces)  # before any embedding
        reference = dft_forces(structures)
    embeddings, residual = residuals(backbone, structures, cache, forces=forces is not None)
    if forces is not None:
        labels = force_labels(backbone, structures, reference, [e.forces for e in embeddings], forces, cache=cache)
    return fit_residuals(embeddings, residual, aggregation=aggregation, sparse=sparse, random_state=random_state,
                         forces=labels)
