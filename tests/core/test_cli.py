"""The ``uipbench`` command, including a backbone run through its worker environment."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from uipbench.adapters.base import BackboneInputError
from uipbench.adapters.card import get_card
from uipbench.adapters.envs import env_for, is_ready
from uipbench.cli import main

CHGNET_ENV_READY = is_ready(env_for(get_card("chgnet-0.3.0")))
needs_chgnet_env = pytest.mark.skipif(not CHGNET_ENV_READY,
                                      reason="the chgnet environment is not created (run `uipbench env sync chgnet`)")


def test_unknown_backbone_exits_2_with_a_clear_message(tmp_path, capsys, slab_structures):
    write(tmp_path / "in.extxyz", slab_structures)
    code = main(["embed", "--backbone", "nonet", "--input", str(tmp_path / "in.extxyz"),
                 "--output", str(tmp_path / "out.npz")])
    assert code == 2
    assert "unknown backbone 'nonet'" in capsys.readouterr().err


def test_unknown_system_exits_2(capsys):
    assert main(["dataset", "info", "pt-s"]) == 2
    assert "unknown system 'pt-s'" in capsys.readouterr().err


def test_empty_input_file_is_an_error(tmp_path, capsys):
    (tmp_path / "empty.extxyz").write_text("")
    assert main(["embed", "--backbone", "chgnet-0.3.0", "--input", str(tmp_path / "empty.extxyz"),
                 "--output", str(tmp_path / "o.npz")]) == 2
    assert "no structures" in capsys.readouterr().err


@needs_chgnet_env
def test_embed_through_the_worker_writes_safe_arrays(tmp_path, slab_structures):
    write(tmp_path / "in.extxyz", slab_structures[:2])
    out = tmp_path / "out.npz"
    assert main(["embed", "--backbone", "chgnet-0.3.0", "--input", str(tmp_path / "in.extxyz"),
                 "--output", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    with np.load(out, allow_pickle=False) as data:
        n_atoms = sum(len(a) for a in slab_structures[:2])
        assert data["energy"].shape == (2,)
        assert data["embedding"].shape == (n_atoms, 64) and data["embedding"].dtype == np.float64
        assert np.array_equal(data["numbers"], np.concatenate([a.numbers for a in slab_structures[:2]]))
        assert np.array_equal(np.bincount(data["structure_index"]), [len(a) for a in slab_structures[:2]])
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backbone"] == "chgnet-0.3.0" and meta["width"] == 64
    assert meta["weights_sha256"] == get_card("chgnet-0.3.0").weights_sha256


@needs_chgnet_env
def test_worker_input_errors_arrive_as_backbone_input_errors():
    from uipbench.adapters.registry import load_backbone

    backbone = load_backbone("chgnet-0.3.0", in_process=False)
    bad = Atoms("CuOg", positions=[[0, 0, 0], [0, 0, 2.1]], cell=[8, 8, 8], pbc=True)
    with pytest.raises(BackboneInputError, match="Og not supported by backbone chgnet-0.3.0"):
        backbone.embed([bad])
    with pytest.raises(BackboneInputError, match="empty structure"):
        backbone.embed([Atoms(cell=[5, 5, 5], pbc=True)])


# --- every command and option the README shows still parses -------------------------------------------

def _readme_commands() -> list[str]:
    """The ``uipbench`` lines of the README's "Everyday use" block, comments and ``[NAME...]`` dropped."""
    from uipbench.paths import repo_root

    text = (repo_root() / "README.md").read_text()
    block = text.split("## Everyday use", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].replace("[NAME...]", "").strip() for line in block.splitlines()]
    return [line.split("uipbench", 1)[1].strip() for line in lines if "bin/uipbench" in line]


