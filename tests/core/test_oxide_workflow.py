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
    if "relax" in job:  # a made-up relaxation: every free atom 0.01 Å down, 0.1 eV gained
        fixed = set(job["relax"]["fixed"])
        result.update(positions=[[x, y, z - (0 if i in fixed else 0.01)] for i, (x, y, z) in enumerate(positions)],
                      initial_energy=energy + 0.1, steps=min(7, job["relax"]["steps"]),
                      converged=job["relax"]["steps"] >= 7, fmax=0.01 if job["relax"]["steps"] >= 7 else 0.3)
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


def _fake_dft(atoms) -> float:
    """The fake GPAW's energy of a structure: its stored label for a reference, the slab formula otherwise."""
    if atoms.info.get("reference"):
        return atoms.get_potential_energy()
    n = atoms.get_atomic_numbers()
    return -3.6 * np.sum(n == 29) - 4.5 * np.sum(n == 8) + 0.001 * atoms.positions[:, 2].sum()


def _views(shift_cu: float, shift_o: float, shift_cu4o3: float = 0.0):
    """A fake backbone's view: the fake DFT energy off by a per-species shift (and by ``shift_cu4o3`` eV on every
    Cu28O3 structure, an error of that composition alone), a one-hot species embedding."""
    from uipbench.embedding import StructureEmbedding

    def embed(structures):
        out = []
        for atoms in structures:
            n = atoms.get_atomic_numbers()
            energy = _fake_dft(atoms) + shift_cu * np.sum(n == 29) + shift_o * np.sum(n == 8)
            energy += shift_cu4o3 if (np.sum(n == 29), np.sum(n == 8)) == (28, 3) else 0.0
            features = np.stack([n == 29, n == 8, atoms.positions[:, 2] / 10.0], axis=1).astype(float)
            out.append(StructureEmbedding(float(energy), features, n.astype(np.int64)))
        return out

    return embed


def test_the_corrected_diagram_leaves_each_composition_out_of_its_own_fit(tmp_path, fake_gpaw, searches,
                                                                          monkeypatch):
    """A backbone off by a per-species shift (0.1 eV per Cu, 0.4 eV per O) and by 0.2 eV on Cu4O3 alone: its own
    diagram differs from DFT's; the corrected one (each composition's whole line from a model that never saw
    that composition) lands on DFT's O2 line, and misses Cu4O3's by that composition's own error, which only a
    model that saw Cu4O3 could learn."""
    root = _labelled_root(tmp_path, fake_gpaw, searches)
    labelled = read_structures(root / "cu-o" / STRUCTURES_FILE)
    fits: list[set] = []

    from uipbench.oxide import corrected as corrected_module

    real_fit = corrected_module._default_fit

    def spy(views, residual):
        fits.append({(int(np.sum(v.numbers == 29)), int(np.sum(v.numbers == 8))) for v in views})
        return real_fit(views, residual)

    monkeypatch.setattr(corrected_module, "_default_fit", spy)
    diagram, report = phase_diagram(list(searches.values()), BACKBONE, tmp_path / "out", root=root,
                                    embed=_views(0.1, 0.4), corrected=True)
    per_problem = {p: sum(a.info["problem"] == p for a in labelled) for p in PROBLEMS}
    o2, cu4o3 = (24, 2), (28, 3)
    assert len(fits) == 3 and {o2, cu4o3} <= fits[0]  # the full model, then one per composition
    assert o2 not in fits[1] and cu4o3 in fits[1]  # O2's model never saw an O2 structure
    assert cu4o3 not in fits[2] and o2 in fits[2]
    assert [h.held_out for h in diagram.held_out] == [per_problem["cu-o8-o2"], per_problem["cu-o8-cu4o3"]]

    bb = {ln.name: ln for ln in diagram.backbone_diagram.lines}
    fixed = {ln.name: ln for ln in diagram.corrected.lines}
    dft = {ln.name: ln for ln in diagram.dft.lines}
    for name in ("O2", "Cu4O3"):
        assert abs(bb[name].intercept - dft[name].intercept) > 1e-3  # the raw backbone is off
        assert fixed[name].intercept == pytest.approx(dft[name].intercept, abs=2e-4)  # eV/Å²: 9 meV per cell

    # with 0.2 eV more on every Cu4O3 structure, Cu4O3's model (which never saw one) misses DFT's line by that
    own, _ = phase_diagram(list(searches.values()), BACKBONE, tmp_path / "out-own", root=root,
                           embed=_views(0.1, 0.4, 0.2), corrected=True)
    line = next(ln for ln in own.corrected.lines if ln.name == "Cu4O3")
    assert line.intercept - dft["Cu4O3"].intercept == pytest.approx(0.2 / own.area, rel=0.3)  # 0.2 eV too high
    held = {h.name: h for h in own.held_out}
    assert held["Cu4O3"].held_out_signed > 3.0  # meV/atom: 0.2 eV over ~31 atoms, predicted too high
    assert diagram.corrected.mu_range[1] == pytest.approx(diagram.dft.mu_range[1], abs=0.02)
    assert diagram.corrected.method == f"{BACKBONE} + Δ"
    data = json.loads((tmp_path / "out" / "phases.json").read_text())
    assert set(data["methods"]) == {BACKBONE, f"{BACKBONE} + Δ", DFT} and len(data["held_out"]) == 2
    assert "leave one composition out" in report.read_text()


