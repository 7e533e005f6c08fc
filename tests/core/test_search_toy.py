"""A toy backbone for the search tests: a Morse pair potential that binds S to the metal and S to S.

Torch, float64, connected to the positions, so it serves both the bare path (``calculator()``)
and the Δ path (``forward_differentiable`` + ``DeltaCalculator``).  The tests here check the toy
itself (forces are −dE/dx), so the search tests stand on a sound potential.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.fd import calculate_numerical_forces
from ase.data import atomic_numbers

from uipbench.adapters.base import Backbone, DifferentiableOutput, EmbeddingMetadata, StructureEmbedding
from uipbench.datasets.protocol import PROTOCOL_NAME
from uipbench.delta import DeltaGPR
from uipbench.search import SearchProblem

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # tiny graphs: one thread is fastest, and the test machine is shared

CUTOFF = 4.5  # Å
#: Morse parameters (D eV, r0 Å, a 1/Å) per element pair; S–S binds, so dimers compete with adatoms
MORSE = {("S", "S"): (1.0, 2.05, 1.8), ("M", "S"): (0.9, 2.3, 2.5), ("M", "M"): (0.4, 2.57, 1.6)}
CENTRES = np.linspace(1.8, 4.2, 5)


class ToyCard:
    name = "toy-morse"
    cutoff = CUTOFF
    weights_sha256 = hashlib.sha256(b"toy-morse").hexdigest()
    embedding_width = 2 * len(CENTRES)
    embedding_layer = "radial sums"
    environment = "none"


class StopSearch(RuntimeError):
    """Raised by the toy calculator to simulate a search killed mid-run."""


def _morse_terms(kind: tuple[str, str]) -> tuple[float, float, float, float, float]:
    depth, r0, a = MORSE[kind]
    ec = np.exp(-a * (CUTOFF - r0))
    return depth, r0, a, depth * ((1 - ec) ** 2 - 1), 2 * depth * a * (1 - ec) * ec


def _morse(kind: tuple[str, str], r):
    """Shifted-force Morse: V(r) − V(rc) − (r − rc) V'(rc), so energy and force vanish at the cutoff.
    ``r`` a NumPy array or a torch tensor."""
    depth, r0, a, vc, dvc = _morse_terms(kind)
    exp = torch.exp if isinstance(r, torch.Tensor) else np.exp
    return depth * ((1 - exp(-a * (r - r0))) ** 2 - 1) - vc - (r - CUTOFF) * dvc


def _morse_derivative(kind: tuple[str, str], r: np.ndarray) -> np.ndarray:
    depth, r0, a, _, dvc = _morse_terms(kind)
    e = np.exp(-a * (r - r0))
    return 2 * depth * a * (1 - e) * e - dvc


def _pairs(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, offset vector) of every pair within the cutoff, images up to 2 cells in-plane and 1 along z."""
    shifts = np.array([(a, b, c) for a in range(-2, 3) for b in range(-2, 3) for c in (-1, 0, 1)], float)
    offsets = shifts @ atoms.cell.array
    vectors = atoms.positions[None, :, None, :] + offsets[None, None] - atoms.positions[:, None, None, :]
    distance = np.linalg.norm(vectors, axis=-1)
    i, j, image = np.nonzero((distance < CUTOFF) & (distance > 1e-8))
    return i, j, offsets[image]


def _kinds(numbers: np.ndarray, i: np.ndarray, j: np.ndarray):
    is_s = numbers == 16
    return ((("S", "S"), is_s[i] & is_s[j]), (("M", "S"), is_s[i] != is_s[j]), (("M", "M"), ~is_s[i] & ~is_s[j]))


