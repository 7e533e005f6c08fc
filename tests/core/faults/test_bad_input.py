"""Bad input, command by command: wrong formats, missing keys, NaN, impossible paths.

Each case runs the command in this process with the fake backbone and asserts one clear line
(``uipbench: error: ...`` naming the problem, or argparse's own error), exit 2, no traceback, and that
nothing was written where the command would have written.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from . import cases as damage
from .common import error_line, sweep_args


@dataclass
class Ctx:
    tmp: Path
    datasets: Path
    request: pytest.FixtureRequest

    def file(self, name: str, text: str | bytes = "") -> Path:
        path = self.tmp / name
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return path

    def data_copy(self) -> Path:
        return damage.copy_datasets(self.datasets, self.tmp / "datasets")

    def structures(self, system: str = "cu-s") -> Path:
        """A copy of one system's structures file (to damage)."""
        return Path(shutil.copy(self.datasets / system / "structures.extxyz", self.tmp / f"{system}.extxyz"))

    def run_copy(self) -> Path:
        return Path(shutil.copytree(self.request.getfixturevalue("reference"), self.tmp / "run"))

    def golden(self) -> Path:
        from uipbench.paths import golden_dir

        return Path(shutil.copy(golden_dir() / "chgnet-0.3.0.json", self.tmp / "golden.json"))


def _embed(c: Ctx, inp: Path, out: Path | None = None, backbone: str = "chgnet-0.3.0") -> list:
    return ["embed", "--backbone", backbone, "--input", inp, "--output", out or c.tmp / "out.npz", "--no-cache"]


def _sweep(c: Ctx, root: Path, out: Path | None = None, *extra: str) -> list:
    return sweep_args(root, out or c.tmp / "out", *extra)


def _own_systems(c: Ctx) -> Path:
    """A datasets folder holding one system of the user's own (``my-cu``, a copy of cu-s) and none shipped."""
    (c.tmp / "own").mkdir()
    return Path(shutil.copytree(c.datasets / "cu-s", c.tmp / "own" / "my-cu")).parent


def _regress(c: Ctx, *extra) -> list:
    return ["regress", "--baseline", "chgnet-0.2.0", "--candidate", "chgnet-0.3.0", "--systems", "cu-s",
            "--datasets-root", c.datasets, "--sizes", "4", "7", "--seeds", "0", "1", "--aggregations", "global",
            "--no-progress", *extra]


def _mptrj(c: Ctx, path: Path, *extra) -> list:
    return ["mptrj-envs", path, "--workers", "1", "--no-progress", "--output", c.tmp / "out", *extra]


def _golden(c: Ctx, edit: Callable[[dict], None]) -> list:
    return ["regress", "golden", "--check", "chgnet-0.3.0", "--path", damage.edit_json(c.golden(), edit),
            "--in-process", "yes"]


def _dataset_card(c: Ctx, text: str) -> list:
    root = c.data_copy()
    (root / "cu-s" / "card.json").write_text(text)
    return ["dataset", "info", "cu-s", "--root", root]


def _cards(c: Ctx, text: str, monkeypatch) -> None:
    (c.tmp / "cards").mkdir()
    (c.tmp / "cards" / "broken.toml").write_text(text)
    monkeypatch.setenv("UIPBENCH_BACKBONES_DIR", str(c.tmp / "cards"))