def test_the_corrected_diagram_needs_references_the_clean_slab_and_a_composition(tmp_path, fake_gpaw, searches):
    from uipbench.oxide.corrected import CorrectionError, corrected_method
    from uipbench.oxide.searches import pool, read_run

    pooled = pool([read_run(p) for p in searches.values()], BACKBONE)
    root = _labelled_root(tmp_path, fake_gpaw, searches)
    refs = read_structures(root / "cu-o" / REFERENCES_FILE)
    labelled = read_structures(root / "cu-o" / STRUCTURES_FILE)
    clean_only = [a for a in labelled if a.info["problem"] == "cu-o8-clean"]
    with pytest.raises(CorrectionError, match="no the references"):
        corrected_method(pooled, [], labelled, _views(0.0, 0.0), 45.7, "x", mu_min=-2.5)
    with pytest.raises(CorrectionError, match=r"no a DFT point of any composition"):
        corrected_method(pooled, refs, clean_only, _views(0.0, 0.0), 45.7, "x", mu_min=-2.5)
    with pytest.raises(CorrectionError, match=r"DFT point of the clean slab \(cu-o8-clean\)"):
        corrected_method(pooled, refs, [a for a in labelled if a not in clean_only], _views(0.0, 0.0), 45.7, "x",
                         mu_min=-2.5)


def test_the_summary_sets_the_diagrams_side_by_side_with_dft_over_all_labelled_minima(tmp_path, fake_gpaw,
                                                                                      searches, capsys):
    root = _labelled_root(tmp_path, fake_gpaw, searches)
    phase_diagram(list(searches.values()), BACKBONE, tmp_path / "toy", root=root, evaluate=_backbone)
    labelled = read_structures(root / "cu-o" / STRUCTURES_FILE)
    # a minimum found by another backbone, lower in DFT than everything the toy's search found
    from ase.io import write

    from uipbench.oxide.summary import POOLED

    extra = min((a for a in labelled if a.info["motif"] == "Cu4O3"), key=lambda a: a.get_potential_energy()).copy()
    extra.calc = None
    lower = min(a.get_potential_energy() for a in labelled if a.info["motif"] == "Cu4O3") - 0.5
    from ase.calculators.singlepoint import SinglePointCalculator

    extra.calc = SinglePointCalculator(extra, energy=lower, forces=np.zeros((len(extra), 3)))
    extra.info |= {"backbone": "other", "plan_id": "other-cu4o3"}
    write(root / "cu-o" / STRUCTURES_FILE, [*labelled, extra], format="extxyz")

    assert main(["oxide", "summary", "--diagrams", str(tmp_path / "toy"), "--out", str(tmp_path / "sum"),
                 "--root", str(root)]) == 0
    text = (tmp_path / "sum" / "report.md").read_text()
    assert f"DFT at {BACKBONE} minima" in text and POOLED in text and (tmp_path / "sum" / "winners.png").exists()
    data = json.loads((tmp_path / "sum" / "summary.json").read_text())
    labels = [m["label"] for m in data["methods"]]
    assert labels == [BACKBONE, f"DFT at {BACKBONE} minima", POOLED]

    from uipbench.oxide.summary import pooled_dft

    refs = read_structures(root / "cu-o" / REFERENCES_FILE)
    pooled = pooled_dft(refs, read_structures(root / "cu-o" / STRUCTURES_FILE), 45.696, -2.5)
    toy = json.loads((tmp_path / "toy" / "phases.json").read_text())["methods"][DFT]
    toy_line = next(ln for ln in toy["lines_ev_per_A2"] if ln["name"] == "Cu4O3")
    line = next(ln for ln in pooled.lines if ln.name == "Cu4O3")
    assert line.intercept == pytest.approx(toy_line["intercept"] - 0.5 / 45.696, abs=1e-6)  # the other's minimum

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "phases.json").write_text("{}")
    assert main(["oxide", "summary", "--diagrams", str(tmp_path / "broken"), "--out", str(tmp_path / "s2"),
                 "--root", str(root)]) == 2
    assert "not a phase-diagram file (no backbone, area_A2, methods)" in capsys.readouterr().err
    assert main(["oxide", "summary", "--diagrams", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s3"),
                 "--root", str(root)]) == 2
    assert "phases.json: not found" in capsys.readouterr().err


