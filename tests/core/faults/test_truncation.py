"""Truncated files, command by command: a cut results table is detected and its missing cells recomputed
(nothing lost: the resumed run equals an uninterrupted one); a cut input is one clear error."""
from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest

from . import cases as damage
from .common import assert_same_results, error_line, sweep_args
from .conftest import regress_args


def _cut_mid_value(path: Path) -> Path:
    """Cut inside a number of the middle line (e.g. ``12.3|4567``)."""
    text = path.read_text()
    middle = text.index("\n", len(text) // 2)
    digit = max(m.start() for m in re.finditer(r"\d\.\d", text[:middle]))
    path.write_text(text[:digit + 2])
    return path


def _cut_mid_metric_name(path: Path) -> Path:
    text = path.read_text()
    at = text.index("energy_mae", len(text) // 2)
    path.write_text(text[:at + 6])
    return path


#: how a run folder is damaged, and the file the warning must name
RUN_CUTS = {
    "results.csv cut at 40% of its bytes": ("results.csv", lambda p: damage.cut(p, 0.4)),
    "results.csv cut inside a value": ("results.csv", _cut_mid_value),
    "results.csv cut inside a metric name": ("results.csv", _cut_mid_metric_name),
    "results.csv cut at a line boundary": ("results.csv", lambda p: damage.cut_at_line(p, 41)),
    "results.csv header only": ("results.csv", lambda p: damage.cut_at_line(p, 1)),
    "predictions.csv cut at 50%": ("predictions.csv", lambda p: damage.cut(p, 0.5)),
    "predictions.csv cut at a line boundary": ("predictions.csv", lambda p: damage.cut_at_line(p, 30)),
    "manifest.json removed": ("manifest.json", lambda p: p.unlink()),
    "manifest.json cut": ("manifest.json", lambda p: damage.cut(p, 0.5)),
}


@pytest.mark.parametrize("case", RUN_CUTS)
def test_sweep_recomputes_the_cells_of_a_cut_results_folder(case, fake, call, run_copy, reference, datasets):
    name, how = RUN_CUTS[case]
    how(run_copy / name)
    code, _, err = call(sweep_args(datasets, run_copy))
    assert code == 0 and "Traceback" not in err, err
    if case not in ("manifest.json removed", "results.csv header only"):  # those two: everything is recomputed
        assert "results.csv" in err and ("recomputed" in err or "incomplete" in err), err
    assert assert_same_results(run_copy, reference) > 0


def test_report_of_a_cut_results_file_warns_naming_it(fake, call, run_copy, tmp_path):
    damage.cut(run_copy / "results.csv", 0.5)
    code, _, err = call(["report", run_copy, "--out", tmp_path / "report"])
    assert code == 0 and "Traceback" not in err
    assert f"{run_copy / 'results.csv'}:" in err and "some cells may be incomplete" in err
    assert (tmp_path / "report" / "report.md").exists()


def test_regress_resumes_a_cut_sweep_to_the_same_comparison(fake, call, regress_reference, tmp_path, datasets):
    out = Path(shutil.copytree(regress_reference, tmp_path / "out"))
    damage.cut(out / "sweep" / "results.csv", 0.5)
    code, stdout, err = call(regress_args(datasets, out))
    assert code == 0 and "Traceback" not in err and "PASS" in stdout, err
    assert assert_same_results(out / "sweep", regress_reference / "sweep") > 0
    assert json.loads((out / "summary.json").read_text()) == json.loads((regress_reference / "summary.json").read_text())


def test_regress_no_run_on_a_cut_sweep_is_one_line(fake, call, regress_reference, tmp_path, datasets):
    out = Path(shutil.copytree(regress_reference, tmp_path / "out"))
    damage.cut(out / "sweep" / "results.csv", 0.3)
    code, _, err = call(regress_args(datasets, out, "--no-run"))
    assert code == 2, err
    assert re.match(r"uipbench: error: .*(no results for candidate|incomplete|cut)", error_line(err)), err


def _cut_input_cases(c_tmp: Path, datasets: Path) -> dict[str, tuple[list, str]]:
    structures = Path(shutil.copy(datasets / "cu-s" / "structures.extxyz", c_tmp / "in.extxyz"))
    damage.cut(structures, 0.5)
    golden = Path(shutil.copy(Path(__file__).parents[3] / "reports" / "baselines" / "chgnet-0.3.0.json",
                              c_tmp / "golden.json"))
    damage.cut(golden, 0.6)
    root = damage.copy_datasets(datasets, c_tmp / "datasets")
    damage.cut(root / "cu-s" / "structures.extxyz", 0.5)
    mptrj = c_tmp / "MPtrj.json"
    mptrj.write_text('{"mp-1": {"mp-1-0-0": {"structure": {"lattice": {"matrix": [[3, 0, 0], [0, 3, 0], [0, 0, 3]]},'
                     ' "sites": [{"species": [{"element": "S"}], "xyz": [0, 0, 0]}]}}}}')
    damage.cut(mptrj, 0.6)
    gz = c_tmp / "MPtrj.json.gz"
    gz.write_bytes(gzip.compress(b'{"mp-1": {}}' * 50))
    damage.cut(gz, 0.5)
    out = ["--output", c_tmp / "out"]
    return {
        "embed": (["embed", "--backbone", "chgnet-0.3.0", "--input", structures, "--output", c_tmp / "o.npz",
                   "--no-cache"], r"in\.extxyz: malformed extxyz"),
        "sweep": (sweep_args(root, c_tmp / "run"), r"cu-s/structures\.extxyz: malformed extxyz"),
        "dataset build": (["dataset", "build", "cu-s", "--n", "12", "--root", root, "--resume", "--relax-with", "none"],
                          r"cu-s/structures\.extxyz: malformed extxyz"),
        "regress golden": (["regress", "golden", "--check", "chgnet-0.3.0", "--path", golden],
                           r"golden\.json: not a golden file"),
        "mptrj-envs extxyz": (["mptrj-envs", structures, "--workers", "1", "--no-progress", *out],
                              r"in\.extxyz: truncated extxyz"),
        "mptrj-envs json": (["mptrj-envs", mptrj, "--workers", "1", "--no-progress", *out], r"MPtrj\.json: .*"),
        "mptrj-envs gz": (["mptrj-envs", gz, "--workers", "1", "--no-progress", *out], r"MPtrj\.json\.gz: .*"),
    }


CUT_INPUTS = ["embed", "sweep", "dataset build", "regress golden", "mptrj-envs extxyz", "mptrj-envs json",
              "mptrj-envs gz"]


@pytest.mark.parametrize("command", CUT_INPUTS)
def test_a_cut_input_file_is_one_line_and_exit_2(command, fake, call, tmp_path, datasets):
    argv, pattern = _cut_input_cases(tmp_path, datasets)[command]
    code, _, err = call(argv)
    assert code == 2, err
    line = error_line(err)
    assert re.match(rf"uipbench: error: .*{pattern}", line), line
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists() and not (tmp_path / "o.npz").exists()


def test_dataset_info_of_a_cut_structures_file_is_invalid(call, tmp_path, datasets):
    root = damage.copy_datasets(datasets, tmp_path / "datasets")
    damage.cut(root / "cu-s" / "structures.extxyz", 0.5)
    code, out, err = call(["dataset", "info", "cu-s", "--root", root])
    assert code == 1 and "Traceback" not in err and "valid         NO" in out


def test_a_cut_cache_entry_is_recomputed_not_used(fake, call, tmp_path, datasets, reference, monkeypatch):
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    assert call(sweep_args(datasets, tmp_path / "first"))[0] == 0
    entries = sorted((tmp_path / "cache").rglob("*.npz"))
    assert entries
    for entry in entries[:3]:
        damage.cut(entry, 0.5)
    code, _, err = call(sweep_args(datasets, tmp_path / "second"))
    assert code == 0 and "Traceback" not in err
    assert str(entries[0].parent) in err or entries[0].name in err, err  # the cache warning names the entry
    assert assert_same_results(tmp_path / "second", reference) > 0
