"""SevenNet adapter (sevenn package; SevenNet-0 11Jul2024 and 22May2024).

Embedding layer: the node features after the last equivariant gate — in
SevenNet-0 the last interaction keeps only scalars (128x0e), and these are the
input of ``reduce_input_to_hidden``, the first layer of the energy readout.
They are read from the data dict just before that module runs.

Edge vectors are computed here from a positions tensor (``pos[dst] - pos[src]
+ shift · cell``, matscipy's convention, as SevenNet's own torch-sim wrapper
does), so energy and embedding stay connected to the positions.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from ase import Atoms

from ..embedding import EmbeddingMetadata, StructureEmbedding
from ._common import FAMILY_PRECISIONS, check_precision, checked_weights, from_tensors, package_weights, \
    random_identity, resolve_weights, weights_only_read
from .card import BackboneCard
from .interface import Backbone, DifferentiableOutput
from .torch_tools import default_dtype

if TYPE_CHECKING:
    import torch

READOUT_MODULE = "reduce_input_to_hidden"
FORCE_MODULE = "force_output"

#: precisions the adapter runs in (the first is the default)
PRECISIONS = FAMILY_PRECISIONS["sevennet"]


class SevenNetBackbone(Backbone):
    def __init__(self, card: BackboneCard, model, cutoff: float, type_map: dict[int, int],
                 weights_sha256: str, precision: str = "float32", calculator_model=None) -> None:
        import torch

        self.card = card
        self.precision = check_precision(card.family, precision, PRECISIONS)
        self.default_precision = PRECISIONS[0]
        self.dtype = getattr(torch, self.precision)
        self.model = model.to(self.dtype).eval()
        # sevenn's calculator runs float32 graphs: it gets the float32 model when this one is float64
        self._calculator_model = calculator_model if calculator_model is not None else self.model
        self.model.set_is_batch_data(True)
        self._cutoff = float(cutoff)
        self._numbers = frozenset(int(z) for z in type_map)
        self._weights_sha256 = weights_sha256
        names = list(self.model._modules)
        if READOUT_MODULE not in names:
            raise RuntimeError(f"{card.name}: the model has no {READOUT_MODULE!r} module; the embedding layer moved")
        self._modules_before_force = [m for n, m in self.model._modules.items() if n != FORCE_MODULE]
        self._readout_index = names.index(READOUT_MODULE)

    @property
    def cutoff(self) -> float:
        return self._cutoff

    @property
    def supported_numbers(self) -> frozenset[int]:
        return self._numbers

    def metadata(self) -> EmbeddingMetadata:
        return self._card_metadata(self._weights_sha256, ("sevenn", "torch", "e3nn"), model_precision=self.precision)

    def calculator(self):
        """sevenn's own ASE calculator on this model (float32, as sevenn builds its graphs)."""
        import copy

        from sevenn.calculator import SevenNetCalculator

        model = copy.deepcopy(self._calculator_model)
        model.set_is_batch_data(False)
        return SevenNetCalculator(model=model, file_type="model_instance", device="cpu")

    def _graph(self, atoms: Atoms, pos: "torch.Tensor"):
        import sevenn._keys as KEY
        import torch
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        graph = unlabeled_atoms_to_graph(atoms, self._cutoff, with_shift=True)
        edge_idx = torch.as_tensor(graph[KEY.EDGE_IDX], dtype=torch.int64)
        shift = torch.as_tensor(graph[KEY.CELL_SHIFT], dtype=self.dtype)
        cell = torch.as_tensor(np.asarray(atoms.cell.array), dtype=self.dtype)
        edge_vec = pos[edge_idx[1]] - pos[edge_idx[0]] + shift @ cell
        numbers = torch.as_tensor(atoms.numbers, dtype=torch.int64)
        data = {
            KEY.NODE_FEATURE: numbers, KEY.ATOMIC_NUMBERS: numbers, KEY.POS: pos,
            KEY.EDGE_IDX: edge_idx, KEY.EDGE_VEC: edge_vec, KEY.CELL: cell, KEY.CELL_SHIFT: shift,
            KEY.CELL_VOLUME: torch.tensor(float(atoms.cell.volume), dtype=self.dtype),
            KEY.NUM_ATOMS: torch.tensor(len(atoms)), KEY.INFO: {},
        }
        return AtomGraphData(**data)

    def _run(self, structures: list[Atoms], positions: list["torch.Tensor"]):
        """Energies [n_structures] and per-structure embeddings, in the graph of ``positions``."""
        import sevenn._keys as KEY
        import torch
        from torch_geometric.loader.dataloader import Collater

        data = Collater([], follow_batch=None, exclude_keys=None)(
            [self._graph(a, p) for a, p in zip(structures, positions)])
        data = self.model._preprocess(data)
        embedding = None
        for i, module in enumerate(self._modules_before_force):
            if i == self._readout_index:
                embedding = data[KEY.NODE_FEATURE]
            data = module(data)
            if self.dtype != torch.float32:  # sevenn's one-hot embedding is float32 whatever the model
                for key in (KEY.NODE_FEATURE, KEY.NODE_ATTR):
                    if key in data and data[key].dtype == torch.float32:
                        data[key] = data[key].to(self.dtype)
        counts = [len(a) for a in structures]
        return data[KEY.PRED_TOTAL_ENERGY].reshape(-1), list(torch.split(embedding, counts))

    def _embed_batch(self, structures: list[Atoms], forces: bool) -> list[StructureEmbedding]:
        import torch

        positions = [torch.tensor(a.positions, dtype=self.dtype, requires_grad=forces) for a in structures]
        with torch.set_grad_enabled(forces):
            energy, embeddings = self._run(structures, positions)
            grads = torch.autograd.grad(energy.sum(), positions) if forces else [None] * len(structures)
        return from_tensors(structures, energy, embeddings, grads)

    def forward_differentiable(self, atoms: Atoms) -> DifferentiableOutput:
        import torch

        prepared = self.prepare(atoms)
        pos = torch.tensor(prepared.positions, dtype=self.dtype, requires_grad=True)
        energy, embeddings = self._run([prepared], [pos])
        return DifferentiableOutput(positions=pos, energy=energy[0], embedding=embeddings[0],
                                    numbers=prepared.numbers.astype(np.int64))