def test_a_dft_relaxation_of_a_compositions_dft_lowest_minimum(tmp_path, fake_gpaw, searches):
    root = _labelled_root(tmp_path, fake_gpaw, searches)
    before = read_structures(root / "cu-o" / STRUCTURES_FILE)
    start = min((a for a in before if a.info["problem"] == "cu-o8-cu4o3"), key=lambda a: a.get_potential_energy())
    short = labelling.relax_minima(["cu-o8-cu4o3"], root, fmax=0.05, steps=3, python=fake_gpaw, progress=False)
    assert short.labelled == 0 and "not converged in 3 steps" in short.failed[0] and "run it again" in short.failed[0]
    assert len(read_structures(root / "cu-o" / STRUCTURES_FILE)) == len(before)  # nothing unconverged lands
    report = labelling.relax_minima(["cu-o8-cu4o3"], root, fmax=0.05, steps=40, python=fake_gpaw, progress=False)
    assert report.labelled == 1 and not report.failed
    after = read_structures(root / "cu-o" / STRUCTURES_FILE)
    relaxed = after[-1]
    assert relaxed.info["variant"] == "DFT relaxation" and relaxed.info["relaxed_from"] == start.info["plan_id"]
    assert relaxed.info["single_point_energy"] == pytest.approx(start.get_potential_energy())
    assert relaxed.info["dft_relax_steps"] == 7 and relaxed.info["dft_relax_converged"]
    from uipbench.datasets.label import RELAX_FMAX, RELAX_STEPS, is_relaxation, job_for

    assert RELAX_FMAX not in relaxed.info and relaxed.info["dft_relax_target_fmax"] == 0.05
    assert "relax" not in job_for(relaxed)  # the stored structure is not a relaxation job again
    half = relaxed.copy()
    half.info[RELAX_STEPS] = 10
    with pytest.raises(ValueError, match="'dft_relax_fmax' is missing"):
        is_relaxation(half)
    job = json.loads((root / "cu-o" / ".labelling" / f"{relaxed.info['plan_id']}.job.json").read_text())
    template = load_problem("cu-o8-cu4o3").template()
    fixed = template.constraints[0].get_indices().tolist()
    assert job["relax"] == {"fmax": 0.05, "steps": 40, "fixed": fixed} and len(fixed) == 8
    moved = np.abs(relaxed.positions - start.positions).max(axis=1)
    assert np.all(moved[fixed] == 0) and np.allclose(np.delete(moved, fixed), 0.01)
    again = labelling.relax_minima(["cu-o8-cu4o3"], root, fmax=0.05, steps=40, python=fake_gpaw, progress=False)
    assert again.labelled == 0 and again.skipped_existing == 1  # the same winner: relaxed once
    # single-point diagrams never take the relaxed structure for a search minimum's point
    from uipbench.oxide.searches import dft_points
    from uipbench.oxide.summary import pooled_dft

    assert len(dft_points(after)) == len(before)
    refs = read_structures(root / "cu-o" / REFERENCES_FILE)
    lines = {ln.name: ln.intercept for ln in pooled_dft(refs, after, 45.696, -2.5).lines}
    assert lines == {ln.name: ln.intercept for ln in pooled_dft(refs, before, 45.696, -2.5).lines}
    with pytest.raises(ValueError, match="cu-o8-cu5o4: no labelled single point to relax"):
        labelling.relax_minima(["cu-o8-cu5o4"], root, python=fake_gpaw, progress=False)


