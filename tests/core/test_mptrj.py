"""``uipbench.mptrj``: streaming environment counts on hand-built MPtrj JSON and extxyz files."""
from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.io import write
from ase.neighborlist import neighbor_list

from uipbench import mptrj
from uipbench.mptrj import CountSpec, MPtrjFormatError, MPtrjSkipWarning, count_environments

SPEC = CountSpec(centers=("S",), neighbors=("Cu", "Ag", "Au", "S"), cutoff=3.0)


def _box(symbols: str, positions, cell=(10.0, 10.0, 10.0), pbc=True) -> Atoms:
    return Atoms(symbols, positions=positions, cell=np.diag(cell), pbc=pbc)


def _materials() -> dict[str, list[Atoms]]:
    """Hand-built frames; the expected counts below are worked out from these geometries by hand."""
    return {
        "mp-1": [
            _box("CuS", [(1, 1, 1), (1, 1, 3.2)]),                        # S–Cu 2.2 Å: Cu only
            _box("CuS2", [(2, 2, 2), (2, 2, 4.2), (2, 2, 6.2)]),          # S1: Cu + S; S2: S only
        ],
        "mp-2": [
            _box("S2", [(5, 5, 5), (5, 5, 7.0)]),                         # S2 dimer, 2.0 Å
            _box("SCu", [(5, 5, 5), (0, 0, 0)]),                          # nearest Cu image 8.66 Å: isolated
        ],
        "mp-3": [
            _box("CuS", [(0.5, 5, 5), (4.3, 5, 5)], cell=(6, 10, 10)),    # 3.8 Å directly, 2.2 Å via an image
            _box("S", [(0, 5, 5)], cell=(2.5, 10, 10)),                   # its own images at 2.5 Å
        ],
        "mp-4": [
            _box("SO", [(5, 5, 5), (5, 5, 6.5)]),                         # other
            _box("SCuAg", [(5, 5, 5), (5, 5, 7.2), (5, 5, 2.6)]),         # other; any Cu, any Ag
        ],
        "mp-5": [_box("AgS", [(3, 3, 3), (3, 3, 5.5)])],                  # Ag only
        "mp-6": [_box("Cu2", [(0, 0, 0), (2.5, 0, 0)])],                  # no S at all
        "mp-7": [_box("CuS2", [(5, 5, 5), (5, 5, 7.2), (5, 5, 2.8)])],    # two S, each Cu only (S–S 4.4 Å)
    }


# (category, neighbor) -> (atoms, frames, materials), worked out by hand from _materials()
EXPECTED = {
    ("all", "-"): (13, 10, 6),
    ("isolated", "-"): (1, 1, 1),
    ("metal_only", "Cu"): (4, 3, 3),
    ("metal_only", "Ag"): (1, 1, 1),
    ("metal_only", "Au"): (0, 0, 0),
    ("metal_and_center", "Cu"): (1, 1, 1),
    ("metal_and_center", "Ag"): (0, 0, 0),
    ("metal_and_center", "Au"): (0, 0, 0),
    ("center_only", "S"): (4, 3, 3),
    ("other", "-"): (2, 2, 1),
    ("any_metal", "Cu"): (6, 5, 4),
    ("any_metal", "Ag"): (2, 2, 2),
    ("any_metal", "Au"): (0, 0, 0),
    ("any_center", "S"): (5, 3, 3),
}
N_FRAMES = 11


def structure_dict(atoms: Atoms) -> dict:
    """A pymatgen ``Structure.as_dict()``-shaped record (what MPtrj stores), built without pymatgen."""
    cell = atoms.cell.array
    frac = atoms.get_scaled_positions(wrap=False)
    return {
        "@module": "pymatgen.core.structure", "@class": "Structure", "charge": 0,
        "lattice": {"matrix": cell.tolist(), "pbc": [True, True, True], "a": float(atoms.cell.lengths()[0])},
        "properties": {},
        "sites": [{"species": [{"element": s, "occu": 1}], "abc": f.tolist(), "xyz": p.tolist(), "label": s,
                   "properties": {"magmom": 0.0}}
                  for s, f, p in zip(atoms.get_chemical_symbols(), frac, atoms.positions)],
    }


