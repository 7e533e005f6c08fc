"""CHGNet adapter (chgnet package; variants 0.3.0 and 0.2.0).

Embedding layer: the atom features after the *last* atom-convolution layer and
CHGNet's ``readout_norm`` — exactly the input of the site-wise energy MLP
(``model.mlp``), captured with a forward pre-hook.  This is the representation
the energy readout sees.  It is *not* the ``atom_fea`` of
``return_atom_feas=True``, which CHGNet takes before its last conv layer.

Total energy: CHGNet is intensive (eV/atom, composition model included); the
adapter multiplies by the number of atoms, as CHGNet's own ASE calculator does.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms

from ..embedding import EmbeddingMetadata, StructureEmbedding
from ._common import FAMILY_PRECISIONS, check_precision, checked_weights, from_tensors, package_weights, \
    random_identity, resolve_weights, weights_only_read
from .card import BackboneCard
from .interface import Backbone, DifferentiableOutput

if TYPE_CHECKING:
    import torch

#: precisions the adapter runs in (the first is the default)
PRECISIONS = FAMILY_PRECISIONS["chgnet"]


class CHGNetBackbone(Backbone):
    def __init__(self, card: BackboneCard, model, weights_sha256: str, precision: str = "float32") -> None:
        import torch
        from pymatgen.io.ase import AseAtomsAdaptor

        self.card = card
        self.precision = check_precision(card.family, precision, PRECISIONS)
        self.default_precision = PRECISIONS[0]
        self.dtype = getattr(torch, self.precision)
        self.model = model.to(self.dtype).eval()
        if not getattr(self.model, "mlp_first", True):
            raise RuntimeError(f"{card.name}: expected a CHGNet with mlp_first=True (site-wise energy readout)")
        self._weights_sha256 = weights_sha256
        self._adaptor = AseAtomsAdaptor()
        self._numbers = frozenset(range(1, 95))  # CHGNet's atom embedding covers H..Pu

    @property
    def supported_numbers(self) -> frozenset[int]:
        return self._numbers

    def metadata(self) -> EmbeddingMetadata:
        return self._card_metadata(self._weights_sha256, ("chgnet", "torch"), model_precision=self.precision)

    def calculator(self):
        """chgnet's own ASE calculator on this model (a float32 copy: chgnet's graphs are float32)."""
        import copy

        import torch
        from chgnet.model.dynamics import CHGNetCalculator

        model = self.model if self.dtype == torch.float32 else copy.deepcopy(self.model).float()
        return CHGNetCalculator(model=model, use_device="cpu")

    def _graphs(self, structures: list[Atoms]):
        import torch

        graphs = [self.model.graph_converter(self._adaptor.get_structure(a)) for a in structures]
        if self.dtype != torch.float32:  # chgnet builds its graphs in float32
            for g in graphs:
                g.atom_frac_coord = g.atom_frac_coord.detach().to(self.dtype).requires_grad_(True)
                g.lattice = g.lattice.detach().to(self.dtype).requires_grad_(True)
                g.neighbor_image = g.neighbor_image.to(self.dtype)
        return graphs

    def _run(self, graphs) -> tuple["torch.Tensor", list["torch.Tensor"], list["torch.Tensor"]]:
        """Total energies, per-structure embeddings and Cartesian positions, all in one graph."""
        import torch
        from chgnet.model.model import BatchedGraph

        model = self.model
        captured: list["torch.Tensor"] = []
        hook = model.mlp.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            comp = 0 if model.composition_model is None else model.composition_model.fc(
                model.composition_model._assemble_graphs(graphs).to(self.dtype)).view(-1)
            with warnings.catch_warnings():  # chgnet turns each cell volume into a tensor via float(); harmless
                warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
                batched = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                                   angle_basis_expansion=model.angle_basis_expansion,
                                                   compute_stress=False)
            prediction = model._compute(batched)
        finally:
            hook.remove()
        n_atoms = torch.bincount(batched.atom_owners)
        energy = prediction["e"] + comp
        if model.is_intensive:
            energy = energy * n_atoms
        embeddings = list(torch.split(captured[0], n_atoms.tolist()))
        return energy, embeddings, list(batched.atom_positions)

    def _embed_batch(self, structures: list[Atoms], forces: bool) -> list[StructureEmbedding]:
        import torch

        graphs = self._graphs(structures)
        with torch.set_grad_enabled(forces):
            energy, embeddings, positions = self._run(graphs)
            grads = torch.autograd.grad(energy.sum(), positions) if forces else [None] * len(structures)
        return from_tensors(structures, energy, embeddings, grads)

    def forward_differentiable(self, atoms: Atoms) -> DifferentiableOutput:
        prepared = self.prepare(atoms)
        energy, embeddings, positions = self._run(self._graphs([prepared]))
        return DifferentiableOutput(positions=positions[0], energy=energy[0], embedding=embeddings[0],
                                    numbers=prepared.numbers.astype(np.int64))


def _random_model(seed: int):
    """CHGNet's default architecture with weights drawn from ``seed`` (torch's global RNG untouched)."""
    import torch
    from chgnet.model import CHGNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CHGNet()


def load(card: BackboneCard, weights: Path | None = None, *, random_weights: bool = False, seed: int = 0,
         precision: str | None = None, trust_unpinned_weights: bool = False, download: bool = True) -> CHGNetBackbone:
    """CHGNet from the wheel's weights, or a local file named by argument / the card's variable (the one
    load signature, :class:`~uipbench.adapters.interface.Loader`; the weights ship with the package, so
    ``download`` has nothing to do).  The file is read with ``torch.load(weights_only=True)``: tensors
    and plain containers only, so an unpinned file needs no trust.  ``random_weights``: CHGNet's
    default architecture with weights drawn from ``seed``."""
    precision = check_precision(card.family, precision, PRECISIONS)
    if random_weights:
        return CHGNetBackbone(card, _random_model(seed), random_identity(seed), precision)
    path = resolve_weights(card, weights, package_weights(card), download=download)
    digest = checked_weights(card, path, unpickles=False, trust_unpinned=trust_unpinned_weights)
    import torch
    from chgnet.model import CHGNet

    with weights_only_read(card, path):
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = CHGNet.from_dict(state["model"], version=card.weights.model_name or None, **card.weights.model_kwargs)
    return CHGNetBackbone(card, model, digest, precision)
