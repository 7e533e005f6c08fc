"""Protocol v1 for the oxide's references: slab jobs unchanged, bulk and molecule jobs with their own
k-points and spin, and the runner's GPAW arguments (GPAW replaced by a recorder, never run)."""
from __future__ import annotations

import hashlib
import json
import sys
import types

import numpy as np
import pytest
from ase import Atoms

from uipbench.datasets import gpaw_runner
from uipbench.datasets.cells import OXIDE_8, area_1x1, cell_area, make_cell_slab
from uipbench.datasets.generate import plan
from uipbench.datasets.label import job_for
from uipbench.datasets.protocol import KIND_KEY, PROTOCOL_V1, kind_settings
from uipbench.datasets.validation import validation_entry

#: sha256 of the sorted-key JSON of the job of plan("cu-s", 1)[0] and validation_entry("ag-s", 3), as the
#: labelling wrote them before the oxide (computed with that code): scratch results stay valid
V1_JOB_SHA256 = {"plan": "39c0c2e527ccbb64b3bf16a50a0b93f0b80ce355a0df450a1f5672c4bbcf729b",
                 "validation": "3f637cbfe5554b623fbacf5320f957d8d481b3e2330c2e124e40617f8ffada72"}


def _sha(job: dict) -> str:
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def test_v1_protocol_and_slab_jobs_are_unchanged():
    assert PROTOCOL_V1.to_dict() == {
        "name": "gpaw-lcao-dzp-pbe-v1", "code": "gpaw", "mode": "lcao", "basis": "dzp", "xc": "PBE",
        "fermi_dirac_width_ev": 0.1, "spinpol": False, "setups": {"Ag": "11"}, "kpoint_density_angstrom": 20.0,
        "n_metal_layers": 3, "vacuum_angstrom": 6.0, "pbc": (True, True, False)}
    assert _sha(job_for(plan("cu-s", 1)[0].atoms)) == V1_JOB_SHA256["plan"]
    assert _sha(job_for(validation_entry("ag-s", 3).atoms)) == V1_JOB_SHA256["validation"]
    assert "kind" not in job_for(make_cell_slab("Cu", OXIDE_8))


def test_the_8_cell_holds_eight_1x1_cells():
    slab = make_cell_slab("Cu", OXIDE_8)
    z = np.round(slab.positions[:, 2], 3)
    layers, counts = np.unique(z, return_counts=True)
    assert len(slab) == 24 and list(counts) == [8, 8, 8]
    area = float(np.linalg.norm(np.cross(slab.cell[0], slab.cell[1])))
    assert area == pytest.approx(8 * area_1x1("Cu")) == pytest.approx(cell_area("Cu", OXIDE_8.matrix))
    d = slab.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    assert d.min() == pytest.approx(3.632 / np.sqrt(2), abs=1e-6)  # no overlap, fcc nearest neighbours


def _o2() -> Atoms:
    atoms = Atoms("O2", positions=[[5.4, 6, 6], [6.6, 6, 6]], cell=[12, 12, 12], pbc=False)
    atoms.set_initial_magnetic_moments([1.0, 1.0])
    atoms.info[KIND_KEY] = "molecule"
    return atoms


def _bulk_cu() -> Atoms:
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.632)
    atoms.info[KIND_KEY] = "bulk"
    return atoms


def test_bulk_and_molecule_jobs_carry_their_kind_settings():
    job = job_for(_bulk_cu())
    assert job["kind"] == "bulk" and job["kpts"] == [8, 8, 8]  # ceil(20 Å / 2.568 Å) along all three
    assert "spinpol" not in job and job["protocol"] == PROTOCOL_V1.to_dict()
    job = job_for(_o2())
    assert job["kind"] == "molecule" and job["kpts"] == [1, 1, 1]
    assert job["spinpol"] is True and job["magmoms"] == [1.0, 1.0] and job["pbc"] == [False] * 3


@pytest.mark.parametrize("kind, pbc, magmoms, match", [
    ("bulk", (True, True, False), [0.0], "periodic in 3D"),
    ("molecule", (True, True, True), [1.0], "without periodicity"),
    ("slab", (True, True, False), [1.0], "spin-unpolarised"),
    ("surface", (True, True, False), [0.0], "unknown structure kind"),
])
def test_a_structure_that_does_not_fit_its_kind_is_refused(kind, pbc, magmoms, match):
    with pytest.raises(ValueError, match=match):
        kind_settings(kind, pbc, (3.0, 3.0, 3.0), magmoms)


class _Recorder:
    """Stands in for gpaw.GPAW: records its arguments, returns energy −1 eV, moment 2 μB."""

    calls: list[dict] = []
    moments: list[list[float]] = []  # the initial moments of the atoms each call computed

    def __init__(self, **kwargs):
        _Recorder.calls.append(kwargs)
        self.kwargs = kwargs

    def get_potential_energy(self, atoms=None, force_consistent=False):
        _Recorder.moments.append(atoms.get_initial_magnetic_moments().tolist())
        return -1.0

    def get_forces(self, atoms=None):
        return np.zeros((len(atoms), 3))

    def get_magnetic_moment(self, atoms=None):
        return 2.0 if self.kwargs["spinpol"] else 0.0

    def get_property(self, name, atoms=None, allow_calculation=True):
        return {"energy": -1.0, "forces": np.zeros((len(atoms), 3)),
                "magmom": self.get_magnetic_moment(atoms)}[name]


@pytest.fixture
def fake_gpaw(monkeypatch):
    module = types.ModuleType("gpaw")
    module.__version__ = "fake"
    module.GPAW = _Recorder
    module.FermiDirac = lambda width: ("FermiDirac", width)
    monkeypatch.setitem(sys.modules, "gpaw", module)
    _Recorder.calls, _Recorder.moments = [], []
    return _Recorder


def test_runner_gives_gpaw_the_kind_settings(fake_gpaw, tmp_path):
    slab = plan("cu-s", 1)[0].atoms
    result = gpaw_runner.label(json.loads(json.dumps(job_for(slab))), str(tmp_path / "slab.txt"))
    slab_call = fake_gpaw.calls[-1]
    assert slab_call["kpts"] == PROTOCOL_V1.kpoints(tuple(slab.cell.lengths())) and slab_call["spinpol"] is False
    assert slab_call["occupations"] == ("FermiDirac", 0.1) and "magmom" not in result

    result = gpaw_runner.label(json.loads(json.dumps(job_for(_o2()))), str(tmp_path / "o2.txt"))
    o2_call = fake_gpaw.calls[-1]
    assert o2_call["kpts"] == (1, 1, 1) and o2_call["spinpol"] is True
    assert {k: o2_call[k] for k in ("mode", "basis", "xc", "setups")} == {
        "mode": "lcao", "basis": "dzp", "xc": "PBE", "setups": {"Ag": "11"}}
    assert result["magmom"] == 2.0 and result["kpts"] == [1, 1, 1]
    assert fake_gpaw.moments[-1] == [1.0, 1.0] and not any(fake_gpaw.moments[0])  # triplet start; slab none

    gpaw_runner.label(json.loads(json.dumps(job_for(_bulk_cu()))), str(tmp_path / "cu.txt"))
    assert fake_gpaw.calls[-1]["kpts"] == (8, 8, 8) and fake_gpaw.calls[-1]["spinpol"] is False
