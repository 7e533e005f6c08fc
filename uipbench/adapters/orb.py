"""ORB adapter (ORB-v2 and relatives), run inside the ``orb`` environment.

Embedding: the latent node features after the last (15th) message-passing step
of ORB's ``MoleculeGNS`` (``model.model(batch)["node_features"]``, 256 wide).
The energy head mean-pools exactly these over the atoms before its MLP; the
direct force head reads them per atom.  ORB-v2 predicts forces directly, not
as a gradient of the energy: both are returned.

The model runs in float64 on the CPU (orb-models supports it through
``precision="float64"``; this adapter converts the model itself instead of
changing torch's process-wide default dtype the way ``load_model`` does).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from ..embedding import EmbeddingMetadata, StructureEmbedding
from ._common import FAMILY_PRECISIONS, MPTRJ_NUMBERS, check_precision, checked_weights, random_identity, \
    resolve_weights, split_flat, weights_only_read
from .card import BackboneCard, OrbArchitecture
from .errors import CardError
from .interface import Backbone, DifferentiableOutput
from .torch_tools import default_dtype, frozen_float64

if TYPE_CHECKING:
    import torch

#: precisions the adapter runs in (the first is the default)
PRECISIONS = FAMILY_PRECISIONS["orb"]


def import_orb() -> SimpleNamespace:
    """Import the parts of ``orb_models`` (and its downloader ``cached_path``) the adapter uses."""
    import cached_path
    from orb_models.forcefield import atomic_system, base, pretrained
    from orb_models.forcefield.calculator import ORBCalculator

    return SimpleNamespace(atomic_system=atomic_system, base=base, pretrained=pretrained,
                           ORBCalculator=ORBCalculator, cached_path=cached_path)


def build_architecture(card: BackboneCard, orb: SimpleNamespace) -> "torch.nn.Module":
    """The card's ``[architecture]`` (``orb_v2_architecture``) with torch's default initialisation."""
    arch: OrbArchitecture = card.architecture
    builders = {"orb_models.forcefield.pretrained.orb_v2_architecture": orb.pretrained.orb_v2_architecture}
    if arch.builder not in builders:
        raise CardError(f"{card.path}: unknown ORB builder {arch.builder!r} (field architecture.builder); "
                        f"known: {', '.join(builders)}")
    config = orb.atomic_system.SystemConfig(radius=arch.radius, max_num_neighbors=arch.max_num_neighbors)
    return builders[arch.builder](num_message_passing_steps=arch.num_message_passing_steps, device="cpu",
                                  system_config=config)


def build_random_model(card: BackboneCard, seed: int, orb: SimpleNamespace) -> "torch.nn.Module":
    """The card's architecture with random weights drawn from ``seed`` (torch's global RNG left untouched)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_architecture(card, orb)


def load_weights_file(card: BackboneCard, path: Path, orb: SimpleNamespace) -> "torch.nn.Module":
    """The architecture with the checkpoint's state dict (``torch.load(weights_only=True)``, strict)."""
    import torch

    model = build_architecture(card, orb)
    with weights_only_read(card, path):
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def _connect_to_positions(graph: Any, positions: "torch.Tensor") -> Any:
    """The graph with positions and edge vectors recomputed from ``positions`` (autograd-connected).

    ``positions`` are the structure's own (unwrapped) coordinates; the graph holds
    them wrapped into the cell, which only adds constant lattice translations.
    """
    wrapped = positions + (graph.positions - positions.detach())
    shifts = graph.edge_features["unit_shifts"] @ graph.cell[0]
    vectors = wrapped[graph.receivers] - wrapped[graph.senders] + shifts
    return graph._replace(node_features={**graph.node_features, "positions": wrapped},
                          edge_features={**graph.edge_features, "vectors": vectors})


def _calculator_class(orb: SimpleNamespace) -> type:
    """ORBCalculator whose graphs are built in float64, to match the float64 model."""
    import torch

    class Float64ORBCalculator(orb.ORBCalculator):
        def calculate(self, *args: Any, **kwargs: Any) -> None:
            with default_dtype(torch.float64):
                super().calculate(*args, **kwargs)

    return Float64ORBCalculator


