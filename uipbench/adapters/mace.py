"""MACE adapter (MACE-MP-0 and relatives), run inside the ``mace`` environment.

Embedding: the invariant (``0e``) channels of the node features of every
interaction layer, concatenated in layer order.  For MACE-MP-0 medium these are
the 128 scalars of the first product-basis output (``128x0e+128x1o``, of which
the layer-1 linear readout sees only the scalars) and the 128 scalars of the
last product-basis output (the input of the non-linear readout MLP): 256 in
all, the same numbers as ``MACECalculator.get_descriptors(invariants_only=True)``.

The model runs in float64 on the CPU.  Importing ``mace`` needs two fixes for
torch 2.13, both applied by :func:`import_mace`: e3nn 0.4.4 loads its constants
with ``torch.load`` under the weights-only default, which refuses ``slice``
unless it is allow-listed; and ``mace.calculators`` sets
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the whole process at import, which is
undone here so that no other ``torch.load`` in the process silently unpickles.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from ase import Atoms

from ..embedding import EmbeddingMetadata, StructureEmbedding
from ._common import FAMILY_PRECISIONS, MPTRJ_NUMBERS, check_precision, checked_weights, random_identity, \
    resolve_weights, split_flat
from .card import BackboneCard, MaceArchitecture
from .errors import CardError, WeightsError
from .interface import Backbone, DifferentiableOutput
from .torch_tools import default_dtype, frozen_float64

if TYPE_CHECKING:
    import torch

#: precisions the adapter runs in (the first is the default)
PRECISIONS = FAMILY_PRECISIONS["mace"]

_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def _restored_env(name: str) -> Iterator[None]:
    """Put the environment variable ``name`` back the way it was on exit."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _e3nn_jit_disabled() -> Iterator[None]:
    """e3nn builds its generated code without TorchScript-compiling it (same numbers, much faster)."""
    import e3nn

    before = e3nn.get_optimization_defaults()["jit_script_fx"]
    e3nn.set_optimization_defaults(jit_script_fx=False)
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(jit_script_fx=before)


def import_mace() -> SimpleNamespace:
    """Import the parts of ``mace`` the adapter uses, with the torch 2.13 workarounds."""
    import torch

    torch.serialization.add_safe_globals([slice])  # e3nn 0.4.4 constants.pt holds slices
    # mace prints a cuequivariance notice on stdout at import: keep stdout clean for worker protocols
    with _restored_env(_NO_WEIGHTS_ONLY), contextlib.redirect_stdout(sys.stderr):
        from e3nn import o3
        from mace import data, modules
        from mace.calculators import MACECalculator
        from mace.calculators.foundations_models import download_mace_mp_checkpoint
        from mace.tools import torch_geometric, utils
    return SimpleNamespace(o3=o3, data=data, modules=modules, MACECalculator=MACECalculator,
                           download=download_mace_mp_checkpoint, torch_geometric=torch_geometric,
                           utils=utils)