def test_the_runners_relaxation_resumes_from_its_last_step(tmp_path):
    """gpaw_runner.relax with EMT standing in for GPAW: a relaxation stopped after two steps and run again goes on
    from its last frame (no frame twice, about the steps of an uninterrupted one, the same end), the fixed atoms
    never move, the first single point is kept; used-up steps take no step; another start's trajectory is
    discarded."""
    from ase.build import add_adsorbate, fcc111
    from ase.calculators.emt import EMT
    from ase.io import read

    from uipbench.datasets.gpaw_runner import relax

    def start(shift: float = 0.3):
        slab = fcc111("Cu", (2, 2, 3), a=3.6, vacuum=5.0)
        add_adsorbate(slab, "O", 1.6, "fcc")
        slab.positions[-1, 0] += shift
        slab.calc = EMT()
        return slab

    settings = {"fmax": 0.02, "steps": 2, "fixed": [0, 1, 2, 3]}
    x0 = start().positions.copy()
    a, b = str(tmp_path / "a.traj"), str(tmp_path / "b.traj")
    first = relax(start(), settings, a, str(tmp_path / "a.log"))
    assert first["steps"] == 2 and not first["converged"] and len(read(a, ":")) == 3
    again = relax(start(), settings, a, str(tmp_path / "a.log"))  # its steps are used up: no step taken
    assert again["steps"] == 2 and again["positions"] == first["positions"] and len(read(a, ":")) == 3
    resumed = relax(start(), settings | {"steps": 300}, a, str(tmp_path / "a.log"))
    whole = relax(start(), settings | {"steps": 300}, b, str(tmp_path / "b.log"))
    assert resumed["converged"] and whole["converged"] and resumed["fmax"] < 0.02
    assert len(read(a, ":")) == resumed["steps"] + 1  # no frame written twice
    assert whole["steps"] - 2 <= resumed["steps"] <= whole["steps"] + 5  # went on, did not start over
    assert resumed["initial_energy"] == pytest.approx(first["initial_energy"]) == pytest.approx(whole["initial_energy"])
    final, reference = start(), start()
    final.positions, reference.positions = np.array(resumed["positions"]), np.array(whole["positions"])
    assert final.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=2e-3)
    assert np.allclose(np.array(resumed["positions"])[:4], x0[:4])
    other = relax(start(shift=0.1), settings, a, str(tmp_path / "a.log"))  # another start: afresh
    assert other["steps"] == 2 and len(read(a, ":")) == 3


def test_a_labelled_minimum_is_found_again_when_a_longer_search_replaced_its_structure(searches):
    """A search extended past a labelled minimum may represent it by a lower hit a few hundredths of an Å away:
    its DFT point is still the minimum's (the search's fingerprint rule), and another minimum's is not taken."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from uipbench.oxide.searches import dft_of, dft_points, pool, read_run

    pooled = pool([read_run(p) for p in searches.values()], BACKBONE)
    problem = pooled["cu-o8-cu4o3"]
    labelled = problem.minima[0].copy()
    labelled.positions[problem.n_slab:] += 0.01  # another hit of the same minimum
    labelled.calc = SinglePointCalculator(labelled, energy=-1.0)
    points = dft_points([labelled])
    assert dft_of(problem.members[0], points) is None  # no member has its exact geometry
    assert dft_of(problem.members[0], points, problem.n_slab).energy == -1.0
    far = problem.minima[0].copy()
    far.positions[-1, :2] += 1.0  # one O moved by 1 Å: another minimum
    far.calc = SinglePointCalculator(far, energy=-2.0)
    assert dft_of(problem.members[0], dft_points([far]), problem.n_slab) is None