#: (command, case, argv builder, what the error line says)
CASES: list[tuple[str, str, Callable[..., list], str]] = [
    # embed
    ("embed", "not extxyz", lambda c: _embed(c, c.file("in.extxyz", "this is not xyz\n1 2 3\n")), r"malformed extxyz"),
    ("embed", "a JSON file", lambda c: _embed(c, c.file("in.json", '{"a": 1}')), r"in\.json: malformed extxyz"),
    ("embed", "binary file", lambda c: _embed(c, damage.garbage(c.tmp / "in.extxyz")), r"in\.extxyz: "),
    ("embed", "NaN positions", lambda c: _embed(c, damage.nan_positions(c.structures())),
     r"structure 0: positions contain NaN"),
    ("embed", "no input", lambda c: _embed(c, c.tmp / "absent.extxyz"),
     r"absent\.extxyz(: file not found| does not exist)"),
    ("embed", "input a folder", lambda c: _embed(c, c.tmp), r"--input .* is a folder, not a file"),
    ("embed", "output = input", lambda c: _embed(c, c.structures(), c.tmp / "cu-s.extxyz"), r"same file as --input"),
    ("embed", "output a folder", lambda c: _embed(c, c.structures(), c.tmp), r"is a folder"),
    ("embed", "unknown backbone", lambda c: _embed(c, c.structures(), backbone="nonet"), r"unknown backbone 'nonet'"),
    # sweep
    ("sweep", "dataset not extxyz", lambda c: _sweep(c, _damaged(c, damage.garbage)), r"cu-s/structures\.extxyz: "),
    ("sweep", "dataset NaN energy", lambda c: _sweep(c, _damaged(c, damage.nan_energy)),
     r"structure 0: energy is not finite \(nan\)"),
    ("sweep", "dataset without energies", lambda c: _sweep(c, _damaged(c, damage.no_energies)),
     r"structure 0: structure has no energy"),
    ("sweep", "dataset NaN positions", lambda c: _sweep(c, _damaged(c, damage.nan_positions)),
     r"structure 0: positions or cell are not finite"),
    ("sweep", "no datasets folder", lambda c: _sweep(c, c.tmp / "absent"), r"absent/cu-s/structures\.extxyz"),
    ("sweep", "--out a file", lambda c: _sweep(c, c.datasets, c.file("afile", "x")), r"--out .*afile is a file"),
    ("sweep", "bad --sizes", lambda c: _sweep(c, c.datasets, None, "--sizes", "x"), r"training sizes are integers"),
    ("sweep", "size too large", lambda c: _sweep(c, c.datasets, None, "--sizes", "500"), r"training size 500"),
    ("sweep", "unknown descriptor", lambda c: _sweep(c, c.datasets, None, "--descriptors", "nope"),
     r"unknown descriptor"),
    ("sweep", "unknown aggregation", lambda c: _sweep(c, c.datasets, None, "--aggregations", "nope"),
     r"unknown aggregation"),
    ("sweep", "unknown system", lambda c: ["sweep", "--systems", "pt-s", "--datasets-root", c.datasets, "--out",
                                           c.tmp / "out"],
     r"unknown system\(s\) pt-s; systems in .*: cu-s, ag-s, all$"),
    ("sweep", "unknown system under a root of own systems",
     lambda c: ["sweep", "--systems", "pt-s", "--datasets-root", _own_systems(c), "--out", c.tmp / "out"],
     r"unknown system\(s\) pt-s; systems in .*/own: my-cu, all$"),
    ("sweep", "unknown backbone", lambda c: _sweep(c, c.datasets, None, "--backbones", "nonet"),
     r"unknown backbone 'nonet'"),
    ("sweep", "results.csv not a table", lambda c: _sweep(c, c.datasets, _run_with(c, "results.csv", damage.garbage)),
     r"results\.csv: corrupt results file"),
    ("sweep", "results.csv missing columns",
     lambda c: _sweep(c, c.datasets, _run_with(c, "results.csv", lambda p: p.write_text("a,b\n1,2\n"))),
     r"results\.csv: not a sweep results table \(missing columns"),
    ("sweep", "metadata.json not JSON",
     lambda c: _sweep(c, c.datasets, _run_with(c, "metadata.json", lambda p: p.write_text("{oops"))),
     r"metadata\.json: unreadable metadata"),
    # report
    ("report", "no results", lambda c: ["report", c.tmp / "absent"], r"absent/results\.csv: no results file"),
    ("report", "results.csv not a table", lambda c: ["report", _run_with(c, "results.csv", damage.garbage)],
     r"results\.csv: corrupt results file"),
    ("report", "results.csv missing columns",
     lambda c: ["report", _run_with(c, "results.csv", lambda p: p.write_text("a,b\n1,2\n"))],
     r"not a sweep results table"),
    ("report", "results.csv empty", lambda c: ["report", _run_with(c, "results.csv", lambda p: p.write_text(""))],
     r"results file is empty"),
    ("report", "all values NaN", lambda c: ["report", _run_with(c, "results.csv", damage.nan_values)],
     r"no cell has a finite energy_mae_mev_per_atom"),
    ("report", "metadata.json not JSON",
     lambda c: ["report", _run_with(c, "metadata.json", lambda p: p.write_text("{"))],
     r"metadata\.json: unreadable metadata"),
    ("report", "--out a file", lambda c: ["report", c.run_copy(), "--out", c.file("afile", "x")], r"is a file"),
    # demo (the checks made before the sweep starts)
    ("demo", "--out a file", lambda c: ["demo", "--out", c.file("afile", "x")], r"--out .*afile is a file"),
    # regress
    ("regress", "no backbones", lambda c: ["regress"], r"regress needs --baseline and --candidate"),
    ("regress", "same backbone", lambda c: ["regress", "--baseline", "chgnet-0.3.0", "--candidate", "chgnet-0.3.0"],
     r"both 'chgnet-0.3.0'"),
    ("regress", "unknown backbone", lambda c: ["regress", "--baseline", "chgnet-0.3.0", "--candidate", "nonet"],
     r"unknown backbone 'nonet'"),
    ("regress", "--no-run without results", lambda c: _regress(c, "--out", c.tmp / "r", "--no-run"),
     r"no sweep results to compare"),
    ("regress", "--no-run on a corrupt results.csv",
     lambda c: _regress(c, "--out", _regress_with(c, damage.garbage), "--no-run"), r"corrupt results file"),
    ("regress", "unknown gate metric", lambda c: _regress(c, "--gate-metric", "nope", "--out", c.tmp / "r"),
     r"unknown gate metric 'nope'"),
    ("regress", "--out a file", lambda c: _regress(c, "--out", c.file("afile", "x")), r"--out .*afile is a file"),
    ("regress", "unknown system under a root of own systems",
     lambda c: ["regress", "--baseline", "chgnet-0.2.0", "--candidate", "chgnet-0.3.0", "--systems", "pt-s",
                "--datasets-root", _own_systems(c), "--no-progress", "--out", c.tmp / "r"],
     r"unknown system\(s\) pt-s; systems in .*/own: my-cu, all$"),
    # regress golden
    ("regress golden", "--write and --check", lambda c: ["regress", "golden", "--write", "a", "--check", "b"],
     r"exactly one of --write NAME\.\.\. or --check"),
    ("regress golden", "--path with two backbones",
     lambda c: ["regress", "golden", "--check", "chgnet-0.3.0", "chgnet-0.2.0", "--path", c.golden()],
     r"--path names one golden file"),
    ("regress golden", "not JSON", lambda c: ["regress", "golden", "--check", "chgnet-0.3.0", "--path",
                                              c.file("g.json", "{not json")], r"g\.json: not a golden file"),
    ("regress golden", "no format key", lambda c: _golden(c, lambda d: d.pop("format")),
     r"not a golden file of format uipbench-golden-v1"),
    ("regress golden", "no structures", lambda c: _golden(c, lambda d: d.update(structures=[])),
     r"holds no structures, so it checks nothing"),
    ("regress golden", "structure without energy", lambda c: _golden(c, lambda d: d["structures"][0].pop("energy_ev")),
     r"structures\[0\]: missing key 'energy_ev'"),
    ("regress golden", "fingerprint of the wrong type",
     lambda c: _golden(c, lambda d: d["structures"][0]["embedding"].update(atom_norms="x")),
     r"key 'atom_norms' should be a list"),
    ("regress golden", "no golden file", lambda c: ["regress", "golden", "--check", "chgnet-0.3.0", "--path",
                                                    c.tmp / "absent.json"], r"absent\.json: no golden file"),
    ("regress golden", "--write --path a folder",
     lambda c: ["regress", "golden", "--write", "chgnet-0.3.0", "--path", c.tmp], r"is a folder"),
    # mptrj-envs
    ("mptrj-envs", "no file", lambda c: _mptrj(c, c.tmp / "absent.json"), r"absent\.json does not exist"),
    ("mptrj-envs", "JSON of another shape", lambda c: _mptrj(c, c.file("m.json", "[1, 2, 3]")),
     r"not an MPtrj JSON file"),
    ("mptrj-envs", "binary file", lambda c: _mptrj(c, damage.garbage(c.tmp / "m.png")), r"cannot tell the format"),
    ("mptrj-envs", "not gzip", lambda c: _mptrj(c, c.file("m.json.gz", '{"mp-1": {}}')), r"m\.json\.gz: "),
    ("mptrj-envs", "--output a file", lambda c: _mptrj(c, c.structures(), "--output", c.file("afile", "x")),
     r"--output .*afile is a file"),
    ("mptrj-envs", "--output = the input", lambda c: _mptrj(c, c.structures(), "--output", c.tmp / "cu-s.extxyz"),
     r"--output .*is a file"),
    ("mptrj-envs", "--sweep-results missing columns",
     lambda c: _mptrj(c, c.structures(), "--sweep-results", c.file("s.csv", "a,b\n1,2\n")),
     r"s\.csv: not a sweep results table \(lacks column"),
    ("mptrj-envs", "--sweep-results not a table",
     lambda c: _mptrj(c, c.structures(), "--sweep-results", damage.garbage(c.tmp / "s.csv")),
     r"s\.csv: cannot be read as a table"),
    ("mptrj-envs", "--sweep-results absent",
     lambda c: _mptrj(c, c.structures(), "--sweep-results", c.tmp / "absent.csv"), r"absent\.csv does not exist"),
    # dataset build / info
    ("dataset build", "unknown system", lambda c: ["dataset", "build", "pt-s", "--n", "2", "--root", c.tmp / "d",
                                                   "--relax-with", "none"], r"unknown system 'pt-s'"),
    ("dataset build", "--n 0", lambda c: ["dataset", "build", "cu-s", "--n", "0", "--root", c.tmp / "d",
                                          "--relax-with", "none"], r"--n must be at least 1"),
    ("dataset build", "existing without --resume",
     lambda c: ["dataset", "build", "cu-s", "--n", "2", "--root", c.data_copy(), "--relax-with", "none"],
     r"already holds 10 structures; pass --resume"),
    ("dataset build", "--root a file", lambda c: ["dataset", "build", "cu-s", "--n", "2", "--root",
                                                  c.file("afile", "x"), "--relax-with", "none"], r"is a file"),
    ("dataset build", "--resume on a corrupt dataset",
     lambda c: ["dataset", "build", "cu-s", "--n", "12", "--root", _damaged(c, damage.garbage), "--relax-with", "none",
                "--resume"], r"cu-s/structures\.extxyz: "),
    ("dataset info", "unknown system", lambda c: ["dataset", "info", "pt-s", "--root", c.datasets],
     r"unknown system 'pt-s'; systems in .*: cu-s, ag-s$"),
    ("dataset info", "unknown system under a root of own systems",
     lambda c: ["dataset", "info", "pt-s", "--root", _own_systems(c)],
     r"unknown system 'pt-s'; systems in .*/own: my-cu$"),
    ("dataset info", "unknown system under a root without systems",
     lambda c: ["dataset", "info", "pt-s", "--root", c.tmp], r"unknown system 'pt-s'; no systems in "),
    ("dataset info", "no card", lambda c: ["dataset", "info", "au-s", "--root", c.datasets], r"card not found"),
    ("dataset info", "card not JSON", lambda c: _dataset_card(c, "{oops"), r"corrupt dataset card"),
    ("dataset info", "card missing keys", lambda c: _dataset_card(c, "{}"), r"card\.json: not a dataset card"),
]