class OrbBackbone(Backbone):
    """An ORB model seen through the GNS node features its energy and force heads read."""

    batch_size = 8

    def __init__(self, card: BackboneCard, model: "torch.nn.Module", weights_sha256: str,
                 orb: SimpleNamespace) -> None:
        self.card = card
        self._orb = orb
        self.model = frozen_float64(model)
        self._weights_sha256 = weights_sha256
        if getattr(self.model, "pair_repulsion", False):
            raise NotImplementedError(f"{card.name}: ORB models with ZBL pair repulsion are not supported")
        if abs(self.model.system_config.radius - self.cutoff) > 1e-6:
            raise CardError(f"{card.name}: model radius {self.model.system_config.radius} != card cutoff {self.cutoff}")

    @property
    def supported_numbers(self) -> frozenset[int]:
        return MPTRJ_NUMBERS

    def metadata(self) -> EmbeddingMetadata:
        return self._card_metadata(self._weights_sha256, (self.card.package, "ase", "torch"))

    def _graph(self, atoms: Atoms) -> Any:
        """orb's AtomGraphs of one fully periodic structure, in float64."""
        import torch

        return self._orb.atomic_system.ase_atoms_to_atom_graphs(
            atoms, system_config=self.model.system_config, device=torch.device("cpu"),
            output_dtype=torch.float64, graph_construction_dtype=torch.float64)

    def _heads(self, batch: Any, forces: bool) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor | None"]:
        """(node features, energies [n_graphs] in eV, direct forces or None) for a batch of graphs.

        Runs with float64 as torch's default dtype: orb creates some constants at run
        time (e.g. the radial basis) in the default dtype.
        """
        import torch

        with default_dtype(torch.float64):
            features = self.model.model(batch)["node_features"]
            energy = self.model.heads["energy"].predict(features, batch)
            direct = self.model.heads["forces"].predict(features, batch) if forces else None
        return features, energy, direct

    def _embed_batch(self, structures: list[Atoms], forces: bool) -> list[StructureEmbedding]:
        import torch

        batch = self._orb.base.batch_graphs([self._graph(a) for a in structures])
        with torch.no_grad():
            features, energy, direct = self._heads(batch, forces)
        ptr = np.concatenate([[0], np.cumsum(batch.n_node.numpy())])
        forces_np = direct.double().numpy() if direct is not None else None
        return split_flat(structures, energy.double().numpy(), features.double().numpy(), forces_np, ptr)

    def forward_differentiable(self, atoms: Atoms) -> DifferentiableOutput:
        """Energy, node features and ORB's direct forces, all connected to a ``positions`` leaf tensor."""
        import torch

        prepared = self.prepare(atoms)
        positions = torch.tensor(prepared.positions, dtype=torch.float64, requires_grad=True)
        graph = _connect_to_positions(self._graph(prepared), positions)
        features, energy, direct = self._heads(graph, forces=True)
        return DifferentiableOutput(positions=positions, energy=energy[0], embedding=features,
                                    numbers=np.asarray(atoms.numbers, dtype=np.int64).copy(), forces=direct)

    def calculator(self) -> Any:
        """orb's own ORBCalculator on this model (direct forces), building its graphs in float64."""
        return _calculator_class(self._orb)(self.model, device="cpu")


def _cached_file(card: BackboneCard) -> Path | None:
    """The card's weights in cached_path's cache (where orb-models downloads them), if there."""
    import cached_path

    found = cached_path.find_latest_cached(card.weights.source)
    return Path(found) if found else None


def _download(card: BackboneCard) -> str:
    """Fetch the weights the way orb-models does: cached_path, into its cache."""
    import cached_path

    return cached_path.cached_path(card.weights.source)


def load(card: BackboneCard, weights: Path | None = None, *, random_weights: bool = False, seed: int = 0,
         precision: str | None = None, trust_unpinned_weights: bool = False, download: bool = True) -> OrbBackbone:
    """An ORB backbone for ``card`` (the one load signature, :class:`~uipbench.adapters.interface.Loader`).

    Weights come from ``weights``, else the card's environment variable, else cached_path's cache,
    else (``download=True``) orb's own download through cached_path; the file is checked against
    the card's sha256 and read with ``torch.load(weights_only=True)`` (tensors only, no code runs),
    so an unpinned file needs no trust, only a warning naming its digest.  With ``random_weights``
    the card's architecture is built with weights drawn from ``seed``.
    """
    check_precision(card.family, precision, PRECISIONS)
    if random_weights:
        orb = import_orb()
        return OrbBackbone(card, build_random_model(card, seed, orb), random_identity(seed), orb)
    path = resolve_weights(card, weights, _cached_file(card), lambda: _download(card), download)
    digest = checked_weights(card, path, unpickles=False, trust_unpinned=trust_unpinned_weights)
    orb = import_orb()
    return OrbBackbone(card, load_weights_file(card, path, orb), digest, orb)
