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

import contextlib
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms

from .base import Backbone, DifferentiableOutput, EmbeddingMetadata, StructureEmbedding
from .card import BackboneCard, CardError, WeightsError, verify_weights
from .torch_tools import default_dtype, frozen_float64

if TYPE_CHECKING:
    import torch

#: elements of MPtrj, the training set of the ``mptrj-only`` ORB models
MPTRJ_NUMBERS = frozenset(range(1, 84)) | frozenset(range(89, 95))


def import_orb() -> SimpleNamespace:
    """Import the parts of ``orb_models`` (and its downloader ``cached_path``) the adapter uses."""
    import cached_path
    from orb_models.forcefield import atomic_system, base, pretrained
    from orb_models.forcefield.calculator import ORBCalculator

    return SimpleNamespace(atomic_system=atomic_system, base=base, pretrained=pretrained,
                           ORBCalculator=ORBCalculator, cached_path=cached_path)


def find_weights(card: BackboneCard, weights: Path | str | None = None) -> Path | None:
    """The weights file to use without downloading: argument, then env variable, then cached_path's cache."""
    chosen = card.local_weights(weights)
    if chosen is not None:
        return chosen
    import cached_path

    return cached_path.find_latest_cached(card.weights["source"])


def missing_weights_message(card: BackboneCard) -> str:
    return (f"{card.name}: weights file {card.weights.get('file', card.weights['source'])} not available "
            f"(no download possible, not in cached_path's cache); "
            f"download {card.weights['source']} and set {card.weights_env_var} to its path")


def _download(card: BackboneCard, orb: SimpleNamespace) -> Path:
    """Fetch the weights the way orb-models does (cached_path, into its cache), or raise WeightsError."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return Path(orb.cached_path.cached_path(card.weights["source"]))
    except Exception as exc:  # network errors come in many kinds
        raise WeightsError(f"{missing_weights_message(card)} (download failed: {exc})") from exc


def _checked_digest(card: BackboneCard, path: Path) -> str:
    digest = verify_weights(card, path)
    if not card.weights_sha256:
        warnings.warn(f"{card.name}: the card pins no sha256; using {path} with sha256 {digest} (unverified)",
                      stacklevel=3)
    return digest


def build_architecture(card: BackboneCard, orb: SimpleNamespace) -> "torch.nn.Module":
    """The card's ``[architecture]`` (``orb_v2_architecture``) with torch's default initialisation."""
    arch = card.raw.get("architecture")
    if not arch:
        raise CardError(f"{card.path}: the ORB adapter needs an [architecture] table")
    builders = {"orb_models.forcefield.pretrained.orb_v2_architecture": orb.pretrained.orb_v2_architecture}
    if arch["builder"] not in builders:
        raise CardError(f"{card.path}: unknown ORB builder {arch['builder']!r}; known: {', '.join(builders)}")
    config = orb.atomic_system.SystemConfig(radius=float(arch["radius"]),
                                            max_num_neighbors=int(arch["max_num_neighbors"]))
    return builders[arch["builder"]](num_message_passing_steps=int(arch["num_message_passing_steps"]),
                                     device="cpu", system_config=config)


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
        features_np, energy_np = features.double().numpy(), energy.double().numpy()
        forces_np = direct.double().numpy() if direct is not None else None
        return [
            StructureEmbedding(
                energy=float(energy_np[i]),
                embedding=np.ascontiguousarray(features_np[ptr[i]:ptr[i + 1]]),
                numbers=np.asarray(atoms.numbers, dtype=np.int64).copy(),
                forces=None if forces_np is None else np.ascontiguousarray(forces_np[ptr[i]:ptr[i + 1]]),
            )
            for i, atoms in enumerate(structures)
        ]

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


def load(card: BackboneCard, weights: Path | None = None, *, random_weights: bool = False,
         seed: int = 0, download: bool = True) -> OrbBackbone:
    """An ORB backbone for ``card``.

    Weights come from ``weights``, else the card's environment variable, else
    cached_path's cache, else (``download=True``) orb's own download through
    cached_path; the file is checked against the card's sha256 and loaded with
    ``torch.load(weights_only=True)``.  With ``random_weights`` the card's
    architecture is built with weights drawn from ``seed``.
    """
    orb = import_orb()
    if random_weights:
        return OrbBackbone(card, build_random_model(card, seed, orb), f"random:seed={seed}", orb)
    path = find_weights(card, weights)
    if path is None:
        if not download:
            raise WeightsError(missing_weights_message(card))
        path = _download(card, orb)
    digest = _checked_digest(card, path)
    return OrbBackbone(card, load_weights_file(card, path, orb), digest, orb)
