"""ASE calculator: a backbone corrected by a Δ-model, with Δ-forces by autograd.

This is the one place where a backbone and a Δ-model meet in one process (it runs
inside the backbone's environment).  Energies and forces:

    E = E_backbone + Δ(embedding)                        (Δ includes offset and prior mean)
    F = F_backbone − dΔ/dpositions                       (autograd through the embedding)

``F_backbone`` is ``out.forces`` for direct-force models (ORB), else ``−dE_backbone/dpositions``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from .gpr import DeltaGPR
from .io import BackboneMismatchError


class DeltaCalculator(Calculator):
    """``backbone`` (a :class:`uipbench.adapters.base.Backbone`) + ``delta`` (a fitted :class:`DeltaGPR`).

    ``results`` holds ``energy``, ``free_energy``, ``forces`` and also ``energy_std`` (GP std of the
    Δ-energy, eV), ``delta_energy`` and ``backbone_energy``.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, backbone: Any, delta: DeltaGPR, **kwargs: Any):
        super().__init__(**kwargs)
        _check_provenance(backbone, delta)
        self.backbone = backbone
        self.delta = delta

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        import torch

        super().calculate(atoms, properties, system_changes)
        out = self.backbone.forward_differentiable(self.atoms)
        delta_energy, std = self.delta.predict_torch(out.embedding, out.numbers)
        backbone_energy = out.energy.to(torch.float64)
        if out.forces is None:
            target = backbone_energy + delta_energy
            forces = -_grad(target, out.positions)
        else:
            forces = out.forces.detach().to(torch.float64) - _grad(delta_energy, out.positions)
        e_backbone = float(backbone_energy.detach())
        e_delta = float(delta_energy.detach())
        self.results = {
            "energy": e_backbone + e_delta,
            "free_energy": e_backbone + e_delta,
            "forces": forces.detach().cpu().numpy().astype(np.float64).reshape(len(self.atoms), 3),
            "energy_std": std,
            "delta_energy": e_delta,
            "backbone_energy": e_backbone,
        }


def _grad(value: "Any", positions: "Any") -> "Any":
    import torch

    (grad,) = torch.autograd.grad(value, positions, allow_unused=True)
    if grad is None:
        return torch.zeros(positions.shape, dtype=torch.float64, device=positions.device)
    return grad.to(torch.float64)


def _check_provenance(backbone: Any, delta: DeltaGPR) -> None:
    """A Δ-model loaded by :func:`uipbench.delta.io.load` knows its backbone; refuse another one."""
    provenance = getattr(delta, "provenance_", None)
    card = getattr(backbone, "card", None)
    if provenance is None or card is None:
        return
    name, sha = getattr(card, "name", None), getattr(card, "weights_sha256", None)
    if name is not None and name != provenance.backbone:
        raise BackboneMismatchError(f"Δ-model was fitted on backbone {provenance.backbone!r}, not {name!r}")
    if sha and provenance.weights_sha256 and sha != provenance.weights_sha256:
        raise BackboneMismatchError(f"Δ-model was fitted on {provenance.backbone} weights "
                                    f"{provenance.weights_sha256[:12]}…, not {sha[:12]}…")
