"""Δ-GPR: correct a backbone with a Gaussian process on its own per-atom embedding.

* :class:`DeltaGPR` – the scikit-learn estimator (``gpr.py``), aggregations in
  ``aggregation.py``, the kernel in ``kernels.py``;
* :class:`DeltaCalculator` – ASE calculator backbone + Δ with autograd forces (``calculator.py``);
* :func:`save` / :func:`load` – safe persistence, no pickle (``io.py``).

Importing this package does not import torch; only the differentiable path does.
"""
from .calculator import DeltaCalculator
from .gpr import DeltaGPR, DeltaModelError, select_inducing
from .io import BackboneMismatchError, DeltaFileError, Provenance, load, save

__all__ = ["BackboneMismatchError", "DeltaCalculator", "DeltaFileError", "DeltaGPR", "DeltaModelError",
           "Provenance", "load", "save", "select_inducing"]