#: cases run through argparse: its usage line, then its error line; exit 2
ARGPARSE_CASES = [
    ("backbones", "unknown --format", ["backbones", "--format", "xml"], r"invalid choice: 'xml'"),
    ("env sync", "no subcommand", ["env"], r"the following arguments are required"),
    ("sweep", "seed not an integer", ["sweep", "--seeds", "one"], r"invalid int value: 'one'"),
    ("dataset build", "--n missing", ["dataset", "build", "cu-s"], r"required: --n"),
    # counts of processes (one shared argparse type): 0 and negative numbers are refused by the parser
    *[(" ".join(argv[:2]) if argv[0] == "dataset" else argv[0], f"{flag} {value}", [*argv, flag, value],
       rf"argument {flag}: must be a positive integer \(1 or more\), got {value}$")
      for argv, flag in ((["dataset", "build", "cu-s", "--n", "2", "--relax-with", "none"], "--workers"),
                         (["dataset", "build", "cu-s", "--n", "2", "--relax-with", "none"], "--mpi-ranks"),
                         (["sweep", "--backbones", "no-such-backbone"], "--workers"),
                         (["regress", "--baseline", "no-such-backbone", "--candidate", "nonet"], "--workers"),
                         (["mptrj-envs", "absent.extxyz"], "--workers"),
                         (["mptrj-envs", "absent.extxyz"], "--chunk-size"))
      for value in ("0", "-1")],
    ("sweep", "--workers not an integer", ["sweep", "--workers", "two"],
     r"argument --workers: invalid int value: 'two'"),
]


