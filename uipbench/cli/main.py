"""The ``uipbench`` parser, built from one module per command group, and the entry point."""
from __future__ import annotations

import argparse

from . import backbones, dataset, delta, embed, mptrj, oxide, regress, search, search_benchmark, sweep
from .._interrupt import Interrupted, handle_signals
from .common import dispatch, interrupted

#: the command groups, in the order ``uipbench --help`` lists them; each has ``register(subparsers)``
GROUPS = (dataset, backbones, embed, delta, sweep, search, search_benchmark, oxide, mptrj, regress)

DESCRIPTION = ("Benchmark universal interatomic potentials on S adatoms on Cu/Ag/Au(111), raw and corrected by a "
               "Δ-GPR on each backbone's own per-atom embedding.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uipbench", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse and run one command (its exit code); SIGINT/SIGTERM end it cleanly (see :func:`dispatch`)."""
    with handle_signals():
        try:
            args = build_parser().parse_args(argv)
        except Interrupted as exc:
            return interrupted(exc)
        return dispatch(args)
