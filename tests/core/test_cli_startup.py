"""Start-up of the ``uipbench`` command: building the parser, and listing the backbones, import nothing heavy."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "torch", "matplotlib", "scipy", "sklearn")

#: run the command as the console script does, then report which heavy packages it imported
PROBE = f"""
import json, sys
from uipbench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({{"code": code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)
"""


def _probe(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120, check=False)
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["backbones"], ["backbones", "--format", "json"],
                                  ["sweep", "--help"], ["regress", "--help"], ["mptrj-envs", "--help"],
                                  ["embed", "--help"], ["search", "--help"], ["search-benchmark", "--help"],
                                  ["delta", "fit", "--help"], ["oxide", "phase-diagram", "--help"],
                                  ["oxide", "label", "--help"]])
def test_parser_and_backbones_import_no_heavy_package(argv):
    result = _probe(*argv)
    assert result["code"] == 0
    assert result["heavy"] == [], f"uipbench {' '.join(argv)} imported {result['heavy']}"


def test_the_probe_sees_a_heavy_import(tmp_path):
    """The check above can fail: a command that does its work imports pandas, and the probe reports it."""
    result = _probe("report", str(tmp_path / "no-run"))
    assert result["code"] == 2 and "pandas" in result["heavy"]


def test_help_alone_imports_neither_numpy_nor_ase():
    """The top-level help and every parser are standard library only: the counter, the regression gate and the
    sweep keep their defaults where the parser need not import them."""
    code = ("import sys\nfrom uipbench.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('numpy', 'ase') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"building the parser imported {proc.stdout.strip()}"