def _damaged(c: Ctx, how: Callable[[Path], Path], system: str = "cu-s") -> Path:
    """A copy of the datasets with ``system``'s structures file damaged by ``how``."""
    root = c.data_copy()
    how(root / system / "structures.extxyz")
    return root


def _run_with(c: Ctx, name: str, how: Callable[[Path], Path]) -> Path:
    run = c.run_copy()
    how(run / name)
    return run


def _regress_with(c: Ctx, how: Callable[[Path], Path]) -> Path:
    out = c.tmp / "r"
    shutil.copytree(c.request.getfixturevalue("reference"), out / "sweep")
    how(out / "sweep" / "results.csv")
    return out


def _one_error(code: int, err: str, pattern: str) -> None:
    import re

    assert code == 2, err
    line = error_line(err)
    assert line.startswith("uipbench: error: ") and re.search(pattern, line), line
    assert [x for x in err.splitlines() if x.startswith("uipbench")] == [line], err


@pytest.mark.parametrize("command, case, build, pattern", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_is_one_line_and_exit_2(command, case, build, pattern, fake, call, tmp_path, datasets, request):
    argv = build(Ctx(tmp_path, datasets, request))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in p.parts)
    code, _, err = call(argv)
    _one_error(code, err, pattern)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "cache" not in p.parts)
    assert [p for p in after if p not in before] == [], "a refused command wrote files"