def frame_dict(atoms: Atoms, mp_id: str) -> dict:
    n = len(atoms)
    return {"structure": structure_dict(atoms), "uncorrected_total_energy": -1.0 * n,
            "corrected_total_energy": -1.1 * n, "energy_per_atom": -1.1, "ef_per_atom": 0.0,
            "force": np.zeros((n, 3)).tolist(), "stress": np.zeros((3, 3)).tolist(), "magmom": [0.0] * n,
            "bandgap": 0.0, "mp_id": mp_id}


def mptrj_document(materials: dict[str, list[Atoms]]) -> dict:
    return {mp: {f"{mp}-{i}": frame_dict(a, mp) for i, a in enumerate(frames)} for mp, frames in materials.items()}


def write_json(path: Path, document: dict, indent: int | None = None) -> Path:
    path.write_text(json.dumps(document, indent=indent))
    return path


def write_extxyz(path: Path, materials: dict[str, list[Atoms]]) -> Path:
    frames = []
    for mp, items in materials.items():
        for i, atoms in enumerate(items):
            atoms = atoms.copy()
            atoms.info.update(mp_id=mp, frame_id=f"{mp}-{i}")
            frames.append(atoms)
    write(path, frames, format="extxyz")
    return path


def as_dict(table: pd.DataFrame, center: str = "S") -> dict:
    sub = table[table["center"] == center]
    wide = sub.pivot_table(index=["category", "neighbor"], columns="unit", values="count")
    return {k: (int(r["atoms"]), int(r["frames"]), int(r["materials"])) for k, r in wide.iterrows()}


@pytest.fixture()
def json_file(tmp_path: Path) -> Path:
    return write_json(tmp_path / "MPtrj_small.json", mptrj_document(_materials()))


# --------------------------------------------------------------------------- counts


def test_json_counts_match_hand_counts(json_file: Path) -> None:
    result = count_environments(json_file, SPEC)
    assert as_dict(result.table) == EXPECTED
    meta = result.metadata
    assert (meta.frames_read, meta.frames_counted, meta.frames_skipped) == (N_FRAMES, N_FRAMES, 0)
    assert meta.materials_read == 7
    assert meta.format == "json" and meta.cutoff_angstrom == 3.0
    exclusive = sum(EXPECTED[k][0] for k in EXPECTED if k[0] in mptrj.EXCLUSIVE_CATEGORIES)
    assert exclusive == EXPECTED[("all", "-")][0]


def test_extxyz_gives_the_same_counts(tmp_path: Path, json_file: Path) -> None:
    xyz = write_extxyz(tmp_path / "small.extxyz", _materials())
    from_xyz = count_environments(xyz, SPEC)
    from_json = count_environments(json_file, SPEC)
    assert as_dict(from_xyz.table) == as_dict(from_json.table) == EXPECTED
    assert from_xyz.metadata.materials_read == 7 and from_xyz.metadata.material_id_fallbacks == 0


def test_per_material_dedup_and_units(json_file: Path) -> None:
    counts = as_dict(count_environments(json_file, SPEC).table)
    # mp-1 has S bonded to Cu in both of its frames: two frames, one material
    assert counts[("any_metal", "Cu")] == (6, 5, 4)
    # mp-7 has two Cu-only S atoms in one frame: two atoms, one frame
    assert counts[("metal_only", "Cu")] == (4, 3, 3)


def test_periodic_images_matter(tmp_path: Path) -> None:
    periodic = {"mp-3": [_materials()["mp-3"][0]]}
    cut = count_environments(write_extxyz(tmp_path / "p.extxyz", periodic), SPEC)
    assert as_dict(cut.table)[("metal_only", "Cu")] == (1, 1, 1)
    open_box = {"mp-3": [_box("CuS", [(0.5, 5, 5), (4.3, 5, 5)], cell=(6, 10, 10), pbc=False)]}
    iso = count_environments(write_extxyz(tmp_path / "np.extxyz", open_box), SPEC)
    assert as_dict(iso.table)[("isolated", "-")] == (1, 1, 1)