class ToyBackbone(Backbone):
    """Morse pair potential on any metal (``M``) and S; counts its force calls and can stop after N of them.

    ``calculator()`` evaluates it in NumPy with analytic forces (fast, the bare path);
    ``forward_differentiable`` in torch (the Δ path); a test below checks that they agree.
    """

    def __init__(self, fail_after: int | None = None, supported: tuple[str, ...] = ("Cu", "Ag", "Au", "S")):
        self.card = ToyCard()
        self.calls = 0
        self.fail_after = fail_after
        self._supported = frozenset(atomic_numbers[s] for s in supported)

    @property
    def supported_numbers(self) -> frozenset[int]:
        return self._supported

    def metadata(self) -> EmbeddingMetadata:
        return EmbeddingMetadata(self.card.name, "none", "0", self.card.weights_sha256, "radial sums",
                                 self.card.embedding_width)

    def count_call(self) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise StopSearch(f"stopped after {self.fail_after} force calls")

    def energy_forces(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        self.count_call()
        i, j, offsets = _pairs(atoms)
        vectors = atoms.positions[j] + offsets - atoms.positions[i]
        r = np.linalg.norm(vectors, axis=1)
        energy, forces = 0.0, np.zeros((len(atoms), 3))
        for kind, mask in _kinds(atoms.numbers, i, j):
            energy += 0.5 * _morse(kind, r[mask]).sum()
            np.add.at(forces, i[mask], (_morse_derivative(kind, r[mask]) / r[mask])[:, None] * vectors[mask])
        return float(energy), forces

    def _embed_batch(self, structures, forces):
        out = []
        for atoms in structures:
            o = self.forward_differentiable(atoms)
            out.append(StructureEmbedding(float(o.energy.detach()), o.embedding.detach().numpy().copy(), o.numbers))
        return out

    def forward_differentiable(self, atoms: Atoms) -> DifferentiableOutput:
        self.count_call()
        i, j, offsets = _pairs(atoms)
        positions = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
        ti, tj = torch.as_tensor(i), torch.as_tensor(j)
        r = (positions[tj] + torch.as_tensor(offsets) - positions[ti]).norm(dim=1)
        energy = torch.zeros((), dtype=torch.float64)
        for kind, mask in _kinds(atoms.numbers, i, j):
            energy = energy + 0.5 * _morse(kind, r[torch.as_tensor(mask)]).sum()
        radial = torch.exp(-((r[:, None] - torch.tensor(CENTRES)) ** 2) / 0.5)
        is_s = torch.as_tensor(atoms.numbers[j] == 16, dtype=torch.float64)[:, None]
        blocks = [torch.zeros(len(atoms), len(CENTRES), dtype=torch.float64).index_add(0, ti, radial * m)
                  for m in (is_s, 1 - is_s)]
        return DifferentiableOutput(positions, energy, torch.cat(blocks, dim=1), atoms.numbers.astype(np.int64))

    def calculator(self) -> Calculator:
        return ToyCalculator(self)


class ToyCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, backbone: ToyBackbone):
        super().__init__()
        self.backbone = backbone

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces = self.backbone.energy_forces(self.atoms)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def toy_problem(n_sulfur: int = 2, repeat: int = 2, metal: str = "Cu", **changes) -> SearchProblem:
    """n S on a protocol-v1 metal(111) repeat x repeat slab, bottom layer fixed."""
    fields = dict(name=f"toy-{metal.lower()}-s{n_sulfur}-{repeat}x{repeat}", description="test problem",
                  protocol=PROTOCOL_NAME, metal=metal, surface_cell=(repeat, repeat), layers=3, fixed_layers=1,
                  vacuum=6.0, composition=(("S", n_sulfur),), height_range=(1.2, 3.2),
                  min_distances=tuple(sorted({(tuple(sorted((metal, metal))), 2.2), (tuple(sorted((metal, "S"))), 1.8),
                                              (("S", "S"), 1.8)})))
    fields.update(changes)
    return SearchProblem(**fields)


def toy_delta_model() -> DeltaGPR:
    """A Δ-model on the toy's embedding, fitted on random toy candidates of Cu + S (made-up residuals)."""
    from uipbench.search.candidates import CandidateGenerator
    from uipbench.search.engine import rng_for

    generator = CandidateGenerator(toy_problem())
    structures = [generator.random(rng_for(7, k, 0)) for k in range(8)]
    residual = np.array([0.1 * a.positions[12:, 2].mean() - 1.0 for a in structures])
    return DeltaGPR("atomic", random_state=0).fit(ToyBackbone().embed(structures).structures, residual)


def test_toy_forces_are_minus_energy_gradient():
    atoms = toy_problem().template() + Atoms("S2", positions=[[1.0, 1.0, 13.0], [2.9, 1.2, 13.4]])
    atoms.pbc = True
    atoms.calc = ToyBackbone().calculator()
    forces = atoms.get_forces(apply_constraint=False)
    indices = [len(atoms) - 1, 5]
    atoms.set_constraint()
    numeric = calculate_numerical_forces(atoms, eps=1e-5, iatoms=indices)
    np.testing.assert_allclose(forces[indices], numeric, atol=1e-5)  # numeric: the rows of ``indices``


def test_toy_numpy_and_torch_paths_agree():
    backbone = ToyBackbone()
    atoms = toy_problem().template() + Atoms("S2", positions=[[1.0, 1.0, 12.9], [2.9, 1.2, 13.4]])
    atoms.pbc = True
    energy, forces = backbone.energy_forces(atoms)
    out = backbone.forward_differentiable(atoms)
    (grad,) = torch.autograd.grad(out.energy, out.positions)
    assert energy == pytest.approx(float(out.energy.detach()), abs=1e-10)
    np.testing.assert_allclose(forces, -grad.numpy(), atol=1e-10)
    assert backbone.calls == 2


def test_toy_binds_sulfur_to_metal_and_to_sulfur():
    backbone = ToyBackbone()
    slab = toy_problem().template()
    slab.pbc = True
    far = slab + Atoms("S2", positions=[[1.0, 1.0, 30.0], [1.0, 1.0, 36.0]])
    far.cell[2, 2] = 60.0
    near = slab.copy() + Atoms("S2", positions=[[1.0, 1.0, 12.6], [3.0, 1.0, 12.6]])
    energy = lambda a: float(backbone.forward_differentiable(a).energy.detach())  # noqa: E731
    assert energy(near) < energy(far) - 1.0
    dimer = Atoms("S2", positions=[[0, 0, 0], [2.05, 0, 0]], cell=[20, 20, 20], pbc=True)
    apart = Atoms("S2", positions=[[0, 0, 0], [4.0, 0, 0]], cell=[20, 20, 20], pbc=True)
    assert energy(dimer) == pytest.approx(float(_morse(("S", "S"), np.array([2.05]))[0]), abs=1e-12)
    assert energy(dimer) < energy(apart) - 0.5