def package_cache_path(card: BackboneCard) -> Path:
    """Where ``mace_mp`` caches the card's weights file (honours ``XDG_CACHE_HOME``)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mace"
    name = "".join(c for c in Path(card.weights.source).name if c.isalnum() or c == "_")
    return cache / name


def _load_model_file(card: BackboneCard, path: Path, digest: str) -> "torch.nn.Module":
    """Unpickle a ``.model`` file: a whole pickled nn.Module (e3nn code generators included), which
    ``weights_only=True`` cannot load, so this runs only on a file whose sha256 is pinned on the card
    and verified, or that the user trusts explicitly (see :func:`load`).  The bytes unpickled are the
    bytes whose sha256 is ``digest`` (read once: a file replaced after the check is refused)."""
    import hashlib
    import io

    import torch

    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise WeightsError(f"{card.name}: weights file {path} changed after its sha256 was checked; not loaded")
    with _e3nn_jit_disabled():
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def build_random_model(card: BackboneCard, seed: int, mace: SimpleNamespace) -> "torch.nn.Module":
    """The card's ``[architecture]`` with random weights drawn from ``seed``.

    Only the architecture is the published one; the statistics fitted on MPtrj
    (E0s, scale/shift, average number of neighbours) are neutral placeholders.
    """
    import torch

    arch: MaceArchitecture = card.architecture
    numbers = sorted(MPTRJ_NUMBERS)
    interactions = mace.modules.interaction_classes
    with default_dtype(torch.float64), torch.random.fork_rng(devices=[]), _e3nn_jit_disabled():
        torch.manual_seed(seed)
        model = getattr(mace.modules, arch.model)(
            r_max=arch.r_max, num_bessel=arch.num_bessel, num_polynomial_cutoff=arch.num_polynomial_cutoff,
            max_ell=arch.max_ell, interaction_cls=interactions[arch.interaction],
            interaction_cls_first=interactions[arch.interaction_first],
            num_interactions=arch.num_interactions, num_elements=len(numbers),
            hidden_irreps=mace.o3.Irreps(arch.hidden_irreps), MLP_irreps=mace.o3.Irreps(arch.MLP_irreps),
            atomic_energies=np.zeros(len(numbers)), avg_num_neighbors=60.0, atomic_numbers=numbers,
            correlation=arch.correlation, gate=getattr(torch.nn.functional, arch.gate),
            radial_MLP=list(arch.radial_MLP), atomic_inter_scale=1.0, atomic_inter_shift=0.0,
            use_reduced_cg=False,
        )
    return model


def scalar_channels(model: "torch.nn.Module", o3: Any) -> list[int]:
    """Column indices of the ``0e`` channels of every layer inside ``node_feats``."""
    columns: list[int] = []
    offset = 0
    for product in model.products:
        irreps = o3.Irreps(str(product.linear.irreps_out))
        for mul_ir, block in zip(irreps, irreps.slices()):
            if mul_ir.ir.l == 0 and mul_ir.ir.p == 1:
                columns.extend(range(offset + block.start, offset + block.stop))
        offset += irreps.dim
    return columns


class MaceBackbone(Backbone):
    """A MACE model seen through the scalar node features of all its interaction layers."""

    batch_size = 8

    def __init__(self, card: BackboneCard, model: "torch.nn.Module", weights_sha256: str,
                 mace: SimpleNamespace) -> None:
        import torch

        self.card = card
        self._mace = mace
        self.model = frozen_float64(model)
        self._weights_sha256 = weights_sha256
        self._columns = torch.tensor(scalar_channels(self.model, mace.o3), dtype=torch.long)
        self._numbers = frozenset(int(z) for z in self.model.atomic_numbers)
        self._z_table = mace.utils.AtomicNumberTable(sorted(int(z) for z in self.model.atomic_numbers))
        self._heads = list(getattr(self.model, "heads", None) or ["Default"])
        if len(self._columns) != card.embedding_width:
            raise CardError(f"{card.name}: the model has {len(self._columns)} scalar node channels, "
                            f"the card says {card.embedding_width}")
        if abs(float(self.model.r_max) - self.cutoff) > 1e-6:
            raise CardError(f"{card.name}: model r_max {float(self.model.r_max)} != card cutoff {self.cutoff}")

    @property
    def supported_numbers(self) -> frozenset[int]:
        return self._numbers

    def metadata(self) -> EmbeddingMetadata:
        return self._card_metadata(self._weights_sha256, (self.card.package, "torch", "e3nn", "ase"))

    def _graph_batch(self, structures: Sequence[Atoms]) -> Any:
        """mace's torch_geometric batch of AtomicData for fully periodic structures."""
        import torch

        with default_dtype(torch.float64):
            graphs = [
                self._mace.data.AtomicData.from_config(
                    self._mace.data.config_from_atoms(a, head_name=self._heads[0]),
                    z_table=self._z_table, cutoff=self.cutoff, heads=self._heads)
                for a in structures
            ]
        return self._mace.torch_geometric.Batch.from_data_list(graphs)

    def _run(self, data: dict[str, "torch.Tensor"], forces: bool) -> dict[str, "torch.Tensor"]:
        return self.model(data, compute_force=forces, training=False)

    def _embed_batch(self, structures: list[Atoms], forces: bool) -> list[StructureEmbedding]:
        import torch

        batch = self._graph_batch(structures)
        with torch.set_grad_enabled(forces):
            out = self._run(batch.to_dict(), forces)
        energies = out["energy"].detach().double().numpy()
        features = out["node_feats"].detach()[:, self._columns].double().numpy()
        all_forces = out["forces"].detach().double().numpy() if forces else None
        return split_flat(structures, energies, features, all_forces, batch.ptr.numpy())

    def forward_differentiable(self, atoms: Atoms) -> DifferentiableOutput:
        """Energy and scalar node features built on a ``positions`` leaf tensor that requires grad."""
        import torch

        prepared = self.prepare(atoms)
        data = self._graph_batch([prepared]).to_dict()
        positions = torch.tensor(prepared.positions, dtype=torch.float64, requires_grad=True)
        data["positions"] = positions
        out = self._run(data, forces=False)
        return DifferentiableOutput(
            positions=positions, energy=out["energy"][0], embedding=out["node_feats"][:, self._columns],
            numbers=np.asarray(atoms.numbers, dtype=np.int64).copy(),
        )

    def calculator(self) -> Any:
        """mace's own MACECalculator on this model (float64, CPU)."""
        return self._mace.MACECalculator(models=self.model, device="cpu", default_dtype="float64")


def load(card: BackboneCard, weights: Path | None = None, *, random_weights: bool = False, seed: int = 0,
         precision: str | None = None, trust_unpinned_weights: bool = False, download: bool = True) -> MaceBackbone:
    """A MACE backbone for ``card`` (the one load signature, :class:`~uipbench.adapters.interface.Loader`).

    Weights come from ``weights``, else the card's environment variable, else mace's cache, else
    (``download=True``) mace's own downloader.  The file is a pickled model, so it is unpickled only
    when its sha256 is pinned on the card and matches, or when ``trust_unpinned_weights`` says the
    user trusts it; otherwise an :class:`~uipbench.adapters.errors.UntrustedWeightsError` naming the
    file and its digest, before anything is unpickled.  With ``random_weights`` the card's
    architecture is built with weights drawn from ``seed`` and no file is read.
    """
    check_precision(card.family, precision, PRECISIONS)
    if random_weights:
        mace = import_mace()
        return MaceBackbone(card, build_random_model(card, seed, mace), random_identity(seed), mace)
    path = resolve_weights(card, weights, package_cache_path(card), lambda: import_mace().download(card.weights.source),
                           download)
    digest = checked_weights(card, path, unpickles=True, trust_unpinned=trust_unpinned_weights)
    mace = import_mace()
    return MaceBackbone(card, _load_model_file(card, path, digest), digest, mace)
