"""``uipbench search``: bad input exits 2 with one line, before a backbone environment is started."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.test_search_toy import toy_delta_model
from uipbench.delta import save
from uipbench.search import command


def _run(capsys, *argv: str) -> tuple[int, str]:
    from uipbench.cli import main

    code = main(["search", *argv])
    return code, capsys.readouterr().err


def test_unknown_problem_and_backbone(capsys, tmp_path):
    code, err = _run(capsys, "nope", "--backbone", "chgnet-0.3.0", "--budget", "1", "--out", str(tmp_path / "o"))
    assert code == 2 and "unknown search problem 'nope'" in err and "Traceback" not in err
    code, err = _run(capsys, "cu-s3-3x3", "--backbone", "nope", "--budget", "1", "--out", str(tmp_path / "o"))
    assert code == 2 and "unknown backbone 'nope'" in err


def test_budget_must_be_positive(capsys, tmp_path):
    code, err = _run(capsys, "cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--budget", "0", "--out", str(tmp_path))
    assert code == 2 and "--budget must be at least 1" in err


@pytest.mark.parametrize("backbone, sha, message", [
    ("sevennet-0", "1" * 64, "fitted on backbone 'sevennet-0', not 'chgnet-0.3.0'"),
    ("chgnet-0.3.0", "0" * 64, "refit it for these weights"),
])
def test_delta_of_another_backbone_or_weights_is_refused_before_the_backbone_starts(capsys, tmp_path, monkeypatch,
                                                                                     backbone, sha, message):
    save(toy_delta_model(), tmp_path / "delta", backbone, sha)
    monkeypatch.setattr(command, "_in_backbone_env", lambda *a: pytest.fail("the backbone environment was started"))
    code, err = _run(capsys, "cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--delta", str(tmp_path / "delta"),
                     "--budget", "1", "--out", str(tmp_path / "o"))
    assert code == 2 and message in err
    assert not (tmp_path / "o").exists()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["search", *argv])


def test_the_rerun_in_the_backbone_environment_gets_the_same_command(tmp_path, monkeypatch):
    args = _parse(["cu-s3-3x3", "--backbone", "chgnet-0.3.0", "--algorithm", "basin", "--budget", "7", "--seed", "3",
                   "--out", "rel/out", "--kT", "0.05", "--fmax", "0.03", "--threads", "2", "--no-progress"])
    assert _parse(command._argv(args)) == args
    seen = {}

    def fake_run(cmd, env):
        seen.update(cmd=cmd, env=env)
        return subprocess.CompletedProcess(cmd, 0)

    import uipbench._interrupt as interrupt

    class Spec:
        python = Path("/envs/chgnet/bin/python")

    monkeypatch.setattr(interrupt, "run_forwarding", fake_run)  # a signal here is passed on to the re-run
    monkeypatch.setattr("uipbench.adapters.envs.ensure", lambda card: Spec)
    monkeypatch.delenv(command._CHILD_VARIABLE, raising=False)
    from uipbench.adapters.card import get_card

    assert command._in_backbone_env(get_card("chgnet-0.3.0"), args) == 0
    cmd = seen["cmd"]
    assert cmd[:3] == ["/envs/chgnet/bin/python", "-m", "uipbench.search.command"]
    rerun = _parse(cmd[3:])
    assert rerun.out == Path("rel/out").resolve() and rerun.algorithm == "basin" and rerun.seed == 3
    assert seen["env"][command._CHILD_VARIABLE] == "1"
    assert seen["env"][interrupt.PARENT_VARIABLE] == str(os.getpid()), "the re-run dies with this process"
    monkeypatch.setenv(command._CHILD_VARIABLE, "1")
    with pytest.raises(RuntimeError, match="does not import"):
        command._in_backbone_env(get_card("chgnet-0.3.0"), args)


def test_module_runs_on_its_own():
    proc = subprocess.run([sys.executable, "-m", "uipbench.search.command", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--algorithm {random,basin}" in proc.stdout