#: options the README names in prose, and every option of the commands users type most
MORE_COMMANDS = [
    ("sweep --backbones chgnet-0.3.0 --systems cu-s all --datasets-root mydata --aggregations global atomic "
     "--descriptors embedding --sizes 5 max --seeds 0 1 --test-fraction 0.3 --workers 1 --out reports/x"),
    ("regress --baseline chgnet-0.2.0 --candidate chgnet-0.3.0 --systems cu-s --datasets-root d --seeds 0 1 "
     "--tolerance 2 --gate-metric energy_mae_mev_per_atom --gate-models raw delta --sizes 5 --aggregations global "
     "--descriptors embedding --out r --no-run --workers 1 --no-progress"),
    "regress golden --write chgnet-0.3.0 --random-weights --in-process no",
    "regress golden --check chgnet-0.3.0 --path g.json",
    ("mptrj-envs f.json --sweep-results reports/run/results.csv --metric energy_rmse_mev_per_atom "
     "--relate-unit materials --format json --require force --chunk-size 8 --workers 1 --output o --no-progress"),
    ("search-benchmark --problems cu-s3-3x3 --backbones chgnet-0.3.0 sevennet-0 --methods raw delta al --seeds 0 1 "
     "--budget 10 --algorithm basin --rounds 3 --label-per-round 2 --label-top 3 --jobs 2 --out reports/sb"),
    "env sync chgnet mace --force",
    "dataset build cu-s --n 3 --relax-with none --workers 1 --seed 1 --root d",
    "dataset info cu-s --format json --root d",
    "backbones --format json",
    "embed --backbone chgnet-0.3.0 --input a.extxyz --output a.npz --weights w.pt --cache-dir c --no-cache",
    "report reports/my-run --out elsewhere",
    "demo --out reports/d",
]


def test_the_readme_block_is_found():
    commands = _readme_commands()
    assert len(commands) >= 9 and "backbones" in commands and any(c.startswith("mptrj-envs") for c in commands)


@pytest.mark.parametrize("line", _readme_commands() + MORE_COMMANDS)
def test_readme_commands_parse(line):
    import shlex

    from uipbench.cli import build_parser

    args = build_parser().parse_args(shlex.split(line))
    assert callable(args.func) and args.command == line.split()[0]


def test_every_command_has_help(capsys):
    from uipbench.cli import build_parser

    commands = ["", "dataset", "dataset build", "dataset info", "backbones", "env", "env sync", "embed", "delta",
                "delta fit", "sweep",
                "report", "demo", "mptrj-envs", "regress", "regress golden"]
    for command in commands:
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args([*command.split(), "--help"])
        assert stop.value.code == 0, command
        assert "usage: uipbench" in capsys.readouterr().out


def test_bad_sizes_and_unknown_environment_exit_2(capsys):
    assert main(["sweep", "--sizes", "5", "many", "--out", "reports/never"]) == 2
    assert "training sizes are integers or 'max'" in capsys.readouterr().err
    assert main(["env", "sync", "nonet"]) == 2
    assert "unknown environment(s) nonet" in capsys.readouterr().err


def test_backbones_lists_the_cards(capsys):
    assert main(["backbones", "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"chgnet-0.3.0", "mace-mp-0-medium", "orb-v2-mptrj-only", "sevennet-0"} <= set(rows)
    assert rows["chgnet-0.3.0"]["width"] == 64 and rows["chgnet-0.3.0"]["state"]
    assert main(["backbones"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["backbone", "state", "env", "width", "layer"]


def _help_of(command: str, option: str) -> str:
    import argparse

    from uipbench.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return next(a.help for a in sub.choices[command]._actions if option in a.option_strings)


def test_help_names_the_defaults_the_library_applies():
    """mptrj-envs and regress leave these defaults to the library (the parser does not import it)."""
    from uipbench import mptrj, regress

    assert f"(default: {mptrj.DEFAULT_CUTOFF:g})" in _help_of("mptrj-envs", "--cutoff")
    assert f"(default: {mptrj.DEFAULT_CHUNK_SIZE})" in _help_of("mptrj-envs", "--chunk-size")
    assert f"(default: {' '.join(mptrj.DEFAULT_MATERIAL_KEYS)};" in _help_of("mptrj-envs", "--material-key")
    assert f"(default {regress.DEFAULT_TOLERANCE:g} meV/atom" in _help_of("regress", "--tolerance")
    assert f"(default: {regress.MAE})" in _help_of("regress", "--gate-metric")


def test_unknown_gate_metric_is_refused_with_the_choices(capsys):
    code = main(["regress", "--baseline", "chgnet-0.2.0", "--candidate", "chgnet-0.3.0", "--gate-metric", "nope",
                 "--no-run"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown gate metric 'nope'; choose from" in err and "energy_mae_mev_per_atom" in err


@pytest.mark.parametrize("command", [["sweep", "--out", "unused-run"], ["dataset", "build", "cu-s", "--n", "1"]])
def test_executor_options_are_checked_before_any_work(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--executor", "local", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "scheduler" in capsys.readouterr().err
    assert main([*command, "--cluster", "slurm"]) == 2                  # a cluster needs its config file
    assert "cluster-config" in capsys.readouterr().err
    assert not (tmp_path / "unused-run").exists()
