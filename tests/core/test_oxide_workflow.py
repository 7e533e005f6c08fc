"""The oxide end to end with fakes: toy-backbone searches, references and minima labelled by a fake GPAW
interpreter, the phase diagram with a fake backbone; and the inputs it refuses.  GPAW is never run."""
from __future__ import annotations

import json
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from uipbench.cli import main
from uipbench.datasets.io import REFERENCES_FILE, STRUCTURES_FILE, read_structures, validate
from uipbench.oxide import labelling
from uipbench.oxide.diagram import DFT
from uipbench.oxide.phase import PhaseDiagramError
from uipbench.oxide.references import ReferenceError, reference_plan, scan_minimum
from uipbench.oxide.run import phase_diagram
from uipbench.oxide.searches import SearchesError
from uipbench.search import SearchSettings, load_problem, search_to_folder

from .test_search_toy import ToyBackbone

#: stands in for Debian's python running gpaw_runner.py: made-up energies with minima inside the scans
FAKE_GPAW = textwrap.dedent("""\
    #!{python}
    import json, math, sys
    job = json.load(open(sys.argv[2]))
    numbers, positions = job["numbers"], job["positions"]
    kind = job.get("kind", "slab")
    if kind == "molecule":
        d = math.dist(positions[0], positions[1])
        energy = 5.0 * (d - 1.23) ** 2 - 9.9
    elif kind == "bulk" and 8 in numbers:
        a = job["cell"][0][0]
        energy = 2 * (8.0 * (a - 4.30) ** 2 - 12.6)
    elif kind == "bulk":
        energy = -3.7 * len(numbers)
    else:
        energy = -3.6 * numbers.count(29) - 4.5 * numbers.count(8) + 0.001 * sum(p[2] for p in positions)
    result = {{"energy": energy, "forces": [[0.0, 0.0, 0.0]] * len(numbers), "gpaw_version": "fake",
              "kpts": job.get("kpts", [1, 1, 1]), "wall_seconds": 0.01}}
    if job.get("spinpol"):
        result["magmom"] = 2.0
    json.dump(result, open(sys.argv[3], "w"))
""")
BACKBONE = "toy-morse"
PROBLEMS = {"cu-o8-clean": 1, "cu-o8-o2": 2, "cu-o8-cu4o3": 2}  # problem -> budget


@pytest.fixture(scope="module")
def searches(tmp_path_factory) -> dict[str, Path]:
    """Finished toy searches of three oxide problems (the toy takes O for one more metal: mechanics only)."""
    root = tmp_path_factory.mktemp("runs")
    backbone = ToyBackbone(supported=("Cu", "O"))
    out = {}
    for name, budget in PROBLEMS.items():
        out[name] = root / name
        search_to_folder(load_problem(name), backbone, budget=budget, settings=SearchSettings("random", seed=0),
                         out=out[name], progress=False, figures=False)
    return out