@pytest.mark.parametrize("command, case, argv, pattern", ARGPARSE_CASES,
                         ids=[f"{c[0]}: {c[1]}" for c in ARGPARSE_CASES])
def test_bad_arguments_are_argparse_errors(command, case, argv, pattern, call):
    import re

    code, _, err = call(argv)
    assert code == 2 and "Traceback" not in err
    assert re.search(pattern, error_line(err)), err


def test_card_errors_are_one_line(fake, call, tmp_path, monkeypatch, datasets):
    c = Ctx(tmp_path, datasets, None)  # type: ignore[arg-type]
    _cards(c, "name = [unclosed\n", monkeypatch)
    code, _, err = call(["backbones"])
    _one_error(code, err, r"broken\.toml: cannot read backbone card")
    (tmp_path / "cards" / "broken.toml").write_text('name = "broken"\n')
    code, _, err = call(["backbones"])
    _one_error(code, err, r"broken\.toml: backbone card lacks the field")


def test_env_sync_refuses_unknown_names_before_syncing_any(call, monkeypatch):
    import uipbench.adapters.envs as envs

    synced = []
    monkeypatch.setattr(envs, "sync", lambda spec, **kw: synced.append(spec))
    code, _, err = call(["env", "sync", "chgnet", "nonet"])
    _one_error(code, err, r"unknown environment\(s\) nonet; known: chgnet")
    assert synced == [], "nothing is synced when one name is unknown"


def test_nan_frames_of_mptrj_are_skipped_and_counted(fake, call, tmp_path, datasets):
    """NaN coordinates in a training file are not an error of the whole file: the frame is skipped, counted
    and listed (the counter's documented rule), and the rest is counted."""
    c = Ctx(tmp_path, datasets, None)  # type: ignore[arg-type]
    code, out, err = call(_mptrj(c, damage.nan_positions(c.structures())))
    assert code == 0 and "Traceback" not in err
    assert "skipped 1 frame(s)" in out and "not finite" in out
    meta = json.loads((tmp_path / "out" / "mptrj_envs.meta.json").read_text())
    assert (meta["frames_read"], meta["frames_counted"], meta["frames_skipped"]) == (10, 9, 1)


def test_dataset_info_reports_an_unreadable_structures_file_as_invalid(call, tmp_path, datasets):
    """``dataset info`` validates: a structures file it cannot read makes the dataset invalid (exit 1),
    the reason listed, no traceback."""
    c = Ctx(tmp_path, datasets, None)  # type: ignore[arg-type]
    code, out, err = call(["dataset", "info", "cu-s", "--root", _damaged(c, damage.garbage)])
    assert code == 1 and "Traceback" not in err
    assert "valid         NO" in out and "structures.extxyz" in out