def test_formatting_and_block_boundaries_do_not_change_counts(tmp_path: Path) -> None:
    doc = mptrj_document(_materials())
    # keys and strings with escaped quotes and backslashes, split across tiny blocks
    doc['mp-"odd\\'] = doc.pop("mp-5")
    for frame in doc['mp-"odd\\'].values():
        frame["structure"]["sites"][0]["label"] = 'A\\"}{\\\\'
    pretty = write_json(tmp_path / "pretty.json", doc, indent=2)
    expected = as_dict(count_environments(pretty, SPEC).table)
    assert expected == EXPECTED
    for block in (1, 7, 64):
        result = count_environments(pretty, SPEC, block_size=block, chunk_size=3)
        assert as_dict(result.table) == EXPECTED, block
    ids = {raw.material_id for raw in mptrj.iter_json_raw_frames(pretty, block_size=5)}
    assert 'mp-"odd\\' in ids


@pytest.mark.parametrize("seed", range(3))
def test_splitter_recovers_every_frame_of_awkward_json(tmp_path: Path, seed: int) -> None:
    """Keys and strings full of quotes, backslashes, brackets and non-ASCII, cut into tiny blocks."""
    rng = np.random.default_rng(seed)
    alphabet = list('ab"\\{}[]:, \n\té∑')

    def text() -> str:
        return "".join(rng.choice(alphabet, size=int(rng.integers(0, 7))))

    doc = {}
    for m in range(6):
        doc[f"{text()}m{m}"] = {f"{text()}f{f}": {"structure": {"x": text(), text(): [text(), {"y": [text()]}]},
                                                  "v": [1.5, None, {}], "w": text()}
                                for f in range(int(rng.integers(0, 4)))}
    path = tmp_path / "awkward.json"
    path.write_text(json.dumps(doc, ensure_ascii=bool(seed % 2), indent=seed or None), encoding="utf-8")
    for block in (1, 2, 3, 5, 11, 4096):
        stats = mptrj.SplitStats()
        rebuilt: dict = {}
        for raw in mptrj.iter_json_raw_frames(path, block_size=block, stats=stats):
            rebuilt.setdefault(raw.material_id, {})[raw.frame_id] = json.loads(raw.data)
        assert rebuilt == {k: v for k, v in doc.items() if v}, block
        assert stats.materials_read == len(doc)


def test_gzip_input(tmp_path: Path, json_file: Path) -> None:
    gz = tmp_path / "MPtrj_small.json.gz"
    gz.write_bytes(gzip.compress(json_file.read_bytes()))
    assert as_dict(count_environments(gz, SPEC).table) == EXPECTED


def test_parallel_equals_serial(json_file: Path) -> None:
    serial = count_environments(json_file, SPEC, workers=1, chunk_size=2)
    parallel = count_environments(json_file, SPEC, workers=2, chunk_size=2)
    pd.testing.assert_frame_equal(serial.table, parallel.table)
    assert parallel.metadata.frames_read == N_FRAMES and parallel.metadata.workers == 2


@pytest.mark.parametrize("seed", range(6))
def test_neighbours_agree_with_ase(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(2.0, 6.0, 3)) + np.triu(rng.uniform(-1.0, 1.0, (3, 3)), 1)
    n = int(rng.integers(2, 9))
    numbers = rng.choice([16, 29, 47, 79], size=n)
    numbers[0] = 16
    pbc = [True, True, True] if seed % 3 else [True, False, True]
    atoms = Atoms(numbers=numbers, positions=rng.uniform(-2, 8, (n, 3)), cell=cell, pbc=pbc)
    ours = mptrj.center_neighbor_elements(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, 16, 3.0)
    i, j = neighbor_list("ij", atoms, 3.0)
    theirs = [np.sort(atoms.numbers[j[i == c]]) for c in np.flatnonzero(atoms.numbers == 16)]
    assert [np.sort(x).tolist() for x in ours] == [x.tolist() for x in theirs]


