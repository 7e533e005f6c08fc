"""The rules of active Δ-learning (:mod:`.active`), as pure functions: round seeds, picks, the stop rule.

* :func:`round_seed` – the search seed of round ``r``: a 32-bit draw of NumPy's ``SeedSequence([seed, r])``,
  so rounds search different candidates and a run is a function of its one ``seed``.
* :func:`pick_minima` – what a round labels: the ``k`` lowest distinct minima not labelled yet (by
  structure hash), then the ``m`` most uncertain (largest σ) of the others.
* :func:`converged` – the stop rule: the last two rounds' predicted global minima were labelled,
  each was the lowest DFT energy seen so far in its round, and they are one minimum (the similarity
  rule of :mod:`.minima` with their DFT energies: same formula, |ΔE_DFT| < 0.02 eV, fingerprints
  within 0.10 Å).  Comparing by geometry, not by hash: each round refits the Δ-model, so the same
  basin relaxes to slightly other positions.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms

from .minima import Minimum, fingerprint, same_minimum

LOWEST, UNCERTAIN = "lowest", "uncertain"


def round_seed(seed: int, round_index: int) -> int:
    """The search seed of round ``round_index`` of a run with ``seed`` (deterministic, distinct per round)."""
    if seed < 0 or round_index < 0:
        raise ValueError(f"seed and round must be non-negative, got seed={seed}, round={round_index}")
    return int(np.random.SeedSequence([seed, round_index]).generate_state(1)[0])


def pick_minima(minima: Sequence[Minimum], hashes: Sequence[str], known: set[str], k: int,
                m: int = 0) -> list[tuple[int, str]]:
    """``(index into minima, why)`` of the minima to label: the ``k`` lowest whose hash is not in ``known``,
    then the ``m`` with the largest σ among the other new ones (ties: the lower energy first)."""
    fresh = [i for i, h in enumerate(hashes) if h not in known]
    lowest = fresh[:k]
    rest = [i for i in fresh[k:] if minima[i].energy_std is not None]
    uncertain = sorted(rest, key=lambda i: (-float(minima[i].energy_std), minima[i].energy, i))[:m]
    return [(i, LOWEST) for i in lowest] + [(i, UNCERTAIN) for i in uncertain]


def lowest_dft(labelled: Sequence[Atoms]) -> float | None:
    """The lowest DFT energy among labelled structures (None when there are none)."""
    energies = [float(a.get_potential_energy()) for a in labelled]
    return min(energies) if energies else None


def is_lowest(best_dft: float | None, lowest: float | None) -> bool:
    """The predicted global minimum was labelled and no labelled structure is lower."""
    return best_dft is not None and lowest is not None and best_dft <= lowest


def converged(rounds: Sequence[Mapping[str, Any]], labelled_by_hash: Mapping[str, Atoms], n_slab: int) -> bool:
    """The stop rule (module doc) on the round records so far."""
    if len(rounds) < 2:
        return False
    previous, last = rounds[-2], rounds[-1]
    if not (previous["best_is_lowest"] and last["best_is_lowest"]):
        return False
    a = labelled_by_hash.get(previous["best"]["structure_hash"])
    b = labelled_by_hash.get(last["best"]["structure_hash"])
    if a is None or b is None:
        return False
    return same_minimum(a.get_chemical_formula(), previous["best"]["dft_energy"], fingerprint(a, n_slab),
                        b.get_chemical_formula(), last["best"]["dft_energy"], fingerprint(b, n_slab))


def stop_reason(rounds: Sequence[Mapping[str, Any]], labelled_by_hash: Mapping[str, Atoms], n_slab: int,
                max_rounds: int) -> str | None:
    """``"converged"`` (the stop rule holds), ``"rounds"`` (``max_rounds`` done) or None (go on)."""
    if converged(rounds, labelled_by_hash, n_slab):
        return "converged"
    return "rounds" if len(rounds) >= max_rounds else None
