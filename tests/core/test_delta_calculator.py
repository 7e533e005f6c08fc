"""DeltaCalculator with a toy torch backbone: forces = −dE/dx by finite differences, and a relaxation."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.constraints import FixAtoms
from ase.neighborlist import neighbor_list
from ase.optimize import BFGS

torch = pytest.importorskip("torch")

from uipbench.adapters.base import Backbone, DifferentiableOutput, EmbeddingMetadata, StructureEmbedding  # noqa: E402
from uipbench.delta import BackboneMismatchError, DeltaCalculator, DeltaGPR, load, save  # noqa: E402

CUTOFF = 5.0
CENTRES = np.linspace(1.8, 4.6, 6)
SPECIES = (16, 29)


class ToyCard:
    name = "toy"
    cutoff = CUTOFF
    weights_sha256 = "a" * 64


def _cutoff_fn(r: "torch.Tensor") -> "torch.Tensor":
    return 0.5 * (torch.cos(torch.pi * r / CUTOFF) + 1.0)


class ToyBackbone(Backbone):
    """Embedding: Gaussian radial features of neighbour distances (PBC), one block per neighbour species;
    energy: a smoothly cut Morse pair potential.  All in float64 torch, connected to the positions."""

    def __init__(self, direct_forces: bool = False):
        self.card = ToyCard()
        self.direct_forces = direct_forces

    @property
    def supported_numbers(self) -> frozenset[int]:
        return frozenset(SPECIES)

    def metadata(self) -> EmbeddingMetadata:
        return EmbeddingMetadata("toy", "none", "0", "a" * 64, "radial", len(CENTRES) * len(SPECIES))

    def _embed_batch(self, structures, forces):
        out = []
        for atoms in structures:
            o = self.forward_differentiable(atoms)
            f = None
            if forces:
                f = (o.forces if o.forces is not None else -torch.autograd.grad(o.energy, o.positions)[0]).numpy()
            out.append(StructureEmbedding(float(o.energy.detach()), o.embedding.detach().numpy(), o.numbers, f))
        return out

    def forward_differentiable(self, atoms: Atoms) -> DifferentiableOutput:
        i, j, shift = neighbor_list("ijS", atoms, CUTOFF)
        positions = torch.tensor(atoms.positions, dtype=torch.float64, requires_grad=True)
        offsets = torch.tensor(shift @ atoms.cell.array, dtype=torch.float64)
        r = (positions[j] + offsets - positions[i]).norm(dim=1)
        fc = _cutoff_fn(r)
        radial = torch.exp(-((r[:, None] - torch.tensor(CENTRES)) ** 2) / 0.5) * fc[:, None]
        blocks = []
        for z in SPECIES:
            mask = torch.tensor(atoms.numbers[j] == z, dtype=torch.float64)[:, None]
            blocks.append(torch.zeros(len(atoms), len(CENTRES), dtype=torch.float64).index_add(0, torch.tensor(i),
                                                                                              radial * mask))
        embedding = torch.cat(blocks, dim=1)
        energy = 0.5 * (0.3 * ((1 - torch.exp(-1.3 * (r - 2.55))) ** 2 - 1.0) * fc).sum()
        forces = None
        if self.direct_forces:  # like ORB: the model outputs forces itself (here exact, so FD still applies)
            (grad,) = torch.autograd.grad(energy, positions, retain_graph=True)
            forces = -grad.detach()
        return DifferentiableOutput(positions, energy, embedding, atoms.numbers.astype(np.int64), forces)

    def calculator(self):
        raise NotImplementedError


def _slab() -> Atoms:
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=6.0, a=3.6)
    add_adsorbate(slab, "S", 1.6, "fcc")
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 2]))
    return slab


def _residual(atoms: Atoms) -> float:
    """The 'DFT − backbone' truth of the toy: a different smooth pair term (+ a per-species offset)."""
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    s = atoms.numbers == 16
    return float(0.2 * np.exp(-((d[s] - 2.2) ** 2)).sum() - 0.05 * np.exp(-((d - 2.6) ** 2)).sum() + 0.3 * s.sum())


@pytest.fixture(scope="module")
def fitted() -> tuple[ToyBackbone, DeltaGPR]:
    backbone = ToyBackbone()
    rng = np.random.default_rng(0)
    structures, y = [], []
    for k in range(24):
        atoms = _slab()
        atoms.rattle(0.15, seed=k)
        atoms.positions[-1] += rng.normal(scale=0.3, size=3)
        structures.append(atoms)
        y.append(_residual(atoms))
    batch = backbone.embed(structures)
    delta = DeltaGPR("atomic", offset=False, random_state=0).fit(batch.structures, np.array(y))
    return backbone, delta


def _finite_difference_forces(calc: DeltaCalculator, atoms: Atoms, indices, h: float = 1e-4) -> np.ndarray:
    out = np.zeros((len(indices), 3))
    for n, i in enumerate(indices):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                probe = atoms.copy()
                probe.positions[i, k] += sign * h
                probe.calc = calc
                energies.append(probe.get_potential_energy())
            out[n, k] = -(energies[0] - energies[1]) / (2 * h)
    return out


@pytest.mark.parametrize("direct_forces", [False, True])
def test_forces_are_minus_energy_gradient(fitted, direct_forces):
    _, delta = fitted
    backbone = ToyBackbone(direct_forces=direct_forces)
    atoms = _slab()
    atoms.rattle(0.1, seed=99)
    calc = DeltaCalculator(backbone, delta)
    atoms.calc = calc
    forces = atoms.get_forces(apply_constraint=False)
    indices = [len(atoms) - 1, 0, 4]
    np.testing.assert_allclose(forces[indices], _finite_difference_forces(calc, atoms, indices), atol=1e-3)
    atoms.get_potential_energy()
    res = calc.results
    assert res["energy"] == pytest.approx(res["backbone_energy"] + res["delta_energy"])
    assert res["free_energy"] == res["energy"]
    assert res["delta_energy"] == pytest.approx(delta.predict(backbone.embed([atoms]).structures)[0], abs=1e-9)
    assert res["energy_std"] >= 0.0
    out = backbone.forward_differentiable(atoms)
    bare = -torch.autograd.grad(out.energy, out.positions)[0].numpy()
    assert np.abs(forces - bare).max() > 1e-2  # the Δ contributes to the forces


def test_relaxation_converges(fitted):
    backbone, delta = fitted
    atoms = _slab()
    atoms.rattle(0.05, seed=7)
    atoms.calc = DeltaCalculator(backbone, delta)
    converged = BFGS(atoms, logfile=None).run(fmax=0.05, steps=300)
    assert converged
    assert np.abs(atoms.get_forces()).max() < 0.05 * 1.0001


def test_loaded_model_refuses_another_backbone(fitted, tmp_path):
    backbone, delta = fitted
    save(delta, tmp_path / "toy", "toy", "a" * 64)
    DeltaCalculator(backbone, load(tmp_path / "toy"))  # same card: fine
    save(delta, tmp_path / "other", "other-backbone", "a" * 64)
    with pytest.raises(BackboneMismatchError, match="fitted on backbone 'other-backbone', not 'toy'"):
        DeltaCalculator(backbone, load(tmp_path / "other"))
    save(delta, tmp_path / "weights", "toy", "b" * 64)
    with pytest.raises(BackboneMismatchError, match="weights"):
        DeltaCalculator(backbone, load(tmp_path / "weights"))


def test_lazy_export_does_not_import_torch():
    code = ("import sys, uipbench; assert 'torch' not in sys.modules; "
            "from uipbench import DeltaCalculator; from uipbench.delta import DeltaGPR; "
            "assert 'torch' not in sys.modules; print(DeltaCalculator.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "DeltaCalculator"


def test_a_force_trained_model_drops_into_the_calculator_unchanged(tmp_path):
    """Fit on energies and force residuals (Jacobian by central differences of the toy's embedding); the
    calculator's Δ-forces are the model's own, and closer to the true residual forces than energy-only ones."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from uipbench.cache import EmbeddingCache
    from uipbench.delta.jacobian import force_labels
    from uipbench.harness.fit import fit_delta

    backbone = ToyBackbone()
    rng = np.random.default_rng(1)

    def residual_forces(atoms: Atoms) -> np.ndarray:
        out = np.zeros((len(atoms), 3))
        for a in range(len(atoms)):
            for c in range(3):
                p, m = atoms.copy(), atoms.copy()
                p.positions[a, c] += 1e-5
                m.positions[a, c] -= 1e-5
                out[a, c] = -(_residual(p) - _residual(m)) / 2e-5
        return out

    structures = []
    for k in range(16):
        atoms = _slab()
        atoms.rattle(0.15, seed=100 + k)
        atoms.positions[-1] += rng.normal(scale=0.3, size=3)
        (view,) = backbone.embed([atoms], forces=True).structures
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(labelled, energy=view.energy + _residual(atoms),
                                              forces=view.forces + residual_forces(atoms))
        labelled.info["protocol"] = "toy"
        structures.append(labelled)

    cache = EmbeddingCache(tmp_path)
    with_forces = fit_delta(backbone, structures, forces="adsorbate", cache=cache, random_state=0)
    energy_only = fit_delta(backbone, structures, cache=cache, random_state=0)
    assert with_forces.n_force_labels_ == 3 * len(structures)  # the S atom's

    errors = {}
    for name, model in (("forces", with_forces), ("energy", energy_only)):
        errs = []
        for k in range(3):
            probe = _slab()
            probe.rattle(0.15, seed=500 + k)
            calc = DeltaCalculator(backbone, model)
            probe.calc = calc
            delta_forces = probe.get_forces() - backbone.embed([probe], forces=True).structures[0].forces
            errs.append(np.abs(delta_forces - residual_forces(probe))[-1].mean())  # on the S atom
            if name == "forces" and k == 0:  # the calculator's Δ-forces are the fitted rows' (the model's own)
                zeros = np.zeros((len(probe), 3))
                (labels,) = force_labels(backbone, [probe], [zeros], [zeros], "adsorbate", cache=cache)
                (rows_forces,) = model.predict_forces(backbone.embed([probe]).structures, [labels])
                np.testing.assert_allclose(rows_forces[0], delta_forces[-1], rtol=1e-4, atol=1e-6)
        errors[name] = float(np.mean(errs))
    assert errors["forces"] < 0.75 * errors["energy"], errors  # measured 0.023 vs 0.042 eV/Å
