"""``uipbench search ... --active-learning``: options checked before any work, passed to the re-run in the
backbone's environment, and a whole (tiny) run through the command with the toy backbone and a fake labeller."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from ase.io import read

from tests.core.test_active_learning import PENALTY, FakeLabeller, base_structures
from tests.core.test_search_toy import ToyBackbone
from uipbench.search import command

CARD = """name = "toy-cu-s2-2x2"
description = "two S on Cu(111) 2x2, for tests"
protocol = "gpaw-lcao-dzp-pbe-v1"
[slab]
metal = "Cu"
surface_cell = [2, 2]
layers = 3
fixed_layers = 1
vacuum = 6.0
[adsorbates]
composition = { S = 2 }
height_range = [1.2, 3.2]
[min_distances]
S-S = 1.8
Cu-S = 1.8
Cu-Cu = 2.2
"""

ACTIVE = ["--active-learning", "--rounds", "3", "--label-per-round", "2"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    from uipbench.cli import main

    code = main(["search", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["search", *argv])


@pytest.fixture
def no_backbone_env(monkeypatch):
    monkeypatch.setattr(command, "_in_backbone_env", lambda *a: pytest.fail("the backbone environment was started"))
    monkeypatch.setattr("uipbench.datasets.label.gpaw_available", lambda *a: (True, "fake"))


def test_the_rerun_gets_the_active_learning_options():
    args = _parse(["cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "4", "--out", "o", *ACTIVE,
                   "--label-uncertain", "1", "--systems", "cu-s", "ag-s", "--aggregation", "global"])
    assert _parse(command._argv(args)) == args
    assert args.rounds == 3 and args.systems == ["cu-s", "ag-s"] and args.aggregation == "global"
    plain = _parse(["cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "4", "--out", "o"])
    assert "--active-learning" not in command._argv(plain) and _parse(command._argv(plain)) == plain


@pytest.mark.parametrize("extra, message", [
    (["--rounds", "2"], "--rounds only apply with --active-learning"),
    (["--systems", "cu-s", "--label-uncertain", "1"], "--label-uncertain, --systems only apply with"),
    (["--active-learning", "--label-per-round", "1"], "--active-learning needs --rounds"),
    (["--active-learning"], "needs --rounds and --label-per-round"),
    (["--active-learning", "--rounds", "0", "--label-per-round", "1"], "--rounds must be at least 1, got 0"),
    ([*ACTIVE[:3], "--label-per-round", "0"], "--label-per-round must be at least 1, got 0"),
    ([*ACTIVE, "--label-uncertain", "-1"], "--label-uncertain must be at least 0, got -1"),
    ([*ACTIVE, "--systems", "pt-s"], "unknown system(s) pt-s"),
    ([*ACTIVE, "--seed", "-1"], "--seed must be non-negative"),
])
def test_bad_options_exit_2_before_any_work(capsys, tmp_path, no_backbone_env, extra, message):
    code, _, err = _run(capsys, "cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "1", "--out",
                        str(tmp_path / "o"), *extra)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_gpaw_exits_2_before_the_backbone_environment(capsys, tmp_path, no_backbone_env, monkeypatch):
    monkeypatch.setattr("uipbench.datasets.label.gpaw_available", lambda *a: (False, "no GPAW here (test)"))
    code, _, err = _run(capsys, "cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "1", "--out",
                        str(tmp_path / "o"), *ACTIVE)
    assert code == 2 and "labels its picks with GPAW: no GPAW here (test)" in err
    assert not (tmp_path / "o").exists()


def test_outside_the_backbone_environment_the_command_reruns_itself(capsys, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("uipbench.datasets.label.gpaw_available", lambda *a: (True, "fake"))
    monkeypatch.setattr("uipbench.adapters.registry.importable_here", lambda card: False)
    monkeypatch.setattr(command, "_in_backbone_env", lambda card, args: seen.append(command._argv(args)) or 0)
    code, _, _ = _run(capsys, "cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "1", "--out",
                      str(tmp_path / "o"), *ACTIVE)
    assert code == 0 and seen and seen[0][-5:] == ACTIVE


def test_a_run_through_the_command(capsys, tmp_path, monkeypatch):
    """In-process (as in the backbone's environment): the toy backbone, the fake labeller, the toy's base data."""
    card = tmp_path / "toy.toml"
    card.write_text(CARD)
    systems, labeller = [], FakeLabeller(PENALTY)
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("uipbench.datasets.label.gpaw_available", lambda *a: (True, "fake"))
    monkeypatch.setattr("uipbench.datasets.label.label_structure", labeller)
    monkeypatch.setattr("uipbench.adapters.registry.importable_here", lambda card: True)
    monkeypatch.setattr("uipbench.adapters.registry.load_backbone", lambda *a, **k: ToyBackbone())
    monkeypatch.setattr("uipbench.harness.fit.shipped_structures",
                        lambda names, root=None: systems.append(names) or base_structures(PENALTY))
    out = tmp_path / "al"
    code, printed, err = _run(capsys, str(card), "--backbone", "chgnet-0.3.0", "--budget", "2", "--out", str(out),
                              "--no-progress", "--active-learning", "--rounds", "1", "--label-per-round", "1")
    assert code == 0, err
    assert systems == [["cu-s"]]  # the default base: the problem's own metal
    assert "round 0: Δ on 6 structures, 2 relaxations" in printed and "labelled 1, failed 0" in printed
    assert "toy-cu-s2-2x2 with toy-morse + Δ, active learning: 1 rounds (stopped: rounds), 1 structures labelled" \
        in printed
    labelled = read(out / "labelled.extxyz", index=":")
    assert len(labelled) == labeller.calls == 1 and labelled[0].info["round"] == 0
    assert Path(out / "minima.csv").is_file() and (out / "round-00" / "delta.json").is_file()