@pytest.fixture
def fake_gpaw(tmp_path, monkeypatch) -> str:
    path = tmp_path / "fake_python"
    path.write_text(FAKE_GPAW.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(labelling, "gpaw_available", lambda python: (True, "fake"))
    return str(path)


def _backbone(structures):
    """A fake backbone: the fake DFT's energies shifted by 0.1 eV per atom (so its own references differ)."""
    energies = []
    for atoms in structures:
        energies.append(atoms.get_potential_energy() + 0.1 * len(atoms))
    return energies


def _labelled_root(tmp_path: Path, fake_gpaw: str, searches: dict[str, Path]) -> Path:
    root = tmp_path / "datasets"
    labelling.label_references(root, python=fake_gpaw, progress=False)
    labelling.label_minima(list(searches.values()), top=2, root=root, python=fake_gpaw, progress=False)
    return root


def test_references_are_labelled_once_with_their_kind_settings(tmp_path, fake_gpaw):
    root = tmp_path / "datasets"
    first = labelling.label_references(root, python=fake_gpaw, progress=False)
    assert first.labelled == len(reference_plan()) == 15 and not first.failed
    again = labelling.label_references(root, python=fake_gpaw, progress=False)
    assert again.labelled == 0 and again.skipped_existing == 15
    structures = read_structures(root / "cu-o" / REFERENCES_FILE)
    o2 = [a for a in structures if a.info["reference"] == "O2"]
    assert len(o2) == 7 and all(a.info["dft_magmom"] == 2.0 for a in o2)
    job = json.loads((root / "cu-o" / ".labelling" / f"{o2[0].info['plan_id']}.job.json").read_text())
    assert job["kind"] == "molecule" and job["spinpol"] is True and job["magmoms"] == [1.0, 1.0]
    bulk = json.loads((root / "cu-o" / ".labelling" / "cu-o-ref-cu-bulk.job.json").read_text())
    assert bulk["kind"] == "bulk" and bulk["kpts"] == [8, 8, 8]
    card = json.loads((root / "cu-o" / "card.json").read_text())
    assert len(card["references"]["structures"]) == 15 and card["files"]["references"] == REFERENCES_FILE


def test_minima_labels_and_the_phase_diagram(tmp_path, fake_gpaw, searches):
    root = _labelled_root(tmp_path, fake_gpaw, searches)
    labelled = read_structures(root / "cu-o" / STRUCTURES_FILE)
    assert {a.info["problem"] for a in labelled} == set(PROBLEMS)
    assert all(a.info["backbone"] == BACKBONE and a.info["surface_cell"] == "oxide-8" for a in labelled)
    assert sum(a.info["problem"] == "cu-o8-clean" for a in labelled) == 1
    again = labelling.label_minima(list(searches.values()), top=2, root=root, python=fake_gpaw, progress=False)
    assert again.labelled == 0
    card = json.loads((root / "cu-o" / "card.json").read_text())
    assert "Cu_nO_m" in card["description"] and "references" in card  # the training card kept the references
    assert validate("cu-o", root).ok, validate("cu-o", root).problems

    diagram, report = phase_diagram(list(searches.values()), BACKBONE, tmp_path / "out", root=root,
                                    evaluate=_backbone)
    refs = read_structures(root / "cu-o" / REFERENCES_FILE)
    o2 = [a for a in refs if a.info["reference"] == "O2"]
    bonds = [a.info["scan_angstrom"] for a in o2]
    e_o2_bb = scan_minimum(bonds, _backbone(o2), "O2")[1]
    e_cu_bb = -3.7 + 0.1
    clean_minima = read_structures(searches["cu-o8-clean"] / "minima.extxyz")
    clean_bb = min(float(a.info["predicted_energy"]) for a in clean_minima)
    best = min(read_structures(searches["cu-o8-cu4o3"] / "minima.extxyz"), key=lambda a: a.info["predicted_energy"])
    area = float(np.linalg.norm(np.cross(best.cell[0], best.cell[1])))
    expected = (best.info["predicted_energy"] - clean_bb - 4 * e_cu_bb - 3 * 0.5 * e_o2_bb) / area
    line = next(ln for ln in diagram.backbone_diagram.lines if ln.name == "Cu4O3")
    assert line.intercept == pytest.approx(expected) and line.slope == pytest.approx(-3 / area)
    assert area == pytest.approx(45.696, abs=1e-3)

    dft_clean = next(a for a in labelled if a.info["problem"] == "cu-o8-clean").get_potential_energy()
    dft_cu4o3 = min(a.get_potential_energy() for a in labelled if a.info["problem"] == "cu-o8-cu4o3")
    dft_line = next(ln for ln in diagram.dft.lines if ln.name == "Cu4O3")
    assert dft_line.intercept == pytest.approx((dft_cu4o3 - dft_clean - 4 * -3.7 - 1.5 * -9.9) / area)
    assert diagram.dft.mu_range[1] == pytest.approx(-12.6 + 7.4 + 4.95)  # the fake Cu2O limit
    assert diagram.dft.method == DFT and not diagram.notes

    names = [w.name for w in diagram.dft.winners]
    assert names and set(names) <= {"clean", "O2", "Cu4O3"}
    for name in ("phase_diagram.png", "minima.png", "delta_g.csv", "phases.json", "report.md", "report.html"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    text = report.read_text()
    assert "Lowest phase over Δμ_O" in text and "Cu4O3" in text and "![phase diagram](phase_diagram.png)" in text
    assert "![minima](minima.png)" in text
    data = json.loads((tmp_path / "out" / "phases.json").read_text())
    assert set(data["methods"]) == {BACKBONE, DFT}


def test_the_pictures_show_each_compositions_best_and_its_dft_lowest():
    from types import SimpleNamespace

    from ase import Atoms

    from uipbench.oxide.report import picture_panels

    a, b, c = Atoms("Cu"), Atoms("Cu2"), Atoms("Cu3")
    rows = [SimpleNamespace(problem="p1", name="Cu5O4", dft_rank=2, labelled=2),
            SimpleNamespace(problem="p2", name="O2", dft_rank=1, labelled=1),
            SimpleNamespace(problem="p3", name="Cu4O4", dft_rank=None, labelled=0)]
    panels = picture_panels(SimpleNamespace(rows=rows), {"p1": [a, b], "p2": [c], "p3": [a]})
    assert [p[0] for p in panels] == [a, b, c, a]
    assert "DFT-lowest\n(backbone #2)" in panels[1][1] and "= DFT-lowest of 1 labelled" in panels[2][1]
    assert "no DFT point" in panels[3][1]


def test_without_dft_points_the_backbone_diagram_is_drawn_alone(tmp_path, fake_gpaw, searches):
    root = tmp_path / "datasets"
    labelling.label_references(root, python=fake_gpaw, progress=False)
    diagram, _ = phase_diagram(list(searches.values()), BACKBONE, tmp_path / "out", root=root, evaluate=_backbone)
    assert diagram.dft is None and "no DFT point of the clean slab" in diagram.notes[0]
    assert diagram.backbone_diagram.winners


def test_missing_references_and_references_of_another_protocol(tmp_path, fake_gpaw, searches, capsys):
    argv = ["oxide", "phase-diagram", "--backbone", BACKBONE, "--searches", *map(str, searches.values()),
            "--out", str(tmp_path / "out"), "--root", str(tmp_path / "empty")]
    (tmp_path / "empty").mkdir()
    assert main(argv) == 2
    assert "references.extxyz: no reference energies" in capsys.readouterr().err

    root = tmp_path / "datasets"
    labelling.label_references(root, python=fake_gpaw, progress=False)
    path = root / "cu-o" / REFERENCES_FILE
    path.write_text(path.read_text().replace("gpaw-lcao-dzp-pbe-v1", "other-protocol-v9"))
    with pytest.raises(ReferenceError, match="labelled with protocol 'other-protocol-v9'"):
        phase_diagram(list(searches.values()), BACKBONE, tmp_path / "out2", root=root, evaluate=_backbone)

    no_o2 = [a for a in read_structures(path) if a.info["reference"] != "O2"]
    from ase.io import write

    for atoms in no_o2:
        atoms.info["protocol"] = "gpaw-lcao-dzp-pbe-v1"
    write(path, no_o2, format="extxyz")
    with pytest.raises(ReferenceError, match="no O2 molecule reference"):
        phase_diagram(list(searches.values()), BACKBONE, tmp_path / "out3", root=root, evaluate=_backbone)


def test_searches_that_cannot_make_one_diagram(tmp_path, searches):
    with pytest.raises(SearchesError, match="exactly one clean-slab problem"):
        phase_diagram([searches["cu-o8-o2"]], BACKBONE, tmp_path / "out", evaluate=_backbone)
    with pytest.raises(SearchesError, match="a search with backbone 'toy-morse', not 'chgnet-0.3.0'"):
        phase_diagram(list(searches.values()), "chgnet-0.3.0", tmp_path / "out", evaluate=_backbone)
    corrected = tmp_path / "corrected"
    shutil.copytree(searches["cu-o8-o2"], corrected)
    data = json.loads((corrected / "search.json").read_text())
    data["identity"]["delta_sha256"] = "abc"
    (corrected / "search.json").write_text(json.dumps(data))
    with pytest.raises(SearchesError, match="a Δ-corrected search"):
        phase_diagram([searches["cu-o8-clean"], corrected], BACKBONE, tmp_path / "out", evaluate=_backbone)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SearchesError, match="no search here"):
        phase_diagram([tmp_path / "nothing"], BACKBONE, tmp_path / "out", evaluate=_backbone)


def test_a_mu_range_that_is_empty_is_refused(tmp_path, fake_gpaw, searches):
    root = tmp_path / "datasets"
    labelling.label_references(root, python=fake_gpaw, progress=False)
    with pytest.raises(PhaseDiagramError, match="not below"):
        phase_diagram(list(searches.values()), BACKBONE, tmp_path / "out", root=root, evaluate=_backbone,
                      mu_min=5.0)


def test_the_s_generator_refuses_cu_o(capsys):
    assert main(["dataset", "build", "cu-o", "--n", "1", "--relax-with", "none"]) == 2
    assert "system 'cu-o' has no S structure plan" in capsys.readouterr().err
