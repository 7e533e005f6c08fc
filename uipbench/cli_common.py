"""What every ``uipbench`` command line shares: argument parsing helpers and the error → exit-code rule."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

#: exit code of a command stopped by bad input (argparse uses the same)
EXIT_BAD_INPUT = 2


def training_sizes(values: list[str] | None) -> list[int | str] | None:
    """``--sizes`` values: integers or the word ``max``."""
    if not values:
        return None
    try:
        return [v if v == "max" else int(v) for v in values]
    except ValueError:
        raise ValueError(f"training sizes are integers or 'max', got {values}") from None


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; bad input becomes one ``uipbench: error: ...`` line and exit 2."""
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"uipbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def standalone_main(add_parser: Callable[[argparse._SubParsersAction], argparse.ArgumentParser],
                    argv: list[str] | None = None) -> int:
    """``main`` of a command module that also runs on its own (``python -m uipbench.regress_cli ...``)."""
    parser = argparse.ArgumentParser(prog="uipbench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return dispatch(parser.parse_args(argv))
