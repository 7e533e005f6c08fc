"""Synthetic structures for the Δ-GPR tests: the residual is a known smooth function of the embedding."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPECIES_OFFSET = {16: 0.7, 29: -0.25, 47: 0.1}  # eV per atom, the per-element constants to recover


@dataclass
class Synthetic:
    X: list[tuple[np.ndarray, np.ndarray]]
    y: np.ndarray  # offsets + smooth atomic part
    smooth: np.ndarray  # the smooth atomic part alone


def make(n_structures: int, width: int = 6, species: tuple[int, ...] = (16, 29), seed: int = 0,
         atoms: tuple[int, int] = (3, 9), amplitude: float = 0.3, noise: float = 0.0,
         projection_seed: int = 123) -> Synthetic:
    """Structures of ``atoms`` atoms with random embeddings; residual = Σ_atoms g(x) + Σ_z n_z c_z.

    ``g(x) = amplitude · sin(w·x)`` with a fixed ``w`` (``projection_seed``), so train and test sets drawn
    with different ``seed`` share the truth.
    """
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(projection_seed).normal(size=width) / np.sqrt(width)
    X, y, smooth = [], [], []
    for _ in range(n_structures):
        n = int(rng.integers(*atoms))
        numbers = rng.choice(species, size=n)
        embedding = rng.normal(size=(n, width)) + 0.3 * (numbers[:, None] == species[0])
        g = float(np.sum(amplitude * np.sin(embedding @ w)))
        X.append((embedding, numbers))
        smooth.append(g)
        y.append(g + sum(SPECIES_OFFSET[int(z)] for z in numbers) + noise * rng.normal())
    return Synthetic(X, np.array(y), np.array(smooth))


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))
