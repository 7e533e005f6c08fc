"""uipbench: benchmark universal interatomic potentials and Δ-correct them on their own embeddings."""
from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # lazy, so that ``import uipbench`` stays light (no torch, no scikit-learn)
    if name == "DeltaCalculator":
        from .delta.calculator import DeltaCalculator

        return DeltaCalculator
    raise AttributeError(f"module 'uipbench' has no attribute {name!r}")