def test_classify_environment() -> None:
    metals = ("Cu", "Ag", "Au")
    assert mptrj.classify_environment([], "S", metals) == [("all", "-"), ("isolated", "-")]
    assert ("metal_and_center", "Au") in mptrj.classify_environment(["Au", "S", "Au"], "S", metals)
    assert ("other", "-") in mptrj.classify_environment(["Au", "Cu"], "S", metals)


# --------------------------------------------------------------------------- bad input


def test_truncated_json_names_file_offset_and_frame(json_file: Path, tmp_path: Path) -> None:
    text = json_file.read_bytes()
    cut_at = text.index(b'"mp-4-1"') + 40          # inside frame mp-4-1
    bad = tmp_path / "truncated.json"
    bad.write_bytes(text[:cut_at])
    with pytest.raises(MPtrjFormatError) as info:
        count_environments(bad, SPEC)
    msg = str(info.value)
    assert "truncated.json" in msg and f"byte {cut_at}" in msg and "mp-4-1" in msg and "mp-4" in msg
    # cut between frames, and just before the closing brace
    for cut in (text.index(b'"mp-2-1"') - 3, len(text) - 1):
        bad.write_bytes(text[:cut])
        with pytest.raises(MPtrjFormatError, match=rf"truncated\.json: truncated JSON.*byte {cut}"):
            count_environments(bad, SPEC, workers=1)


def test_malformed_json_frame_names_offset(json_file: Path, tmp_path: Path) -> None:
    text = json_file.read_bytes()
    where = text.index(b'"bandgap": 0.0', text.index(b'"mp-2-0"'))
    bad = tmp_path / "bad.json"
    bad.write_bytes(text[:where] + b'"bandgap": 0.0.0' + text[where + len(b'"bandgap": 0.0'):])
    for workers in (1, 2):   # raised in a worker process, it reaches the caller unchanged
        with pytest.raises(MPtrjFormatError, match=r"bad\.json: malformed JSON at byte \d+ in frame 'mp-2-0'"):
            count_environments(bad, SPEC, workers=workers, chunk_size=1)
    bad.write_bytes(b'{"mp-1": {"a": {}}} trailing')
    with pytest.raises(MPtrjFormatError, match="trailing data"):
        count_environments(bad, SPEC, fmt="json")
    bad.write_bytes(b"")
    with pytest.raises(MPtrjFormatError, match="empty file"):
        count_environments(bad, SPEC, fmt="json")
    bad.write_bytes(b'[{"structure": {}}]')
    with pytest.raises(MPtrjFormatError, match="not an MPtrj JSON file"):
        count_environments(bad, SPEC)
    bad.write_bytes(b'{"mp-1": {"a": {}} "mp-2": {}}')
    with pytest.raises(MPtrjFormatError, match="missing comma"):
        count_environments(bad, SPEC)


def test_missing_fields_are_counted_skips_with_warning(tmp_path: Path) -> None:
    doc = mptrj_document(_materials())
    del doc["mp-2"]["mp-2-0"]["structure"]                         # the S2 dimer
    del doc["mp-7"]["mp-7-0"]["structure"]["sites"][1]["species"]  # one of mp-7's S sites
    doc["mp-6"] = {"mp-6-x": None, **doc["mp-6"]}                   # a frame that is not an object
    path = write_json(tmp_path / "skips.json", doc)
    with pytest.warns(MPtrjSkipWarning) as record:
        result = count_environments(path, SPEC)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 3                                       # one warning per reason
    assert any("frame #2 (material 'mp-2', frame 'mp-2-0'): missing field 'structure';" in m for m in messages)
    assert any("frame #9 (material 'mp-6', frame 'mp-6-x'): frame is not a JSON object" in m for m in messages)
    meta = result.metadata
    assert meta.frames_read == N_FRAMES + 1 and meta.frames_skipped == 3
    assert meta.skipped_by_reason == {"frame is not a JSON object (got NoneType)": 1,
                                      "missing field 'structure'": 1,
                                      "missing field 'structure.sites[*].species'": 1}
    counts = as_dict(result.table)
    assert counts[("center_only", "S")] == (2, 2, 2)              # dimer gone (mp-2 had it)
    assert counts[("metal_only", "Cu")] == (2, 2, 2)              # mp-7 gone
    assert "skipped 3 frame(s)" in mptrj.format_summary(result)
    assert {e["reason"] for e in meta.skip_examples} == set(meta.skipped_by_reason)


