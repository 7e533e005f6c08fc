"""The labelling pipeline: resumable, atomic, parallel; end to end with GPAW on a tiny system."""
from __future__ import annotations

import os
import stat
import sys
import textwrap


import numpy as np
import pytest
from ase.build import fcc111

from uipbench.datasets.generate import PlanEntry, plan
from uipbench.datasets.io import STRUCTURES_FILE, read_structures
from uipbench.datasets.label import build_dataset, gpaw_available, label_entries
from uipbench.datasets.protocol import ReferenceProtocol

FAKE_GPAW = textwrap.dedent("""\
    #!{python}
    # stands in for Debian's python running gpaw_runner.py: energy = -sum(z), fails on request;
    # logs "name pid parent-pid" when it starts (starts.log) and its name when it finishes (calls.log)
    import json, os, sys, time
    job_path, result_path = sys.argv[2], sys.argv[3]
    job = json.load(open(job_path))
    name = os.path.basename(job_path).split(".")[0]
    scratch = os.path.dirname(result_path)
    with open(os.path.join(scratch, "starts.log"), "a") as fh:
        fh.write(f"{{name}} {{os.getpid()}} {{os.getppid()}}\\n")
    if name in os.environ.get("FAKE_GPAW_FAIL", "").split(","):
        sys.exit("simulated crash in " + name)
    time.sleep({seconds})
    with open(os.path.join(scratch, "calls.log"), "a") as fh:
        fh.write(name + "\\n")
    energy = -sum(p[2] for p in job["positions"])
    json.dump({{"energy": energy, "forces": [[0.0, 0.0, 0.1]] * len(job["numbers"]),
               "gpaw_version": "fake", "kpts": [1, 1, 1], "wall_seconds": 0.01}}, open(result_path, "w"))
""")


def make_fake_gpaw(path, seconds: float = 0.0) -> str:
    """Write an executable fake GPAW interpreter at ``path`` taking ``seconds`` per structure."""
    path.write_text(FAKE_GPAW.format(python=sys.executable, seconds=seconds))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def fake_gpaw(tmp_path) -> str:
    return make_fake_gpaw(tmp_path / "fake_python")


def plan_entries(n: int) -> list[PlanEntry]:
    """``n`` planned cu-s structures that need no relaxation."""
    return [e for e in plan("cu-s", n + 4) if not e.needs_relaxation][:n]


def test_interrupted_build_resumes_without_loss_or_repeat(tmp_path, fake_gpaw, monkeypatch):
    entries = plan_entries(6)
    out = tmp_path / "cu-s"
    monkeypatch.setenv("FAKE_GPAW_FAIL", entries[3].plan_id)
    first = label_entries(entries, out, "cu-s", workers=2, python=fake_gpaw, progress=False)
    assert first.labelled == 5 and len(first.failed) == 1 and entries[3].plan_id in first.failed[0]
    assert len(read_structures(out / STRUCTURES_FILE)) == 5

    monkeypatch.delenv("FAKE_GPAW_FAIL")
    second = label_entries(entries, out, "cu-s", workers=2, python=fake_gpaw, progress=False)
    assert second.labelled == 1 and second.skipped_existing == 5 and not second.failed
    structures = read_structures(out / STRUCTURES_FILE)
    ids = [a.info["plan_id"] for a in structures]
    assert sorted(ids) == sorted(e.plan_id for e in entries) and len(set(ids)) == 6
    calls = (out / ".labelling" / "calls.log").read_text().split()
    assert sorted(calls) == sorted(ids), "every structure computed exactly once"
    energies = {a.info["plan_id"]: a.get_potential_energy() for a in structures}
    for e in entries:
        assert energies[e.plan_id] == pytest.approx(-e.atoms.positions[:, 2].sum())


def test_finished_dft_is_not_recomputed_after_a_crash_before_append(tmp_path, fake_gpaw, monkeypatch):
    """A crash between GPAW finishing and the append loses nothing: the scratch result is reused."""
    import uipbench.datasets.label as label

    entries = plan_entries(2)
    out = tmp_path / "cu-s"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(label, "append_structures", crash)
    with pytest.raises(KeyboardInterrupt):
        label_entries(entries, out, "cu-s", workers=1, python=fake_gpaw, progress=False)
    assert not (out / STRUCTURES_FILE).exists(), "no partial record"
    monkeypatch.undo()
    label_entries(entries, out, "cu-s", workers=1, python=fake_gpaw, progress=False)
    calls = (out / ".labelling" / "calls.log").read_text().split()
    assert len(calls) == len(set(calls)) == 2


def test_append_is_atomic(tmp_path, labelled_structures, monkeypatch):
    from uipbench.datasets.label import append_structures

    path = tmp_path / STRUCTURES_FILE
    append_structures(path, labelled_structures[:2])
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        append_structures(path, labelled_structures[2:])
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_build_refuses_to_overwrite_without_resume(tmp_path, labelled_structures):
    from uipbench.datasets.io import DatasetError, to_extxyz_text

    (tmp_path / "cu-s").mkdir()
    (tmp_path / "cu-s" / STRUCTURES_FILE).write_text(to_extxyz_text(labelled_structures))
    with pytest.raises(DatasetError, match="pass --resume"):
        build_dataset("cu-s", 5, root=tmp_path)
    with pytest.raises(ValueError, match="unknown system"):
        build_dataset("xx-s", 5, root=tmp_path)


GPAW_OK, GPAW_WHY = gpaw_available()


@pytest.mark.gpaw
@pytest.mark.skipif(not GPAW_OK, reason=f"GPAW not available: {GPAW_WHY}")
def test_labelling_end_to_end_with_gpaw_on_a_tiny_system(tmp_path):
    """The real pipeline (GPAW LCAO/dzp/PBE) on a one-atom Cu(111) layer: seconds, not minutes."""
    atoms = fcc111("Cu", size=(1, 1, 1), a=3.632, vacuum=3.0, periodic=False)
    atoms.pbc = (True, True, False)
    atoms.positions[0, 2] += 0.05
    entry = PlanEntry("tiny-00000", "tiny", 0, 1, 0, "none", "ideal", atoms)
    protocol = ReferenceProtocol(kpoint_density_angstrom=8.0)
    report = label_entries([entry], tmp_path / "tiny", "tiny", workers=1, protocol=protocol, progress=False)
    assert report.labelled == 1, report.failed
    (labelled,) = read_structures(tmp_path / "tiny" / STRUCTURES_FILE)
    assert labelled.info["protocol"] == "gpaw-lcao-dzp-pbe-v1"
    assert labelled.info["gpaw_version"].startswith("22.")
    assert np.isfinite(labelled.get_potential_energy())
    assert labelled.get_forces().shape == (1, 3)
    assert np.abs(labelled.get_forces()[0, :2]).max() < 1e-4  # in-plane symmetry: no lateral force
