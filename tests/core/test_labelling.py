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


def test_a_failed_structure_is_a_failed_record_not_an_exception(tmp_path, fake_gpaw, monkeypatch):
    from uipbench.datasets.label import LabelSettings, LabelTask, label_structure
    from uipbench.datasets.protocol import PROTOCOL_V1

    (entry,) = plan_entries(1)
    monkeypatch.setenv("FAKE_GPAW_FAIL", entry.plan_id)
    record = label_structure(LabelTask(entry.plan_id, entry.atoms, PROTOCOL_V1, tmp_path, LabelSettings(fake_gpaw)))
    assert not record.ok and record.energy is None
    assert f"GPAW failed on {entry.plan_id}" in record.error and "simulated crash" in record.error

    def broken(atoms):
        raise RuntimeError("relaxation diverged")

    record = label_structure(LabelTask(entry.plan_id, entry.atoms, PROTOCOL_V1, tmp_path, LabelSettings(fake_gpaw),
                                       relaxer=broken))
    assert record.status == "failed" and record.error == "relaxation diverged"


def test_each_plan_id_is_labelled_and_written_once(tmp_path, fake_gpaw):
    entries = plan_entries(3)
    report = label_entries([*entries, entries[0], entries[1]], tmp_path / "cu-s", "cu-s", workers=2,
                           python=fake_gpaw, progress=False)
    assert report.labelled == 3
    ids = [a.info["plan_id"] for a in read_structures(tmp_path / "cu-s" / STRUCTURES_FILE)]
    assert sorted(ids) == sorted(e.plan_id for e in entries)
    assert sorted((tmp_path / "cu-s" / ".labelling" / "calls.log").read_text().split()) == sorted(ids)


def test_scratch_results_in_the_existing_format_are_reused(tmp_path, fake_gpaw):
    """``.labelling/<plan id>.job.json`` + ``.result.json`` as written by earlier versions: taken, not recomputed."""
    import json

    from uipbench.datasets.io import structure_hash
    from uipbench.datasets.protocol import PROTOCOL_V1

    (entry,) = plan_entries(1)
    atoms, scratch = entry.atoms, tmp_path / "cu-s" / ".labelling"
    scratch.mkdir(parents=True)
    job = {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(), "cell": atoms.cell.array.tolist(),
           "pbc": [bool(p) for p in atoms.pbc], "protocol": PROTOCOL_V1.to_dict(),
           "structure_hash": structure_hash(atoms)}
    (scratch / f"{entry.plan_id}.job.json").write_text(json.dumps(job, indent=2, sort_keys=True))
    result = {"energy": -123.5, "forces": [[0.0, 0.0, 0.0]] * len(atoms), "gpaw_version": "22.8.0",
              "kpts": [6, 6, 1], "wall_seconds": 654.3}
    (scratch / f"{entry.plan_id}.result.json").write_text(json.dumps(result))
    report = label_entries([entry], tmp_path / "cu-s", "cu-s", workers=1, python=fake_gpaw, progress=False)
    assert report.labelled == 1 and not (scratch / "calls.log").exists(), "nothing recomputed"
    (labelled,) = read_structures(tmp_path / "cu-s" / STRUCTURES_FILE)
    assert labelled.get_potential_energy() == -123.5 and labelled.info["label_seconds"] == 654.3
    assert "label_cores" not in labelled.info


FAKE_MPIRUN = textwrap.dedent("""\
    #!/bin/sh
    # records its arguments, then runs the command after "-np N"
    echo "$@" >> "$(dirname "$0")/mpirun.log"
    shift 2
    exec "$@"
""")


def test_mpi_ranks_run_the_runner_under_mpirun_and_are_recorded(tmp_path, fake_gpaw, monkeypatch):
    import json

    from uipbench.datasets.label import LabelSettings

    assert LabelSettings("py").command("j", "r")[0] == "py"
    assert LabelSettings("py", mpi_ranks=4).command("j", "r")[:4] == ["mpirun", "-np", "4", "py"]
    with pytest.raises(ValueError, match="MPI ranks per structure must be at least 1"):
        LabelSettings(mpi_ranks=0)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mpirun").write_text(FAKE_MPIRUN)
    (bin_dir / "mpirun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    entries = plan_entries(2)
    report = label_entries(entries, tmp_path / "cu-s", "cu-s", workers=1, python=fake_gpaw, progress=False,
                           mpi_ranks=2)
    assert report.labelled == 2
    calls = (bin_dir / "mpirun.log").read_text().splitlines()
    assert len(calls) == 2 and all(c.startswith(f"-np 2 {fake_gpaw} ") for c in calls)
    assert {a.info["label_cores"] for a in read_structures(tmp_path / "cu-s" / STRUCTURES_FILE)} == {2}
    card = json.loads((tmp_path / "cu-s" / "card.json").read_text())
    assert card["labelling"]["cores_per_structure"] == 2


def _shifted(atoms):
    out = atoms.copy()
    out.positions[:, 2] += 0.1
    return out


def test_on_a_process_executor_the_driver_relaxes_and_the_workers_label(tmp_path, fake_gpaw):
    from concurrent.futures import ProcessPoolExecutor

    entries = [e for e in plan("cu-s", 40) if e.needs_relaxation][:2] + plan_entries(2)
    assert len(entries) == 4
    calls = []

    def relax(atoms):  # a closure: could not be sent to another process
        calls.append(os.getpid())
        return _shifted(atoms)

    with ProcessPoolExecutor(2) as pool:
        report = label_entries(entries, tmp_path / "cu-s", "cu-s", relaxer=relax, relaxer_name="shift",
                               python=fake_gpaw, progress=False, executor=pool)
    assert report.labelled == 4 and not report.failed
    assert calls == [os.getpid()] * 2
    labelled = {a.info["plan_id"]: a for a in read_structures(tmp_path / "cu-s" / STRUCTURES_FILE)}
    for e in entries:
        expected = _shifted(e.atoms) if e.needs_relaxation else e.atoms
        assert labelled[e.plan_id].get_potential_energy() == pytest.approx(-expected.positions[:, 2].sum())
        assert labelled[e.plan_id].info.get("relaxed_with") == ("shift" if e.needs_relaxation else None)


DRIVER = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from tests.core.test_labelling import plan_entries
    from uipbench.datasets.label import label_entries
    label_entries(plan_entries(6), Path(sys.argv[1]), "cu-s", workers=1, python=sys.argv[2], progress=False)
""")


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_from_what_was_written(tmp_path):
    import signal
    import subprocess
    import time

    from uipbench.paths import repo_root

    fake = make_fake_gpaw(tmp_path / "fake_python", seconds=0.4)
    out = tmp_path / "cu-s"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(repo_root()), os.environ.get("PYTHONPATH"))
                                                        if p)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(out), fake], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if (out / STRUCTURES_FILE).exists() and len(read_structures(out / STRUCTURES_FILE)) >= 2:
                break
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the GPAW process it started
    finally:
        driver.wait()
    written = [a.info["plan_id"] for a in read_structures(out / STRUCTURES_FILE)]
    assert 2 <= len(written) < 6, "killed mid-run"
    report = label_entries(plan_entries(6), out, "cu-s", workers=1, python=fake, progress=False)
    assert report.skipped_existing == len(written) and report.labelled == 6 - len(written)
    ids = [a.info["plan_id"] for a in read_structures(out / STRUCTURES_FILE)]
    assert ids[:len(written)] == written and sorted(ids) == sorted(e.plan_id for e in plan_entries(6))


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