def _rebuilt_in_float64(checkpoint, model32):
    """The same model built with float64 as torch's default dtype (e3nn bakes constants in it),
    carrying the float32 checkpoint's parameters."""
    import torch
    from sevenn.model_build import build_E3_equivariant_model

    with default_dtype(torch.float64):
        model64 = build_E3_equivariant_model(checkpoint.config)
    state = {k: v.double() if v.is_floating_point() else v for k, v in model32.state_dict().items()}
    model64.load_state_dict(state, strict=True)
    return model64


@contextlib.contextmanager
def _weights_only_checkpoints() -> Iterator[None]:
    """sevenn's checkpoint loader reading weights-only inside the block.

    ``SevenNetCheckpoint`` calls ``torch.load(weights_only=False)`` (module name ``torch_load``);
    here it reads with ``weights_only=True``, allowing only numpy's array and dtype rebuilders (the
    checkpoints hold a few numpy arrays in their config), so no code in the file can run.
    """
    import numpy
    import sevenn.checkpoint as module
    import torch

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct

    original = module.torch_load  # AttributeError if sevenn changes: fail closed, never unpickle
    numpy_globals = [(_reconstruct, "numpy.core.multiarray._reconstruct"), numpy.ndarray, numpy.dtype,
                     *(type(numpy.dtype(t)) for t in ("f4", "f8", "i4", "i8", "b1"))]

    def weights_only(path, *args, **kwargs):
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(numpy_globals):
            return original(path, *args, **kwargs)

    module.torch_load = weights_only
    try:
        yield
    finally:
        module.torch_load = original


def _randomised(model, seed: int):
    """``model`` with every parameter redrawn from N(0, 0.1²) with ``seed`` (torch's global RNG untouched)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for parameter in model.parameters():
            torch.nn.init.normal_(parameter, std=0.1)
    return model


def load(card: BackboneCard, weights: Path | None = None, *, random_weights: bool = False, seed: int = 0,
         precision: str | None = None, trust_unpinned_weights: bool = False, download: bool = True) -> SevenNetBackbone:
    """SevenNet from the wheel's checkpoint, or a local file named by argument / the card's variable (the
    one load signature, :class:`~uipbench.adapters.interface.Loader`; the checkpoints ship with the
    package, so ``download`` has nothing to do).  The checkpoint is read weights-only (see
    :func:`_weights_only_checkpoints`), so an unpinned file needs no trust.  ``random_weights``: the
    checkpoint's architecture with every parameter redrawn from ``seed``."""
    precision = check_precision(card.family, precision, PRECISIONS)
    path = resolve_weights(card, weights, package_weights(card), download=download)
    digest = checked_weights(card, path, unpickles=False, trust_unpinned=trust_unpinned_weights)
    import sevenn._keys as KEY
    from sevenn.util import load_checkpoint

    with _weights_only_checkpoints():
        checkpoint = load_checkpoint(str(path))  # reads nothing yet
        with weights_only_read(card, path):
            config = checkpoint.config  # reads the file
        model32 = checkpoint.build_model()
    if random_weights:
        model32, digest = _randomised(model32, seed), random_identity(seed)
    model = _rebuilt_in_float64(checkpoint, model32) if precision == "float64" else model32
    return SevenNetBackbone(card, model, config[KEY.CUTOFF], config[KEY.TYPE_MAP], digest, precision,
                            calculator_model=model32)