def test_required_fields(json_file: Path) -> None:
    doc = json.loads(json_file.read_text())
    del doc["mp-1"]["mp-1-0"]["force"]
    json_file.write_text(json.dumps(doc))
    with pytest.warns(MPtrjSkipWarning):
        result = count_environments(json_file, CountSpec(require=("force",)))
    assert result.metadata.skipped_by_reason == {"missing required field 'force'": 1}


def test_unknown_elements(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown element symbol 's'.*did you mean 'S'"):
        CountSpec(centers=("s",))
    with pytest.raises(ValueError, match="unknown element symbol 'Qq' in --neighbors"):
        CountSpec(neighbors=("Cu", "Qq"))
    doc = mptrj_document(_materials())
    doc["mp-5"]["mp-5-0"]["structure"]["sites"][0]["species"][0]["element"] = "Xx"
    path = write_json(tmp_path / "xx.json", doc)
    with pytest.warns(MPtrjSkipWarning, match="unknown element 'Xx'"):
        result = count_environments(path, SPEC)
    assert result.metadata.skipped_by_reason == {"unknown element 'Xx'": 1}
    assert as_dict(result.table)[("metal_only", "Ag")] == (0, 0, 0)
    xyz = write_extxyz(tmp_path / "xx.extxyz", {"mp-5": _materials()["mp-5"], "mp-1": _materials()["mp-1"]})
    text = xyz.read_text().replace("\nAg ", "\nXx ", 1)
    xyz.write_text(text)
    with pytest.warns(MPtrjSkipWarning, match="unknown element 'Xx'"):
        result = count_environments(xyz, SPEC)
    assert result.metadata.frames_skipped == 1 and result.metadata.frames_counted == 2


def _bad_inputs(json_file: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Broken files a user may hand to mptrj-envs, each with the message it must end in."""
    packed = gzip.compress(json_file.read_bytes())
    cases = {
        "not gzip": ("plain.json.gz", json_file.read_bytes(), r"named \.gz but not gzip-compressed"),
        "gzip cut in the middle": ("cut.json.gz", packed[:len(packed) // 2],
                                   r"truncated gzip file: the compressed stream ends after \d+ uncompressed bytes"),
        "gzip with a bad checksum": ("crc.json.gz", packed[:-8] + bytes(b ^ 0xFF for b in packed[-8:-4]) + packed[-4:],
                                     "corrupt gzip data"),
        "empty .gz": ("empty.json.gz", b"", r"empty file \(0 bytes\)"),
        "empty extxyz": ("empty.extxyz", b"", r"empty file \(0 bytes\)"),
        "blank extxyz": ("blank.extxyz", b"\n \n", "no extxyz frame"),
    }
    out = {}
    for case, (name, data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        out[case] = (tmp_path / name, message)
    return out


@pytest.mark.parametrize("case", ["not gzip", "gzip cut in the middle", "gzip with a bad checksum", "empty .gz",
                                  "empty extxyz", "blank extxyz"])
def test_broken_or_empty_files_name_the_file_and_the_fault(json_file: Path, tmp_path: Path, case: str) -> None:
    path, message = _bad_inputs(json_file, tmp_path)[case]
    for workers in (1, 2):
        with pytest.raises(MPtrjFormatError, match=rf"^{re.escape(str(path))}: {message}"):
            count_environments(path, SPEC, workers=workers)


def test_gzip_cut_at_any_point_is_refused(json_file: Path, tmp_path: Path) -> None:
    packed = gzip.compress(json_file.read_bytes())
    path = tmp_path / "MPtrj.json.gz"
    for cut in range(10, len(packed) - 1, max(1, len(packed) // 17)):
        path.write_bytes(packed[:cut])
        with pytest.raises(MPtrjFormatError, match=rf"^{re.escape(str(path))}: (truncated gzip file|corrupt gzip data)"):
            count_environments(path, SPEC, block_size=64)


def test_cli_broken_gzip_is_one_line_and_exit_2(json_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    from uipbench.cli import main

    for case in ("not gzip", "gzip cut in the middle", "empty .gz"):
        path, message = _bad_inputs(json_file, tmp_path)[case]
        code = main(["mptrj-envs", str(path), "--workers", "1", "--no-progress",
                               "--output", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2, case
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert re.match(rf"uipbench: error: {re.escape(str(path))}: {message}", err), err
    assert not (tmp_path / "out").exists()                         # nothing written for a refused file


def test_truncated_extxyz(tmp_path: Path) -> None:
    xyz = write_extxyz(tmp_path / "t.extxyz", _materials())
    lines = xyz.read_text().splitlines(keepends=True)
    xyz.write_text("".join(lines[:-2]))
    with pytest.raises(MPtrjFormatError, match=r"t\.extxyz: truncated extxyz: frame #10 starting at byte \d+"):
        count_environments(xyz, SPEC)
    xyz.write_text("".join(lines[:-1]) + lines[-1][:8])            # last line cut mid-way, no newline
    with pytest.raises(MPtrjFormatError, match="truncated extxyz"):
        count_environments(xyz, SPEC)


def test_extxyz_without_material_ids_falls_back(tmp_path: Path) -> None:
    frames = [a for items in _materials().values() for a in items]
    path = tmp_path / "noid.extxyz"
    write(path, frames, format="extxyz")
    result = count_environments(path, SPEC)
    assert result.metadata.material_id_fallbacks == N_FRAMES
    counts = as_dict(result.table)
    assert counts[("any_metal", "Cu")] == (6, 5, 5)               # every frame is its own material
    assert "no material id" in mptrj.format_summary(result)


# --------------------------------------------------------------------------- outputs, errors relation, CLI


def test_outputs_and_figure(json_file: Path, tmp_path: Path) -> None:
    result = count_environments(json_file, SPEC)
    written = mptrj.write_outputs(result, tmp_path / "out")
    table = pd.read_csv(written["csv"])
    assert list(table.columns) == ["center", "category", "neighbor", "unit", "count"]
    assert len(table) == len(SPEC.expected_keys()) * 3
    meta = json.loads(written["metadata"].read_text())
    assert meta["frames_read"] == N_FRAMES and meta["input_bytes"] == json_file.stat().st_size
    assert meta["skipped_by_reason"] == {} and meta["counter_version"] == mptrj.COUNTER_VERSION
    assert written["figure_S_png"].stat().st_size > 0 and written["figure_S_svg"].stat().st_size > 0
    assert "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()


def _sweep() -> pd.DataFrame:
    rows = []
    raw = {("chgnet-0.3.0", "cu-s"): 40.0, ("chgnet-0.3.0", "ag-s"): 60.0, ("chgnet-0.3.0", "au-s"): 80.0,
           ("sevennet-0", "cu-s"): 20.0, ("sevennet-0", "ag-s"): 30.0, ("sevennet-0", "au-s"): 50.0}
    for (backbone, system), value in raw.items():
        for train_size in (8, 32):
            for seed in (0, 1):
                rows.append(dict(backbone=backbone, system=system, model="raw", aggregation="-",
                                 train_size=train_size, seed=seed, metric="energy_mae_mev_per_atom", value=value))
                rows.append(dict(backbone=backbone, system=system, model="delta", aggregation="global",
                                 train_size=train_size, seed=seed, metric="energy_mae_mev_per_atom",
                                 value=value / train_size))
    rows.append(dict(backbone="sevennet-0", system="pt-o", model="raw", aggregation="-", train_size=8, seed=0,
                     metric="energy_mae_mev_per_atom", value=1.0))
    return pd.DataFrame(rows)


def test_relate_to_errors(json_file: Path, tmp_path: Path) -> None:
    from uipbench.report import mptrj_relation
    from uipbench.report.mptrj_relation import plot_relation, relate_to_errors

    table = count_environments(json_file, SPEC).table
    rel = relate_to_errors(table, _sweep())
    assert list(rel.columns) == mptrj_relation.RELATION_COLUMNS
    assert len(rel) == 6 and set(rel["system"]) == {"cu-s", "ag-s", "au-s"}
    row = rel[(rel["backbone"] == "chgnet-0.3.0") & (rel["system"] == "ag-s")].iloc[0]
    assert row["metal"] == "Ag" and row["env_count"] == 2 and row["error_mean"] == 60.0
    assert row["n_values"] == 4 and row["error_std"] == 0.0
    by_materials = relate_to_errors(table, _sweep(), category="metal_only", unit="materials")
    assert dict(zip(by_materials["metal"], by_materials["env_count"])) == {"Ag": 1, "Au": 0, "Cu": 3}
    png, svg = plot_relation(rel, tmp_path / "relation")
    assert png.stat().st_size > 0 and svg.stat().st_size > 0
    with pytest.raises(ValueError, match="no sweep results with metric"):
        relate_to_errors(table, _sweep(), metric="nope")
    with pytest.raises(ValueError, match="lacks column"):
        relate_to_errors(table, _sweep().drop(columns=["value"]))
    with pytest.raises(ValueError, match="relation table is empty"):
        plot_relation(rel.iloc[:0], tmp_path / "empty")
    # the old names still work from uipbench.mptrj
    assert mptrj.relate_to_errors is relate_to_errors and mptrj.plot_relation is plot_relation
    with pytest.raises(AttributeError, match="no attribute 'count_frames'"):
        mptrj.count_frames


def test_cli(json_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from uipbench.cli import mptrj as mptrj_cli

    parser = argparse.ArgumentParser(prog="uipbench")
    mptrj_cli.register(parser.add_subparsers(dest="command", required=True))
    sweep = tmp_path / "sweep.csv"
    _sweep().to_csv(sweep, index=False)
    args = parser.parse_args(["mptrj-envs", str(json_file), "--center", "S", "--neighbors", "Cu", "Ag", "Au", "S",
                              "--cutoff", "3.0", "--workers", "1", "--output", str(tmp_path / "cli"),
                              "--format", "auto", "--sweep-results", str(sweep), "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "metal_only" in out and f"{N_FRAMES} frames read" in out
    assert (tmp_path / "cli" / "mptrj_envs.csv").exists()
    assert (tmp_path / "cli" / "mptrj_envs_S.png").exists()
    assert (tmp_path / "cli" / "mptrj_envs_vs_errors.csv").exists()
    assert (tmp_path / "cli" / "mptrj_envs_vs_errors.svg").exists()
    with pytest.raises(SystemExit):
        parser.parse_args(["mptrj-envs", str(json_file), "--format", "yaml"])
    bad = parser.parse_args(["mptrj-envs", str(json_file), "--center", "Qq", "--no-progress"])
    with pytest.raises(ValueError, match="unknown element symbol 'Qq'"):
        bad.func(bad)


def test_importing_the_counter_loads_no_pandas_matplotlib_or_tqdm() -> None:
    """``uipbench mptrj-envs --help`` and the CLI parser import uipbench.mptrj; it must stay light."""
    import subprocess

    from uipbench.paths import repo_root

    code = ("import sys, uipbench.mptrj; "
            "print(sorted(m for m in ('pandas', 'matplotlib', 'tqdm', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root())
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
